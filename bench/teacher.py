"""Teacher throughput: the engine inside Ray Data (ray.data.llm) against plain vllm.LLM, same prompts.

    python bench/teacher.py [--model smollm2-135m-instruct] [--prompts 64] [--max-tokens 256] [--device cpu]

Each side runs in its own process, one after the other, on the same MBPP direct-distillation prompts
with greedy decoding. Reported per side: output tokens, wall time from the start (imports and engine
start included, as a job pays them), end-to-end tokens/s, and for plain vLLM also tokens/s of the
generate call alone. The ratio is Ray Data's end-to-end tokens/s over plain vLLM's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def prompts(n: int) -> list[list[dict[str, str]]]:
    from amr.data import mbpp_train
    from amr.prompts import direct

    return [direct.messages(r["instruction"]) for r in mbpp_train()[:n]]


def run_plain(args) -> dict:
    start = time.perf_counter()
    from vllm import LLM, SamplingParams

    from amr.config import VLLMConfig
    from amr.model_store import resolve

    cfg = VLLMConfig(device=args.device)
    llm = LLM(resolve(args.model), dtype="float32" if args.device == "cpu" else "auto",
              max_model_len=cfg.max_model_len, max_num_seqs=cfg.max_num_seqs,
              enable_prefix_caching=True, enforce_eager=args.device == "cpu")
    ready = time.perf_counter()
    outs = llm.chat(prompts(args.prompts), SamplingParams(temperature=0, max_tokens=args.max_tokens))
    end = time.perf_counter()
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"side": "plain vllm.LLM", "output_tokens": tokens, "wall_s": end - start,
            "engine_start_s": ready - start, "generate_tok_s": tokens / (end - ready)}


def run_ray(args) -> dict:
    start = time.perf_counter()
    import ray

    from amr.config import RayConfig, TeacherConfig, VLLMConfig
    from amr.engines import Teacher
    from amr.runtime import init_ray

    init_ray(RayConfig())
    cfg = TeacherConfig(model=args.model, vllm=VLLMConfig(device=args.device, batch_size=args.prompts))
    cfg.sampling.max_tokens = args.max_tokens
    rows = [{"id": str(i), "messages": m} for i, m in enumerate(prompts(args.prompts))]
    out = Teacher(cfg).generate(ray.data.from_items(rows)).take_all()
    end = time.perf_counter()
    assert not any(r["error"] for r in out), [r["error"] for r in out if r["error"]][:3]
    return {"side": "ray.data.llm Teacher", "output_tokens": sum(r["num_output_tokens"] for r in out),
            "wall_s": end - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--side", choices=["plain", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--output", default="bench/results/teacher.json")
    args = parser.parse_args()
    if args.side:
        result = (run_plain if args.side == "plain" else run_ray)(args)
        result["tok_s"] = result["output_tokens"] / result["wall_s"]
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = []
    for side in ("plain", "ray"):
        cmd = [sys.executable, __file__, "--side", side, *sys.argv[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            sys.exit(f"{side} side failed:\n{done.stderr[-4000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    plain, ray_side = results
    report = {"model": args.model, "device": args.device, "prompts": args.prompts, "max_tokens": args.max_tokens,
              "results": results, "ratio_ray_over_plain": ray_side["tok_s"] / plain["tok_s"]}
    for r in results:
        extra = f", engine start {r['engine_start_s']:.1f} s, generate alone {r['generate_tok_s']:.1f} tok/s" \
            if "engine_start_s" in r else ""
        print(f"{r['side']:>22}: {r['output_tokens']} tokens in {r['wall_s']:.1f} s = {r['tok_s']:.1f} tok/s{extra}")
    print(f"ratio (Ray Data / plain vLLM, end to end): {report['ratio_ray_over_plain']:.2f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
