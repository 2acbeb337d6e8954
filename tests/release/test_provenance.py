"""One provenance parser: the warmstart.json fields read back the same, typed, from every format."""

from __future__ import annotations

import pytest

from warmstart.checkpoint import load_checkpoint, provenance
from warmstart.release.export import export_checkpoint

FIELDS = ("architecture", "hf_architecture", "model_type", "license", "data_sources", "data_license", "parent",
          "step", "tokens_seen", "val_loss", "data_fingerprint", "warmstart_version", "created")


@pytest.mark.parametrize("to,name", [("safetensors", "m.safetensors"), ("gguf", "m.gguf"), ("hf", "hf")])
def test_provenance_reads_back_typed_from_every_format(to, name, ckpt_factory, tmp_path):
    src = ckpt_factory("llama", trained=True)
    expected = {k: provenance(load_checkpoint(src))[k] for k in FIELDS}
    assert isinstance(expected["step"], int) and isinstance(expected["val_loss"], float)
    assert expected["parent"] is None and isinstance(expected["data_sources"], list)
    export_checkpoint(src, to, tmp_path / name, dtype="f32")
    got = provenance(load_checkpoint(tmp_path / name))
    assert {k: got.get(k) for k in FIELDS} == expected
    assert got["exported_from"] == str(src)
