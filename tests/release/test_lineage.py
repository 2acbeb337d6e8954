"""One lineage hash: what `pretrain --init X` records as its parent equals what `stamp --parent X` records,
for a HF directory with one safetensors file, a sharded directory and a GGUF file; inspect checks it."""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from _ckpt_tools import ws

from warmstart.checkpoint import lineage_hash, load_checkpoint, provenance
from warmstart.checkpoint.lineage import lineage_chain

TRAIN_FLAGS = ["--seq-len", "32", "--batch-size", "2", "--eval-tokens", "256", "--val-fraction", "0.25",
               "--max-steps", "1", "--save-every", "0", "--eval-every", "0", "--quiet", "--allow-untrained-init"]


def _shard(src: Path, dst: Path) -> Path:
    """``src`` re-saved as two shards with a model.safetensors.index.json."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    sd = load_file(str(dst / "model.safetensors"))
    (dst / "model.safetensors").unlink()
    names = sorted(sd)
    wmap = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:]), 1):
        fname = f"model-0000{i}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, str(dst / fname), metadata={"format": "pt"})
        wmap.update(dict.fromkeys(part, fname))
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    return dst


@pytest.fixture(scope="module")
def parents(ckpt_factory, tmp_path_factory) -> dict[str, Path]:
    from warmstart.release.export import export_checkpoint

    src = ckpt_factory("llama", trained=True)
    d = tmp_path_factory.mktemp("lineage-parents")
    export_checkpoint(src, "gguf", d / "model.gguf", dtype="f32")
    return {"hf-single": src, "hf-sharded": _shard(src, d / "sharded"), "gguf": d / "model.gguf"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("lineage-corpus") / "corpus.txt"
    f.write_text(inspect.getsource(textwrap))
    return f


@pytest.mark.parametrize("kind", ["hf-single", "hf-sharded", "gguf"])
def test_pretrain_and_stamp_record_the_same_parent_hash(kind, parents, corpus, tmp_path):
    parent = parents[kind]
    ws("pretrain", "--init", str(parent), "--data", str(corpus), "--out", "run", *TRAIN_FLAGS, cwd=tmp_path)
    latest = (tmp_path / "run" / "checkpoints" / "latest").read_text().strip()
    trained = json.loads((tmp_path / "run" / "checkpoints" / latest / "warmstart.json").read_text())
    ws("stamp", str(parent), "--parent", str(parent), "-o", "stamped" + parent.suffix, cwd=tmp_path)
    stamped = provenance(load_checkpoint(tmp_path / ("stamped" + parent.suffix)))
    with load_checkpoint(parent) as ckpt:
        expected = lineage_hash(ckpt)
        files = ckpt.files
    assert trained["parent"]["sha256"] == stamped["parent"]["sha256"] == expected
    assert trained["parent"]["path"] == stamped["parent"]["path"] == str(parent.resolve())
    if kind != "hf-sharded":  # one tensor file: its own sha256, as sha256sum prints it
        assert len(files) == 1 and expected == hashlib.sha256(files[0].read_bytes()).hexdigest()
    else:
        assert len(files) == 2


def test_inspect_checks_recorded_parents(parents, tmp_path):
    parent = tmp_path / "parent"
    shutil.copytree(parents["hf-single"], parent)
    child = tmp_path / "child"
    ws("stamp", str(parents["hf-single"]), "--parent", str(parent), "-o", str(child), cwd=tmp_path)
    out = ws("inspect", str(child), "--json", cwd=tmp_path)
    (entry,) = json.loads(out.stdout)["lineage"]["chain"]
    assert entry["present"] and entry["sha256_matches"] is True
    out = ws("inspect", str(child), cwd=tmp_path)
    assert "sha256 verified" in " ".join(out.stdout.split())
    # the parent's weights change: inspect says so
    shutil.copyfile(parents["hf-sharded"] / "model-00001-of-00002.safetensors", parent / "model.safetensors")
    (entry,) = lineage_chain(load_checkpoint(child))
    assert entry["present"] and entry["sha256_matches"] is False
