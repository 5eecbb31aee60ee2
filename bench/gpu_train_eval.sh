#!/usr/bin/env bash
# GPU check on 2 nodes: fine-tune the student with `amr train` (Ray Train, FSDP2, hybrid sharding: sharded over each
# node's GPUs, replicated across the 2 nodes) and, on one GPU of this node, with TRL's SFTTrainer
# (bench/train_baseline.py: same model, rows, global batch and settings); then `amr eval` of the trained student on
# HumanEval(+) and MBPP(+). Writes bench/results/gpu_train_eval.json: tokens/s of both trainers (and per GPU), each
# worker's peak memory, the losses, the schedule, and the four pass@1 scores.
#   bench/gpu_train_eval.sh [MODEL] [RUN_DIR]
# Run it on the head of a Ray cluster of $NODES (default 2) GPU nodes with the same number of GPUs each, every node
# mounting shared storage at the same path ($WORK must be on it):
#   node 1: ray start --head --port=6379        node 2: ray start --address=NODE1:6379
# MODEL: the student (default qwen2.5-coder-0.5b-instruct, pulled into a model store on the shared storage:
# AMR_MODEL_STORE). RUN_DIR: a distill run with a dataset; without one, `amr distill --method direct` builds one
# from the first $INSTRUCTIONS (default all 374) MBPP train problems, the teacher $TEACHER (default MODEL) on the
# GPUs. The trainers use jobs/configs/train_gpu.yaml with the student's chat template plus $TRAIN_SET
# (space-separated overrides, e.g. "max_steps=20"). $EVAL_LIMIT evaluates the first N tasks only.
# Needs the project installed with the gpu and eval extras on every node.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-qwen2.5-coder-0.5b-instruct}
WORK=${WORK:-/mnt/shared/runs/gpu_train_eval}
RUN_DIR=${2:-$WORK/data}
NODES=${NODES:-2}
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)
PER_NODE=$(nvidia-smi --list-gpus | wc -l)
echo "$NODES nodes x $PER_NODE x $GPU"
ALIVE=$(python -c "import ray; ray.init(address='auto', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))")
if [[ $ALIVE -lt $NODES ]]; then
  echo "the Ray cluster has $ALIVE nodes, not $NODES: start it first (see the header)" >&2
  exit 1
fi
if [[ -z ${2:-} ]]; then
  amr distill --method direct --input mbpp-train --run-dir "$RUN_DIR" --set input.limit="${INSTRUCTIONS:-374}" \
    --set teacher.model="${TEACHER:-$MODEL}" --set teacher.vllm.device=gpu --set ray.address=auto
fi
TRAIN=(--config jobs/configs/train_gpu.yaml --dataset "$RUN_DIR" --set model="$MODEL" --set template=chat)
for s in ${TRAIN_SET:-}; do TRAIN+=(--set "$s"); done
rm -rf "$WORK/student"  # amr train resumes from an earlier run's checkpoint: start afresh
amr train "${TRAIN[@]}" --output "$WORK/student" --set scaling.workers=$((NODES * PER_NODE)) \
  --set storage_path="$WORK/checkpoints"
BATCH=$(python -c "import json; print(json.load(open('$WORK/student/train.json'))['schedule']['global_batch'])")
python bench/train_baseline.py "${TRAIN[@]}" --set scaling.workers=1 --set global_batch_size="$BATCH" \
  --output "$WORK/train_baseline.json"
for dataset in humaneval mbpp; do
  amr eval --model "$WORK/student/model" --dataset "$dataset" --output "$WORK/eval/$dataset" \
    --set vllm.device=gpu --set ray.address=auto ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"}
done
GPU=$GPU WORK=$WORK NODES=$NODES PER_NODE=$PER_NODE python - <<'EOF'
import json, os
from pathlib import Path

work = Path(os.environ["WORK"])
gpus = int(os.environ["NODES"]) * int(os.environ["PER_NODE"])
keep = ("steps", "final_loss", "train_loss", "tokens", "seconds", "tokens_per_s")
ray, plain = (json.loads((work / f).read_text()) for f in ("student/train.json", "train_baseline.json"))
scores = {d: json.loads((work / "eval" / d / "scores.json").read_text()) for d in ("humaneval", "mbpp")}
report = {"gpu": os.environ["GPU"], "nodes": int(os.environ["NODES"]), "gpus": gpus, "model": ray["model"],
          "dataset": ray["dataset"], "examples": ray["examples"], "schedule": ray["schedule"],
          "sharding": ray["sharding"], "mesh": ray["mesh"], "precision": ray["precision"],
          "amr_train": {k: ray[k] for k in (*keep, "wall_time_s")}, "plain_trainer_one_gpu": {k: plain[k] for k in keep},
          "tokens_per_s_per_gpu": {"amr_train": round(ray["tokens_per_s"] / gpus, 1),
                                   "plain_trainer": plain["tokens_per_s"]},
          "worker_peak_gb": {w["rank"]: round(max(w["load_peak"], w["train_peak"]) / 1e9, 2) for w in ray["workers"]},
          "pass@1": {f"{d}{plus}": s[f"{side}_pass@1"] for d, s in scores.items()
                     for plus, side in (("", "base"), ("+", "plus"))},
          "eval": {d: {"version": s["version"], "n_tasks": s["n_tasks"]} for d, s in scores.items()},
          "train_config": ray["config"]}
Path("bench/results").mkdir(parents=True, exist_ok=True)
Path("bench/results/gpu_train_eval.json").write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps({k: v for k, v in report.items() if k != "train_config"}, indent=2))
EOF
