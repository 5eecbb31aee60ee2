"""Generation: the model under evaluation answers every task through the project's engine (``amr.engines``: a
Ray Serve LLM deployment of the model, one per model however many datasets it is scored on), prompted exactly as
evalplus 0.3.1 prompts chat models, and evalplus's sanitizer turns each answer into the solution that is scored.
"""

from __future__ import annotations

from typing import Any

from amr.config import EvalConfig, TeacherConfig
from amr.engines import Teacher
from amr.model_store import resolve
from amr.prompts.student import ALPACA, VERBATIM

# evalplus.codegen.run_codegen's wording (local variables there, hence copied): the same prompt keeps scores comparable
INSTRUCTION_PREFIX = (
    "Please provide a self-contained Python script that solves the following problem in a markdown code block:"
)
RESPONSE_PREFIX = (
    "Below is a Python script with a self-contained function that solves the problem and passes corresponding tests:"
)


def messages(prompt: str, template: str = "chat") -> list[dict[str, str]]:
    """evalplus's chat prompt (``provider.utility.make_raw_chat_prompt``): the task in a code block; the answer
    is prefilled with the response prefix and an open python block, which the model continues. ``alpaca``: the
    same instruction inside the Alpaca template (sent with the ``VERBATIM`` chat template), the same prefill."""
    instruction = f"{INSTRUCTION_PREFIX}\n```\n{prompt.strip()}\n```\n"
    if template == "alpaca":
        instruction = ALPACA.format(instruction=instruction.rstrip("\n"))
    return [
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": f"{RESPONSE_PREFIX}\n```python\n"},
    ]


def stop_strings() -> list[str]:
    """evalplus's ``VllmDecoder`` stops for chat models: its EOS strings and the end of the code block."""
    from evalplus.provider.utility import EOS

    return [*EOS, "\n```\n"]


def requests(
    tasks: list[dict[str, Any]], n: int = 1, seed: int | None = None, template: str = "chat"
) -> list[dict[str, Any]]:
    """``n`` chat requests per task (sample ``i`` seeded ``seed + i`` when a seed is set), in ``template``."""
    stop = stop_strings()
    return [
        {
            "id": f"{t['task_id']}#{i}",
            "task_id": t["task_id"],
            "sample": i,
            "messages": messages(t["prompt"], template),
            "sampling": {"stop": stop, "seed": None if seed is None else seed + i},
            **({"chat_template": VERBATIM} if template == "alpaca" else {}),
        }
        for t in tasks
        for i in range(n)
    ]


def student(config: EvalConfig) -> TeacherConfig:
    """The engine configuration of the model under evaluation: a registry name, a local model directory or a hub id
    pulled into the Hugging Face cache (by a job's preflight, or `amr models pull`); evaluation downloads nothing."""
    resolve(config.model, config.model_store)
    return TeacherConfig(model=config.model, sampling=config.sampling, vllm=config.vllm)


def generate(tasks: list[dict[str, Any]], config: EvalConfig, engine: Teacher) -> list[dict[str, Any]]:
    """Samples in task order: task_id, solution (sanitized), raw (the model's answer), error, output_tokens.
    ``engine`` serves the model under evaluation (``amr.engines.open_teacher(student(config))``)."""
    from evalplus.sanitize import sanitize

    asked = requests(tasks, config.samples, config.sampling.seed, config.template)
    answers = engine.complete(asked, carry=("task_id", "sample"))
    entry_points = {t["task_id"]: t["entry_point"] for t in tasks}
    return [
        {
            "task_id": r["task_id"],
            "solution": sanitize(r["response"].replace("\t", "    "), entrypoint=entry_points[r["task_id"]]),
            "raw": r["response"],
            "error": r["error"],
            "output_tokens": r["num_output_tokens"],
        }
        for r in answers
    ]
