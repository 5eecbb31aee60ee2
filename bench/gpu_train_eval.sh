#!/usr/bin/env bash
# GPU check: fine-tune the student on one GPU with `amr train` (Ray Train) and with a plain SFTTrainer
# (bench/train_baseline.py), same model, data and config, one after the other; then `amr eval` of the Ray-trained
# model on HumanEval(+) and MBPP(+). Writes bench/results/gpu_train_eval.json: tokens/s of both trainers, their
# ratio, and the four pass@1 scores.
#   bench/gpu_train_eval.sh [MODEL] [RUN_DIR]
# MODEL: the student (default qwen2.5-coder-0.5b-instruct). RUN_DIR: a distill run with a dataset; without one,
# `amr distill --method direct` builds one from the first $INSTRUCTIONS (default all 374) MBPP train problems,
# the teacher $TEACHER (default MODEL) on the GPU. The trainers use jobs/configs/train_gpu.yaml on one GPU (the
# student's chat template, local Ray, no FSDP) plus $TRAIN_SET (space-separated overrides, e.g. "max_steps=20").
# Outputs go to $WORK (default runs/gpu_train_eval); $EVAL_LIMIT evaluates the first N tasks only.
# Needs the project installed with the gpu and eval extras and the models pulled (amr models pull MODEL).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-qwen2.5-coder-0.5b-instruct}
WORK=${WORK:-runs/gpu_train_eval}
RUN_DIR=${2:-$WORK/data}
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)
echo "$GPU"
if [[ -z ${2:-} ]]; then
  amr distill --method direct --input mbpp-train --run-dir "$RUN_DIR" --set input.limit="${INSTRUCTIONS:-374}" \
    --set teacher.model="${TEACHER:-$MODEL}" --set teacher.vllm.device=gpu
fi
TRAIN=(--config jobs/configs/train_gpu.yaml --dataset "$RUN_DIR" --set model="$MODEL" --set template=chat
       --set scaling.workers=1 --set ray.address=null --set storage_path=null --set 'trainer_kwargs={}')
for s in ${TRAIN_SET:-}; do TRAIN+=(--set "$s"); done
rm -rf "$WORK/student"  # amr train resumes from an earlier run's checkpoint: start afresh
amr train "${TRAIN[@]}" --output "$WORK/student"
python bench/train_baseline.py "${TRAIN[@]}" --output "$WORK/train_baseline.json"
for dataset in humaneval mbpp; do
  amr eval --model "$WORK/student/model" --dataset "$dataset" --output "$WORK/eval/$dataset" \
    --set vllm.device=gpu ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"}
done
GPU=$GPU WORK=$WORK python - <<'EOF'
import json, os
from pathlib import Path

work = Path(os.environ["WORK"])
keep = ("steps", "final_loss", "train_loss", "tokens", "seconds", "tokens_per_s")
ray, plain = (json.loads((work / f).read_text()) for f in ("student/train.json", "train_baseline.json"))
scores = {d: json.loads((work / "eval" / d / "scores.json").read_text()) for d in ("humaneval", "mbpp")}
report = {"gpu": os.environ["GPU"], "model": ray["model"], "dataset": ray["dataset"], "examples": ray["examples"],
          "ray_train": {k: ray[k] for k in (*keep, "wall_time_s")}, "plain_trainer": {k: plain[k] for k in keep},
          "same_tokens": ray["tokens"] == plain["tokens"],
          "ratio_tokens_per_s": round(ray["tokens_per_s"] / plain["tokens_per_s"], 3),
          "pass@1": {f"{d}{plus}": s[f"{side}_pass@1"] for d, s in scores.items()
                     for plus, side in (("", "base"), ("+", "plus"))},
          "eval": {d: {"version": s["version"], "n_tasks": s["n_tasks"]} for d, s in scores.items()},
          "train_config": ray["config"]}
Path("bench/results").mkdir(parents=True, exist_ok=True)
Path("bench/results/gpu_train_eval.json").write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps({k: v for k, v in report.items() if k != "train_config"}, indent=2))
EOF
