#!/usr/bin/env bash
# GPU check: the same teacher engine with CUDA vLLM on a GPU machine, against bare vLLM, in one run.
#   bench/gpu_teacher.sh [MODEL] [PROMPTS] [MAX_TOKENS]
# Needs the project installed with the gpu extra (pip install -e '.[gpu]') and MODEL as a local HF
# directory or registry name already pulled (amr models pull qwen2.5-coder-0.5b-instruct).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python bench/teacher.py --set teacher.vllm.device=gpu --set teacher.vllm.dtype=auto \
  --set teacher.vllm.tensor_parallel_size=1 --set teacher.vllm.concurrency=1 \
  --model "${1:-qwen2.5-coder-0.5b-instruct}" \
  --prompts "${2:-256}" --max-tokens "${3:-512}" --output bench/results/gpu_teacher.json
