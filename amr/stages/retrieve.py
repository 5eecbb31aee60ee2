"""Retrieval: the most similar verified functions to each query vector, from a pinned table version."""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np

from amr.modules import ModuleDB, spec_text
from amr.parsing import python_code

Query = Literal["specs", "direct"]


def queries(row: dict[str, Any], query: Query) -> list[str]:
    """The texts a row searches with: its specs, or (ablation w/o MD) the code of R_d."""
    if query == "direct":
        code = python_code(row["direct_response"] or "")
        return [code] if code else []
    return [spec_text(s["signature"], s["description"]) for s in json.loads(row["specs"])]


def run(
    rows: list[dict[str, Any]], db: ModuleDB, version: int, *, k: int = 1, min_similarity: float | None = None
) -> list[dict[str, Any]]:
    """Rows with ``query_vectors`` (``amr.stages.embed``) -> + ``retrieved`` (JSON list of
    name/code/similarity, best first, no repeats) and ``module_version``."""
    flat = [v for row in rows for v in row["query_vectors"]]
    hits = iter(db.search(np.asarray(flat, dtype=np.float32), k, version) if flat else [])
    out = []
    for row in rows:
        found: dict[str, dict[str, Any]] = {}
        for _ in row["query_vectors"]:
            for hit in next(hits):
                if min_similarity is not None and hit["similarity"] < min_similarity:
                    continue
                if hit["code"] not in found or found[hit["code"]]["similarity"] < hit["similarity"]:
                    found[hit["code"]] = {
                        "name": hit["name"],
                        "code": hit["code"],
                        "similarity": round(hit["similarity"], 4),
                    }
        best = sorted(found.values(), key=lambda h: -h["similarity"])
        out.append({**row, "retrieved": json.dumps(best), "module_version": version})
    return out
