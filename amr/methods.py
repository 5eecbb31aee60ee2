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
    adapts_only: bool = True
    """A row keeps R_d unless ARE adapted a retrieved module into its answer: when nothing was retrieved (no ARE
    call) or the rewrite calls none of the retrieved functions. Otherwise every row's rewrite is its answer."""

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
        "R_d is run against teacher-written tests in the sandbox and repaired once if it fails.",
        ("direct", "anstest", "repair"),
        "ansrepair",
        baseline=True,
    ),
    Method(
        "amr-no-md",
        "AMR-Evol w/o MD",
        "Ablation: retrieval with R_d as the query, no modular decomposition (R_d stays where no module was adapted).",
        ("direct", "embed", "waves"),
        "are",
    ),
    Method(
        "amr-no-are",
        "AMR-Evol w/o ARE",
        "Ablation: the final answer from the specs only, nothing retrieved.",
        ("direct", "decompose", "waves"),
        "are",
    ),
    Method(
        "amr",
        "AMR-Evol",
        "The full method: R_d, modular decomposition, retrieval from the module table, "
        "adaptive response evolution, table growth. R_d stays the answer where ARE adapted no "
        "module: nothing retrieved above modules.min_similarity, or a rewrite that calls no retrieved function.",
        ("direct", "decompose", "embed", "waves"),
        "are",
    ),
    Method(
        "amr-checked",
        "AMR-Evol, checked",
        "Beyond the paper: AMR-Evol with every row evolved (retrieval or not), then R_d and the evolved "
        "answer run against teacher-written tests; the evolved answer replaces R_d where it passes them and R_d does "
        "not. Where neither passes, up to check.resamples more samples of the direct answer, the first that passes "
        "taken.",
        ("direct", "decompose", "embed", "waves", "anstest", "check", "resample"),
        "checked",
        adapts_only=False,  # the check chooses between R_d and the rewrite, so every row gets one
    ),
)
METHODS: dict[str, Method] = {m.name: m for m in REGISTRY}
REFERENCE = "direct"
"""The method every other is compared with."""


def method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; one of {', '.join(METHODS)}") from None
