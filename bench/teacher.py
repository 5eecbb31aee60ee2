"""Teacher throughput on this machine, in one run: plain vllm.LLM in float32, plain vllm.LLM in bfloat16, and the
job's teacher (a Ray Serve LLM deployment fed by a Ray Data stage) in bfloat16, same prompts.

    python bench/teacher.py [--config jobs/configs/local_cpu.yaml] [--set KEY=VALUE ...] [--model NAME]
                            [--prompts 64] [--max-tokens 256]

Each side runs in its own process, one after the other, on the same MBPP direct-distillation prompts with greedy
decoding and the same engine settings (the config's teacher, through amr.serving.vllm_engine_kwargs and vllm_env),
but for the dtype. Reported per side: output tokens, wall time from the start (imports, Ray and engine start
included, as a job pays them), the start (until the engine answers), end-to-end tokens/s, and tokens/s of
generation alone (plain vLLM: the generate call; the deployment: the Ray Data stage, from the deployment being up
to the last row). Ratios: bfloat16 over float32 (plain vLLM), and the deployment over plain vLLM in bfloat16 (end
to end, generation alone, and the start's difference in seconds). The deployment watches for runaway answers
(sampling.stop_runaway, on as in a job); its answers that ran away are counted. Each side's output (vLLM's and
Ray's lines, timestamped) is kept beside the output, as teacher-SIDE-DTYPE.log: what each start is made of.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from amr.hardware import cpu_bf16

SIDES = (("plain", "float32"), ("plain", "bfloat16"), ("ray", "bfloat16"))


def job_config(args):
    """The config's job with the benchmark's model, prompt count and greedy sampling."""
    from amr.config import DistillConfig, load_config

    job = load_config(DistillConfig, args.config, args.set)
    if job.teacher.backend != "vllm":
        sys.exit(f"{args.config}: teacher.backend: the benchmark compares vLLM engines, got {job.teacher.backend!r}")
    if args.model:
        job.teacher.model = args.model
    job.teacher.sampling.temperature = 0.0
    job.teacher.sampling.max_tokens = args.max_tokens
    job.teacher.vllm.batch_size = args.prompts
    if args.dtype:
        job.teacher.vllm.dtype = args.dtype
    return job


def prompts(n: int) -> list[list[dict[str, str]]]:
    from amr.data import mbpp_train
    from amr.prompts import direct

    return [direct.messages(r["instruction"]) for r in mbpp_train()[:n]]


def run_plain(args) -> dict:
    start = time.perf_counter()
    from amr.model_store import resolve
    from amr.serving import vllm_engine_kwargs, vllm_env

    job = job_config(args)
    cfg = job.teacher
    if cfg.vllm.device == "cpu":
        os.environ.update(vllm_env(cfg.vllm))  # before vLLM is imported: it reads them at import
    from vllm import LLM, SamplingParams

    llm = LLM(resolve(cfg.model, job.model_store), **vllm_engine_kwargs(cfg.vllm))
    ready = time.perf_counter()
    outs = llm.chat(prompts(args.prompts), SamplingParams(temperature=0, max_tokens=args.max_tokens))
    end = time.perf_counter()
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {
        "side": f"plain vllm.LLM {args.dtype}",
        "output_tokens": tokens,
        "wall_s": end - start,
        "engine_start_s": ready - start,
        "generate_tok_s": tokens / (end - ready),
    }


def run_ray(args) -> dict:
    start = time.perf_counter()
    import ray

    from amr.engines import open_teacher
    from amr.runtime import init_ray
    from amr.serving import preload

    job = job_config(args)
    init_ray(job.ray, preload(job.teacher))
    rows = [{"id": str(i), "messages": m} for i, m in enumerate(prompts(args.prompts))]
    with open_teacher(job.teacher, job.model_store) as teacher:
        ready = time.perf_counter()
        out = teacher.generate(ray.data.from_items(rows)).take_all()
        end = time.perf_counter()
    assert not any(r["error"] for r in out), [r["error"] for r in out if r["error"]][:3]
    tokens = sum(r["num_output_tokens"] for r in out)
    return {
        "side": f"Serve deployment {args.dtype}",
        "runaways": sum(r["finish"] == "runaway" for r in out),
        "output_tokens": tokens,
        "wall_s": end - start,
        "engine_start_s": ready - start,
        "generate_tok_s": tokens / (end - ready),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/local_cpu.yaml", help="job config with the teacher")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--model", help="teacher model (default: the config's)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--side", choices=["plain", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help=argparse.SUPPRESS)
    parser.add_argument("--output", default="bench/results/teacher.json")
    args = parser.parse_args()
    if args.side:
        result = (run_plain if args.side == "plain" else run_ray)(args)
        result["tok_s"] = result["output_tokens"] / result["wall_s"]
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = []
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    for side, dtype in SIDES:
        cmd = [sys.executable, __file__, "--side", side, "--dtype", dtype, *sys.argv[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True)
        Path(args.output).with_name(f"teacher-{side}-{dtype}.log").write_text(done.stdout + done.stderr)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            sys.exit(f"{side} {dtype} side failed:\n{done.stderr[-4000:]}")
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    fp32, bf16, served = results
    teacher = job_config(args).teacher
    report = {
        "config": args.config,
        "model": teacher.model,
        "device": teacher.vllm.device,
        "cpu_bf16": cpu_bf16(),
        "prompts": args.prompts,
        "max_tokens": args.max_tokens,
        "results": results,
        "bf16_over_fp32_generation": bf16["generate_tok_s"] / fp32["generate_tok_s"],
        "bf16_over_fp32_end_to_end": bf16["tok_s"] / fp32["tok_s"],
        "ratio_end_to_end": served["tok_s"] / bf16["tok_s"],
        "ratio_generation": served["generate_tok_s"] / bf16["generate_tok_s"],
        "start_difference_s": served["engine_start_s"] - bf16["engine_start_s"],
    }
    for r in results:
        print(
            f"{r['side']:>28}: {r['output_tokens']} tokens in {r['wall_s']:.1f} s = {r['tok_s']:.1f} tok/s end to "
            f"end (start {r['engine_start_s']:.1f} s), generation alone {r['generate_tok_s']:.1f} tok/s"
        )
    print(
        f"bfloat16 / float32 (plain vLLM, CPU bf16: {report['cpu_bf16']}): generation "
        f"{report['bf16_over_fp32_generation']:.2f}, end to end {report['bf16_over_fp32_end_to_end']:.2f}\n"
        f"deployment / plain vLLM (bfloat16): end to end {report['ratio_end_to_end']:.2f}, generation "
        f"{report['ratio_generation']:.2f}, start {report['start_difference_s']:+.1f} s"
    )
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
