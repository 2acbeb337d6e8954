"""validate: sharded index consistency, overlapping tensors, all-zero warning, shapes vs config."""

from __future__ import annotations

import json
import shutil
import struct

import torch
from safetensors.torch import load_file, save_file

from warmstart.release.validate import validate


def _shard(src, dst):
    shutil.copytree(src, dst)
    sd = load_file(str(dst / "model.safetensors"))
    (dst / "model.safetensors").unlink()
    names = sorted(sd)
    half = len(names) // 2
    parts = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    wmap = {}
    for fname, keys in parts.items():
        save_file({k: sd[k] for k in keys}, str(dst / fname), metadata={"format": "pt"})
        wmap.update({k: fname for k in keys})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    return wmap


def test_sharded_index(ckpt_factory, tmp_path):
    d = tmp_path / "sharded"
    wmap = _shard(ckpt_factory("llama"), d)
    assert validate(d, schema=False)["verdict"] == "PASS"
    name = next(iter(wmap))
    wmap[name] = "model-00002-of-00002.safetensors" if wmap[name].startswith("model-00001") else \
        "model-00001-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    r = validate(d, schema=False)
    assert r["exit_code"] == 1 and any(name in i for i in r["checks"][0].items)


def test_overlapping_tensors(ckpt_factory, tmp_path):
    d = tmp_path / "ov"
    shutil.copytree(ckpt_factory("llama"), d)
    f = d / "model.safetensors"
    raw = f.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    a, b = [k for k in header if k != "__metadata__" and header[k]["shape"] == [64]][:2]
    header[b]["data_offsets"] = header[a]["data_offsets"]  # b now points into a's bytes
    blob = json.dumps(header).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    f.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])
    r = validate(d, schema=False)
    assert r["exit_code"] == 1 and any("overlap" in i for i in r["checks"][0].items)


def test_all_zero_tensor_is_a_warning(ckpt_factory, tmp_path):
    d = tmp_path / "z"
    shutil.copytree(ckpt_factory("llama"), d)
    sd = load_file(str(d / "model.safetensors"))
    sd["model.layers.0.mlp.up_proj.weight"] = torch.zeros_like(sd["model.layers.0.mlp.up_proj.weight"])
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    r = validate(d, schema=False)
    assert r["verdict"] == "PASS"
    values = next(c for c in r["checks"] if c.name == "values")
    assert values.status == "WARN" and values.items == ["model.layers.0.mlp.up_proj.weight: all 8192 values are zero"]


def test_shape_against_config(ckpt_factory, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(ckpt_factory("llama"), d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(cfg))
    r = validate(d, schema=False)
    shapes = next(c for c in r["checks"] if c.name == "shapes")
    assert r["exit_code"] == 1 and shapes.status == "FAIL"
    assert any("mlp.up_proj.weight expected (96, 64) found (128, 64)" in i for i in shapes.items)


def test_unsupported_family(ckpt_factory, tmp_path):
    d = tmp_path / "gpt2"
    shutil.copytree(ckpt_factory("llama"), d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["GPT2LMHeadModel"], "gpt2"
    (d / "config.json").write_text(json.dumps(cfg))
    r = validate(d, schema=False)
    fam = next(c for c in r["checks"] if c.name == "family")
    assert r["exit_code"] == 1 and fam.status == "FAIL" and "GPT2LMHeadModel" in fam.detail
