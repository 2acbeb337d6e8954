"""checkpoint/gguf/write.py's metadata writer (what `stamp` rewrites GGUF with): entries encoded here
read back through the in-house parser and through gguf-py's reader, copied entries keep their bytes,
tensor infos and data stay byte-identical; and the exporter asks the family spec."""

from __future__ import annotations

import hashlib

import gguf
import numpy as np
import pytest

from warmstart.checkpoint.gguf.parse import (
    ARRAY,
    BOOL,
    FLOAT32,
    FLOAT64,
    INT32,
    INT64,
    STRING,
    UINT8,
    UINT32,
    UINT64,
    gguf_tensor_table,
    read_gguf_header,
)
from warmstart.checkpoint.gguf.write import copied_kv, encode_kv, write_gguf_with_metadata


def _source(path, alignment: int | None = None):
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_name("src")
    w.add_block_count(1)
    w.add_token_list(["a", "bé", "中"])
    w.add_array("llama.some_ints", [3, 1, 4])
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((5, 32)).astype(np.float32))
    w.add_tensor("blk.0.attn_q.weight", rng.standard_normal((32, 32)).astype(np.float16))
    w.add_tensor("output_norm.weight", rng.standard_normal(32).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _tensor_hashes(path) -> dict[str, str]:
    header, _ = read_gguf_header(path)
    tensors, defects = gguf_tensor_table(header)
    assert not defects
    data = path.read_bytes()
    return {t.name: hashlib.sha256(data[t.offset:t.offset + t.nbytes]).hexdigest() for t in tensors}


NEW = [("x.u8", 7, UINT8), ("x.u32", 70000, UINT32), ("x.i32", -5, INT32), ("x.u64", 2**40, UINT64),
       ("x.i64", -(2**40), INT64), ("x.f32", 0.5, FLOAT32), ("x.f64", 1e-300, FLOAT64), ("x.bool", True, BOOL),
       ("x.str", "héllo ✓", STRING), ("x.strs", ["a", "", "ü"], ARRAY), ("x.ints", [1, 2, 3], ARRAY)]


@pytest.mark.parametrize("alignment", [None, 64])
def test_new_metadata_same_tensor_bytes(tmp_path, alignment):
    src = _source(tmp_path / "src.gguf", alignment)
    header, raw = read_gguf_header(src)
    kept = [k for k in header.kv_spans if k != "general.name"]
    entries = [copied_kv(header, raw, k, "qwen2.block_count" if k == "llama.block_count" else None) for k in kept]
    entries += [encode_kv(k, v, t) for k, v, t in NEW]
    out = tmp_path / "out.gguf"
    write_gguf_with_metadata(src, header, raw, entries, out)

    assert _tensor_hashes(out) == _tensor_hashes(src)
    new_header, new_raw = read_gguf_header(out, skip_string_arrays=False)
    md = new_header.metadata
    assert "general.name" not in md and md["qwen2.block_count"] == 1 and "llama.block_count" not in md
    assert md["tokenizer.ggml.tokens"] == ["a", "bé", "中"] and md["llama.some_ints"] == [3, 1, 4]
    for key, value, _ in NEW:
        assert md[key] == value, key
    for key in kept:  # copied entries: type and value bytes unchanged
        new_key = "qwen2.block_count" if key == "llama.block_count" else key
        a, b = header.kv_spans[key], new_header.kv_spans[new_key]
        assert raw[a[0]:a[1]] == new_raw[b[0]:b[1]], key
    assert new_header.data_start % new_header.alignment == 0

    ref = gguf.GGUFReader(str(out))  # gguf-py's reader agrees
    assert ref.fields["x.str"].contents() == "héllo ✓" and ref.fields["x.strs"].contents() == ["a", "", "ü"]
    assert ref.fields["x.f64"].contents() == 1e-300 and ref.fields["x.i64"].contents() == -(2**40)
    for t in gguf.GGUFReader(str(src)).tensors:
        same = next(u for u in ref.tensors if u.name == t.name)
        assert np.array_equal(np.asarray(same.data), np.asarray(t.data)), t.name


def test_header_of_empty_or_truncated_file_is_refused(tmp_path):
    from warmstart.errors import UnreadableError

    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(UnreadableError):
        read_gguf_header(tmp_path / "empty.gguf")
    src = _source(tmp_path / "src.gguf")
    (tmp_path / "cut.gguf").write_bytes(src.read_bytes()[:60])
    with pytest.raises(UnreadableError, match="truncated|corrupt"):
        read_gguf_header(tmp_path / "cut.gguf")


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_export_asks_the_spec(tmp_path, tiny_model_factory, family):
    """general.architecture, names and q/k permutation come from the family spec, and read back."""
    import torch

    from warmstart.arch import spec_for
    from warmstart.checkpoint import load_checkpoint
    from warmstart.checkpoint.gguf.write import write_gguf

    model = tiny_model_factory(f"{family}-tiny")
    sd = model.canonical_state_dict()
    write_gguf(tmp_path / "m.gguf", model.cfg, list(sd), sd.__getitem__, dtype="f32")
    header, _ = read_gguf_header(tmp_path / "m.gguf")
    assert header.metadata["general.architecture"] == spec_for(family).gguf_arch
    ckpt = load_checkpoint(tmp_path / "m.gguf")
    assert ckpt.model_config().family == family
    for name, t in sd.items():
        assert torch.equal(ckpt.tensor(name), t), name  # f32: exact, un-permuted back


def test_a_spec_norm_shift_is_stored_and_taken_off(tmp_path, tiny_model_factory, monkeypatch):
    """A family whose llama.cpp converter stores RMSNorm weights as 1 + w (Gemma) needs only its spec."""
    import dataclasses

    import torch

    from warmstart.arch import families
    from warmstart.checkpoint import load_checkpoint
    from warmstart.checkpoint.gguf.parse import GGUFFile
    from warmstart.checkpoint.gguf.write import write_gguf

    spec = dataclasses.replace(families.SPECS["qwen3"], name="shifted", hf_architecture="ShiftedForCausalLM",
                               model_type="shifted", gguf_arch="shifted", gguf_norm_shift=1.0, presets={})
    monkeypatch.setitem(families.SPECS, "shifted", spec)
    monkeypatch.setitem(families.FAMILIES, "shifted", spec)
    monkeypatch.setitem(families._LOOKUP, "shifted", "shifted")
    model = tiny_model_factory("qwen3-tiny")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.linspace(-0.5, 0.5, p.numel()))
    cfg = model.cfg.replace(family="shifted")
    sd = model.canonical_state_dict()
    write_gguf(tmp_path / "s.gguf", cfg, list(sd), sd.__getitem__, dtype="f32")
    g = GGUFFile(tmp_path / "s.gguf")
    assert torch.equal(g.read(g.tensors["blk.0.attn_q_norm.weight"]), sd["model.layers.0.self_attn.q_norm.weight"] + 1)
    assert torch.equal(g.read(g.tensors["blk.0.attn_q.weight"]), sd["model.layers.0.self_attn.q_proj.weight"])
    g.close()
    ckpt = load_checkpoint(tmp_path / "s.gguf")
    assert ckpt.model_config().family == "shifted"
    for name, t in sd.items():
        assert torch.allclose(ckpt.tensor(name), t, rtol=0, atol=1e-7), name
