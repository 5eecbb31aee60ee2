"""The distillation methods: AMR-Evol, its ablations and the baselines, each declared once.

A method is the list of stages its distill job runs (``amr.pipelines.distill`` runs them in order), the
column prefix of its final answer, and how the report shows it. ``amr distill --method``, the configs'
``method``/``methods``, ``amr run`` (which methods share R_d) and ``amr report`` (row order and labels)
all read this registry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    """How the report names it."""
    description: str
    stages: tuple[str, ...]
    """Its distill stages, in order (``amr.pipelines.distill.STEPS``)."""
    answer: str
    """Prefix of the final answer's columns: ``{answer}_response`` and ``{answer}_error``."""
    baseline: bool = False
    gated: bool = False
    """Beyond the paper: ARE with its own prompt (call the retrieved functions), the retrieved functions the rewrite
    calls put before its code, and R_d kept as the answer where ARE adapted no module (nothing retrieved, a rewrite
    that calls no retrieved function or leaves out the function asked for). Otherwise every row's answer is its
    ARE answer, as in the paper."""
    matched: str | None = None
    """The method whose teacher tokens bound this one's resampling when both distil the same instructions
    (``check.token_budget``, set by ``amr run`` and bench/quality.py): a baseline at the same teacher cost."""

    @property
    def reads_direct(self) -> bool:
        """It starts from the teacher's direct answers (R_d); methods that do share one ``direct.parquet``."""
        return self.stages[0] == "direct"

    @property
    def uses_modules(self) -> bool:
        """It retrieves from the functional module table in its waves, and grows it (the ablation without
        retrieval neither reads nor grows one)."""
        return self.retrieves and "waves" in self.stages

    @property
    def retrieves(self) -> bool:
        return "embed" in self.stages

    @property
    def query(self) -> str:
        """What retrieval embeds: the specs of MD, or R_d itself when MD is ablated."""
        return "specs" if "decompose" in self.stages else "direct"


REGISTRY: tuple[Method, ...] = (  # the report's order: the paper's tables list the baselines, then ours
    Method(
        "direct", "direct", "R_d, the teacher's direct answer, is the answer.", ("direct",), "direct", baseline=True
    ),
    Method("cot", "CoT", "The teacher reasons step by step, then writes the code.", ("cot",), "cot", baseline=True),
    Method(
        "ansrepair",
        "AnsRepair",
        "The teacher writes a test function from the question and R_d; R_d runs against it in the sandbox and, where "
        "it fails, is repaired once from the wrong solution and the failure.",
        ("direct", "anstest", "repair"),
        "ansrepair",
        baseline=True,
    ),
    Method(
        "direct-checked",
        "direct, checked",
        "Beyond the paper, amr-checked's baseline at its teacher cost: R_d run against teacher-written asserts; "
        "where it fails them, more samples of the direct answer, the first that passes taken, round after round "
        "while the teacher tokens spent are below check.token_budget (amr-checked's, when both run).",
        ("direct", "anstest", "check", "resample"),
        "checked",
        baseline=True,
        matched="amr-checked",
    ),
    Method(
        "amr-no-md",
        "AMR-Evol w/o MD",
        "Ablation: retrieval with R_d as the query, no modular decomposition; every row's answer is its ARE answer.",
        ("direct", "embed", "waves"),
        "are",
    ),
    Method(
        "amr-no-are",
        "AMR-Evol w/o ARE",
        "Ablation: the final answer from the instruction and the specs only, nothing retrieved; every row's answer "
        "is its evolved answer.",
        ("direct", "decompose", "waves"),
        "are",
    ),
    Method(
        "amr",
        "AMR-Evol",
        "The paper's method: R_d, modular decomposition, retrieval from the module table, adaptive response "
        "evolution of every row from the instruction, the specs and the retrieved functions (the paper's prompt), "
        "table growth from the evolved answers. R_d is never the final answer.",
        ("direct", "decompose", "embed", "waves"),
        "are",
    ),
    Method(
        "amr-gated",
        "AMR-Evol, gated",
        "Beyond the paper: AMR-Evol whose ARE asks the teacher to call the retrieved functions and puts the code "
        "of those it calls into the answer; R_d stays the answer where ARE adapted no module: nothing retrieved "
        "above modules.min_similarity, a rewrite that calls no retrieved function, or one that leaves out the "
        "function the task asks for. The table grows from the final answers.",
        ("direct", "decompose", "embed", "waves"),
        "are",
        gated=True,
    ),
    Method(
        "amr-checked",
        "AMR-Evol, checked",
        "Beyond the paper: AMR-Evol (the paper's ARE), then R_d and the evolved answer run against teacher-written "
        "asserts; the evolved answer replaces R_d where it passes them and R_d does not. Where neither passes, up "
        "to check.resamples more samples of the direct answer, the first that passes taken.",
        ("direct", "decompose", "embed", "waves", "anstest", "check", "resample"),
        "checked",
    ),
    Method(
        "amr-checked-no-retrieval",
        "AMR-Evol, checked, no retrieval",
        "Beyond the paper, amr-checked without the module table: the evolved answer from the instruction and the "
        "specs only (as amr-no-are), then amr-checked's check; resampling while the teacher tokens spent are "
        "below check.token_budget (amr-checked's, when both run).",
        ("direct", "decompose", "waves", "anstest", "check", "resample"),
        "checked",
        matched="amr-checked",
    ),
)
METHODS: dict[str, Method] = {m.name: m for m in REGISTRY}
REFERENCE = "direct"
"""The method every other is compared with."""


def distill_order(names: list[str]) -> list[str]:
    """``names`` in the order they distil: a matched baseline after the method it is matched to, when both are
    there (its token budget is that method's cost); the rest as given."""
    return sorted(names, key=lambda name: METHODS[name].matched in names)


def method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; one of {', '.join(METHODS)}") from None
