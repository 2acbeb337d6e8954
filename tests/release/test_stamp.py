"""stamp: same format out, tensors byte-identical (sha256), never its own input, evidence-checked claims."""

from __future__ import annotations

import json
import shutil

import pytest

from warmstart.errors import EvidenceError, UsageError
from warmstart.checkpoint import load_checkpoint, provenance, read_structure, tensor_hashes
from warmstart.release._meta import declared_identity
from warmstart.release.export import export_checkpoint
from warmstart.release.stamp import resolve_identity, stamp_checkpoint


def _hashes(path):
    return tensor_hashes(read_structure(path))


@pytest.fixture(scope="module")
def formats(ckpt_factory, tmp_path_factory):
    """The qwen2 tiny checkpoint as HF dir, single safetensors and GGUF (q8_0)."""
    src = ckpt_factory("qwen2")
    d = tmp_path_factory.mktemp("stamp-formats")
    export_checkpoint(src, "safetensors", d / "m.safetensors")
    export_checkpoint(src, "gguf", d / "m.gguf", dtype="q8_0")
    return {"hf-dir": src, "safetensors": d / "m.safetensors", "gguf": d / "m.gguf"}


@pytest.mark.parametrize("fmt", ["hf-dir", "safetensors", "gguf"])
def test_stamp_keeps_tensor_bytes(fmt, formats, tmp_path):
    src = formats[fmt]
    out = tmp_path / ("fixed" if fmt == "hf-dir" else "fixed" + src.suffix)
    before = _hashes(src)
    r = stamp_checkpoint(src, out, architecture="Qwen2ForCausalLM", license="mit",
                         data_sources=["a", "b"], data_license="cc-by-4.0", parent="Qwen/Qwen2.5-0.5B")
    assert r["tensor_hashes_equal"] and r["format"] == fmt
    rc = read_structure(out)
    assert rc.format == fmt
    assert tensor_hashes(rc) == before
    prov = provenance(load_checkpoint(out))
    assert prov["license"] == "mit" and prov["data_sources"] == ["a", "b"] and prov["data_license"] == "cc-by-4.0"
    assert prov["parent"]["name"] == "Qwen/Qwen2.5-0.5B"
    ident = {k: v for k, (v, _) in declared_identity(load_checkpoint(out)).items()}
    assert ident == {"architecture": "qwen2", "hf_architecture": "Qwen2ForCausalLM", "model_type": "qwen2"}


def test_safetensors_stamp_rewrites_only_header(formats, tmp_path):
    src = formats["safetensors"]
    out = tmp_path / "s.safetensors"
    stamp_checkpoint(src, out, license="mit")
    a, b = read_structure(src).files[0], read_structure(out).files[0]
    assert src.read_bytes()[a.data_start:] == out.read_bytes()[b.data_start:]
    assert b.metadata["license"] == "mit"


def test_hf_dir_stamp_copies_files_byte_for_byte(formats, tmp_path):
    src = formats["hf-dir"]
    out = tmp_path / "fixed"
    stamp_checkpoint(src, out, architecture="qwen2")
    for f in src.iterdir():
        if f.name not in ("config.json", "warmstart.json"):
            assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["model_type"] == "qwen2"


def test_architecture_alone_fills_the_rest():
    for spelling in ("qwen2", "Qwen2", "Qwen2ForCausalLM", "QWEN2"):
        assert resolve_identity(spelling, None, None) == {
            "architecture": "qwen2", "hf_architecture": "Qwen2ForCausalLM", "model_type": "qwen2"}
    with pytest.raises(UsageError):
        resolve_identity("qwen2", "LlamaForCausalLM", None)
    with pytest.raises(UsageError):
        resolve_identity("nonsense-arch", None, None)


def test_refuses_own_input(formats, tmp_path):
    for src in formats.values():
        before = _hashes(src)
        with pytest.raises(UsageError):
            stamp_checkpoint(src, src, license="mit")
        assert _hashes(src) == before
    inside = formats["hf-dir"] / "sub"
    with pytest.raises(UsageError):
        stamp_checkpoint(formats["hf-dir"], inside, license="mit")
    assert not inside.exists()


def test_refuses_existing_output(formats, tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"keep")
    with pytest.raises(UsageError):
        stamp_checkpoint(formats["gguf"], tmp_path / "x.gguf", license="mit")
    assert (tmp_path / "x.gguf").read_bytes() == b"keep"


@pytest.mark.parametrize("fmt", ["hf-dir", "gguf"])
def test_contradicting_claim_needs_force(fmt, formats, tmp_path):
    src = formats[fmt]
    out = tmp_path / ("o" + src.suffix)
    with pytest.raises(EvidenceError) as exc:
        stamp_checkpoint(src, out, architecture="llama")
    assert "qwen2" in str(exc.value) and "llama" in str(exc.value)
    assert not out.exists()
    r = stamp_checkpoint(src, out, architecture="llama", force=True)
    assert r["forced"] and r["tensor_hashes_equal"]
    assert declared_identity(load_checkpoint(out))["architecture"][0] == "llama"


def test_gguf_architecture_change_renames_keys(ckpt_factory, tmp_path):
    """A qwen2 GGUF mislabelled 'llama' is stamped back to qwen2 with qwen2.* keys."""
    src = tmp_path / "q.gguf"
    export_checkpoint(ckpt_factory("qwen2"), "gguf", src, dtype="f16")
    wrong = tmp_path / "wrong.gguf"
    stamp_checkpoint(src, wrong, architecture="llama", force=True)
    assert "llama.block_count" in read_structure(wrong).files[0].metadata
    fixed = tmp_path / "fixed.gguf"
    stamp_checkpoint(wrong, fixed, architecture="qwen2")
    kv = read_structure(fixed).files[0].metadata
    assert kv["general.architecture"] == "qwen2" and "qwen2.block_count" in kv and "llama.block_count" not in kv
    assert _hashes(fixed) == _hashes(src)


def test_stamp_refuses_broken_input(formats, tmp_path):
    from warmstart.errors import CheckFailedError

    bad = tmp_path / "bad.safetensors"
    data = formats["safetensors"].read_bytes()
    bad.write_bytes(data[:-100])
    with pytest.raises(CheckFailedError):
        stamp_checkpoint(bad, tmp_path / "o.safetensors", license="mit")
    shutil.rmtree(tmp_path / "o.safetensors", ignore_errors=True)
