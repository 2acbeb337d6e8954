"""Hostile checkpoints through every command that reads one: each input gets its own code, exit 1 or 2,
in seconds, nothing left behind.

A case damages a private copy of a tiny real checkpoint (HF directory, single safetensors file, GGUF,
run directory) and runs it through the commands listed for it; ``validate``, ``qa`` and
``publish-check`` report the finding with the same code the loader or the gate refuses it with.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from _hostile import DROP, cli, edit_config, gguf_retable, gguf_rewrite, refused_cli, st_header, st_rewrite

U32, STR, ARR = 4, 8, 9
READERS = ("inspect", "validate", "eval", "generate", "init", "export", "stamp", "qa")
RELEASE = ("card", "publish-check")


def command(name: str, ckpt: Path, tmp: Path, text: Path) -> list:
    out = tmp / "out"
    return {
        "inspect": ["inspect", ckpt],
        "validate": ["validate", ckpt],
        "eval": ["eval", ckpt, "--data", text, "--max-tokens", 64, "--seq-len", 32],
        "generate": ["generate", ckpt, "--prompt", "def f(x):", "--max-new-tokens", 2],
        "init": ["pretrain", "--init", ckpt, "--data", text, "--max-steps", 1, "--seq-len", 16, "--batch-size", 1,
                 "--eval-tokens", 16, "--out", out],
        "export": ["export", ckpt, "--to", "safetensors", "-o", out.with_suffix(".safetensors")],
        "stamp": ["stamp", ckpt, "--license", "mit", "-o", out.with_suffix(ckpt.suffix)],
        "qa": ["qa", ckpt],
        "card": ["card", ckpt, "-o", tmp / "README.md"],
        "publish-check": ["publish-check", ckpt],
    }[name]


@dataclass(frozen=True)
class Case:
    id: str
    base: str  # hf | st (one safetensors file) | gguf | run (a run directory of the hf checkpoint)
    damage: Callable[[Path, Path], Path | None]  # (checkpoint, case dir) -> the path to pass (None: the same)
    code: str
    commands: tuple[str, ...] = READERS
    per_command: dict = field(default_factory=dict)  # command -> code where it differs


def cfg(**changes):
    return lambda ck, tmp: edit_config(ck, **changes)


def prov(**changes):
    return lambda ck, tmp: edit_config(ck, "warmstart.json", **changes)


def write(name: str, data: bytes):
    return lambda ck, tmp: (ck / name).write_bytes(data)


def gguf_set(key: str, vtype: int, value):
    return lambda ck, tmp: gguf_rewrite(ck, set_={key: (vtype, value)})


def _fifo(name: str):
    def damage(ck, tmp):
        (ck / name).unlink()
        os.mkfifo(ck / name)
    return damage


def _fifo_path(ck, tmp):
    os.mkfifo(tmp / "pipe.safetensors")
    return tmp / "pipe.safetensors"


def _loop(ck, tmp):
    os.symlink(tmp / "loop-b", tmp / "loop-a")
    os.symlink(tmp / "loop-a", tmp / "loop-b")
    return tmp / "loop-a"


def _st_duplicate(ck, tmp):
    path = ck / "model.safetensors"
    header, data = st_header(path)
    text = json.dumps(header)
    name = "model.norm.weight"
    entry = json.dumps({name: header[name]})[1:-1]
    st_rewrite(path, text[:-1] + ", " + entry + "}", data)  # the same name twice, the same bytes


def _st_overlap(ck, tmp):
    path = ck / "model.safetensors"
    header, data = st_header(path)
    a, b = "model.norm.weight", "model.layers.1.post_attention_layernorm.weight"
    header[a]["data_offsets"] = list(header[b]["data_offsets"])
    st_rewrite(path, json.dumps(header), data)


def _st_config(**changes):
    def damage(ck, tmp):
        header, data = st_header(ck)
        meta = header["__metadata__"]
        config = json.loads(meta["config"])
        config.update(changes)
        meta["config"] = json.dumps(config)
        st_rewrite(ck, json.dumps(header), data)
    return damage


def _sharded(shard_name):
    """The weights as one shard named in an index by ``shard_name(ck, tmp)``."""
    def damage(ck, tmp):
        name = shard_name(ck, tmp)
        os.replace(ck / "model.safetensors", ck / "model-00001-of-00001.safetensors")
        header, _ = st_header(ck / "model-00001-of-00001.safetensors")
        index = {"metadata": {}, "weight_map": {k: name for k in header if k != "__metadata__"}}
        (ck / "model.safetensors.index.json").write_text(json.dumps(index))
    return damage


def _outside(ck, tmp):
    shutil.copy(ck / "model.safetensors", tmp / "elsewhere.safetensors")
    return "../elsewhere.safetensors"


def _index_lists(ck, tmp):
    _sharded(lambda c, t: "model-00001-of-00001.safetensors")(ck, tmp)
    index = json.loads((ck / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: [v] for k, v in index["weight_map"].items()}
    (ck / "model.safetensors.index.json").write_text(json.dumps(index))


def _latest(data: bytes | None = None, link: str | None = None):
    def damage(run, tmp):
        latest = run / "checkpoints" / "latest"
        latest.unlink()
        if link is not None:
            os.symlink(link, latest)
        else:
            latest.write_bytes(data)
    return damage


def _gguf_duplicate_key(ck, tmp):
    gguf_rewrite(ck, dup=("llama.block_count",))


def _gguf_overlap(ck, tmp):
    def edit(infos):
        infos[2][3] = infos[1][3]  # two tensors of one size share their bytes
    gguf_retable(ck, edit)


def _gguf_zero_dim(ck, tmp):
    def edit(infos):
        infos[0][1] = (0,) + tuple(infos[0][1][1:])
    gguf_retable(ck, edit)


def _truncate(name: str | None, keep: int):
    def damage(ck, tmp):
        p = ck / name if name else ck
        p.write_bytes(p.read_bytes()[:keep])
    return damage


def _tokenizer_too_big(ck, tmp):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ck / "tokenizer.json"))
    tok.add_tokens([f"<extra_{i}>" for i in range(40)])
    tok.save(str(ck / "tokenizer.json"))


LOADER = ("inspect", "validate", "eval", "generate", "init", "export", "stamp", "qa")
NUMBERS = ("validate", "eval", "generate", "init", "export", "qa")  # the commands that read tensor values
GATED = ("validate", "eval", "generate", "init")  # gate 4, the tokenizer

CASES = [
    # config.json: types, ranges, agreement, sizes bounded by the bytes present
    Case("vocab-negative", "hf", cfg(vocab_size=-5), "WS111", commands=LOADER + RELEASE),
    Case("heads-zero", "hf", cfg(num_attention_heads=0, head_dim=DROP), "WS111"),
    Case("rope-theta-string", "hf", cfg(rope_theta="abc"), "WS111"),
    Case("eps-string", "hf", cfg(rms_norm_eps="x"), "WS111"),
    Case("rope-scaling-string", "hf", cfg(rope_scaling="linear"), "WS111"),
    Case("rope-scaling-list", "hf", cfg(rope_scaling=[1, 2]), "WS111"),
    Case("rope-llama3-no-factor", "hf", cfg(rope_scaling={"rope_type": "llama3"}), "WS111",
         commands=("validate", "init", "export")),
    Case("hidden-2-40", "hf", cfg(hidden_size=2**40), "WS112", commands=LOADER + RELEASE),
    Case("layers-2-40", "hf", cfg(num_hidden_layers=2**40), "WS112", commands=LOADER + RELEASE),
    Case("kv-heads-zero", "hf", cfg(num_key_value_heads=0), "WS111"),
    Case("kv-heads-not-divisor", "hf", cfg(num_key_value_heads=3), "WS111", commands=("validate", "init", "eval")),
    Case("max-positions-negative", "hf", cfg(max_position_embeddings=-1), "WS111"),
    Case("hidden-not-multiple-of-heads", "hf", cfg(num_attention_heads=3, num_key_value_heads=1, head_dim=DROP),
         "WS111", commands=("validate", "init", "eval")),
    Case("head-dim-odd", "hf", cfg(head_dim=15), "WS111", commands=("validate", "init", "export")),
    Case("tied-string", "hf", cfg(tie_word_embeddings="yes"), "WS111", commands=("validate", "init", "eval")),
    Case("eos-string", "hf", cfg(eos_token_id="x"), "WS111", commands=("validate", "init", "generate")),
    Case("intermediate-float", "hf", cfg(intermediate_size=1.5), "WS111", commands=("validate", "init", "export")),
    Case("vocab-bool", "hf", cfg(vocab_size=True), "WS111", commands=("validate", "init", "inspect")),
    Case("layer-types-length", "hf", cfg(layer_types=["full_attention"]), "WS111",
         commands=("validate", "init", "export")),
    Case("config-list", "hf", write("config.json", b"[1, 2]"), "WS101", per_command={"stamp": "WS300"}),
    Case("config-not-json", "hf", write("config.json", b"\xff\xfe{"), "WS101", commands=("validate", "init", "eval")),
    Case("config-nested", "hf", write("config.json", b"[" * 100000), "WS101", commands=("validate", "inspect")),
    Case("config-fifo", "hf", _fifo("config.json"), "WS003"),
    # warmstart.json / safetensors metadata
    Case("provenance-list", "hf", write("warmstart.json", b"[]"), "WS101", per_command={"stamp": "WS300"}),
    Case("provenance-step-string", "hf", prov(step="three"), "WS111", commands=LOADER + RELEASE),
    Case("provenance-val-loss-string", "hf", prov(val_loss="low"), "WS111", commands=("validate", "init", "export")),
    Case("provenance-parent-string", "hf", prov(parent="x"), "WS111", commands=("validate", "inspect", "stamp")),
    Case("metadata-config-vocab", "st", _st_config(vocab_size=-1), "WS111"),
    Case("metadata-config-layers", "st", _st_config(num_hidden_layers=2**40), "WS112",
         commands=("validate", "init", "export")),
    # safetensors structure
    Case("duplicate-tensor-name", "hf", lambda ck, t: _st_duplicate(ck, t), "WS101",
         per_command={"stamp": "WS300"}),
    Case("overlapping-tensors", "hf", lambda ck, t: _st_overlap(ck, t), "WS101", per_command={"stamp": "WS300"}),
    Case("truncated-safetensors", "st", _truncate(None, 2000), "WS101", per_command={"stamp": "WS300"}),
    Case("weights-fifo", "hf", _fifo("model.safetensors"), "WS003"),
    # paths taken from inside a checkpoint, and the path itself
    Case("index-shard-outside", "hf", _sharded(_outside), "WS113", commands=LOADER + RELEASE),
    Case("index-shard-absolute", "hf", _sharded(lambda ck, t: str(t / "abs.safetensors")), "WS113"),
    Case("index-values-lists", "hf", _index_lists, "WS101", per_command={"stamp": "WS300"}),
    Case("path-fifo", "hf", _fifo_path, "WS003", commands=LOADER + RELEASE),
    Case("path-dev-zero", "hf", lambda ck, t: Path("/dev/zero"), "WS003"),
    Case("path-symlink-loop", "hf", _loop, "WS004", commands=LOADER + RELEASE),
    Case("latest-names-itself", "run", _latest(b"latest\n"), "WS113"),
    Case("latest-missing-step", "run", _latest(b"step-000099\n"), "WS101"),
    Case("latest-outside", "run", _latest(b"../../elsewhere\n"), "WS113"),
    Case("latest-not-utf8", "run", _latest(b"\xff\xfe\x00"), "WS101"),
    Case("latest-link-loop", "run", _latest(link="latest"), "WS004"),
    # values and the tokenizer: what the gates refuse, validate reports
    Case("nan-weight", "hf", lambda ck, t: _set_tensor(ck, "model.layers.0.mlp.up_proj.weight", float("nan")),
         "WS105", commands=NUMBERS),
    Case("zero-weight", "hf", lambda ck, t: _set_tensor(ck, "model.layers.0.self_attn.q_proj.weight", 0.0),
         "WS114", commands=("init",)),
    Case("tokenizer-corrupt", "hf", write("tokenizer.json", b'{"model": 17}'), "WS101", commands=GATED + ("export",)),
    Case("tokenizer-missing", "hf", lambda ck, t: (ck / "tokenizer.json").unlink(), "WS104", commands=GATED),
    Case("tokenizer-too-big", "hf", _tokenizer_too_big, "WS104", commands=GATED),
    Case("special-id-out-of-range", "hf", cfg(bos_token_id=9999), "WS104", commands=GATED),
    # GGUF keys and tables
    Case("gguf-alignment-zero", "gguf", gguf_set("general.alignment", U32, 0), "WS111"),
    Case("gguf-alignment-string", "gguf", gguf_set("general.alignment", STR, "x"), "WS111"),
    Case("gguf-unknown-architecture", "gguf", gguf_set("general.architecture", STR, "foo"), "WS102",
         commands=("eval", "generate", "export", "validate")),
    Case("gguf-unknown-architecture-init", "gguf", gguf_set("general.architecture", STR, "foo"), "WS101",
         commands=("init",)),
    Case("gguf-bos-string", "gguf", gguf_set("tokenizer.ggml.bos_token_id", STR, "one"), "WS111"),
    Case("gguf-embedding-string", "gguf", gguf_set("llama.embedding_length", STR, "64"), "WS111"),
    Case("gguf-eps-string", "gguf", gguf_set("llama.attention.layer_norm_rms_epsilon", STR, "x"), "WS111"),
    Case("gguf-heads-zero", "gguf", gguf_set("llama.attention.head_count", U32, 0), "WS111"),
    Case("gguf-kv-heads-not-divisor", "gguf", gguf_set("llama.attention.head_count_kv", U32, 3), "WS111",
         commands=("validate", "init", "eval")),
    Case("gguf-nested-arrays", "gguf", gguf_set("tokenizer.ggml.merges", ARR, [[1, 2], [3]]), "WS111"),
    Case("gguf-tokenizer-kind", "gguf", gguf_set("tokenizer.ggml.model", STR, "bert"), "WS101",
         commands=GATED + ("export",)),
    Case("gguf-duplicate-key", "gguf", _gguf_duplicate_key, "WS101", per_command={"stamp": "WS300"}),
    Case("gguf-overlap", "gguf", _gguf_overlap, "WS101", per_command={"stamp": "WS300"}),
    Case("gguf-zero-dimension", "gguf", _gguf_zero_dim, "WS101", per_command={"stamp": "WS300"}),
    Case("gguf-layers-2-31", "gguf", gguf_set("llama.block_count", U32, 2**31), "WS112", commands=LOADER + RELEASE),
    Case("gguf-truncated", "gguf", _truncate(None, 3000), "WS101", per_command={"stamp": "WS300"}),
]


def _set_tensor(ck: Path, name: str, value: float) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(ck / "model.safetensors"))
    tensors[name].fill_(value)
    save_file(tensors, str(ck / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def st_base(tmp_path_factory, hf_base):
    from warmstart.release.export import export_checkpoint

    out = tmp_path_factory.mktemp("hostile-st") / "model.safetensors"
    export_checkpoint(hf_base, "safetensors", out, verify=False)
    return out


def _prepare(case: Case, tmp: Path, hf_base: Path, st_base: Path, gguf_base: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    if case.base == "gguf":
        ck = src / "m.gguf"
        shutil.copy(gguf_base, ck)
    elif case.base == "st":
        ck = src / "m.safetensors"
        shutil.copy(st_base, ck)
    elif case.base == "run":
        ck = src / "run"
        shutil.copytree(hf_base, ck / "checkpoints" / "step-000001")
        (ck / "checkpoints" / "latest").write_text("step-000001\n")
    else:
        ck = src / "ck"
        shutil.copytree(hf_base, ck)
    given = case.damage(ck, src)
    return given if isinstance(given, Path) else ck  # a damage returns the path to pass when it is not ``ck``


PARAMS = [pytest.param(case, name, id=f"{case.id}-{name}") for case in CASES for name in case.commands]


@pytest.mark.parametrize("case,name", PARAMS)
def test_hostile_checkpoint(case: Case, name: str, tmp_path, hf_base, st_base, gguf_base, text):
    ckpt = _prepare(case, tmp_path, hf_base, st_base, gguf_base)
    refused_cli(tmp_path, command(name, ckpt, tmp_path, text), case.per_command.get(name, case.code))


# ------------------------------------------------------------------ what is accepted, and reported


def test_an_all_zero_weight_passes_with_the_flag_and_validate_warns(tmp_path, hf, text):
    _set_tensor(hf, "model.layers.0.self_attn.q_proj.weight", 0.0)
    v = cli("validate", hf)
    assert v.exit == 0 and "WARN  values" in v.out and "q_proj.weight: all 4096 values are zero" in v.out, v.text
    o = cli(*command("init", hf, tmp_path, text), "--allow-zero-tensors", "--allow-untrained-init")
    assert o.exit == 0 and "gate values      PASS    all 20 tensors finite\n" in o.out and "done: 1 steps" in o.out, o.text


def test_validate_reports_every_data_quality_signal(tmp_path, hf):
    import torch
    from safetensors.torch import load_file, save_file

    t = load_file(str(hf / "model.safetensors"))
    t["model.layers.0.mlp.up_proj.weight"].fill_(0.25)  # constant
    t["model.layers.0.mlp.down_proj.weight"].mul_(1e-12)  # near-zero norm
    sparse = torch.zeros_like(t["model.layers.1.mlp.up_proj.weight"])
    sparse[0, :3] = 1.0
    t["model.layers.1.mlp.up_proj.weight"] = sparse  # nearly all zeros
    t["model.embed_tokens.weight"][7:10] = 0.0  # dead embedding rows
    save_file(t, str(hf / "model.safetensors"), metadata={"format": "pt"})
    o = cli("validate", hf, "--json")
    assert o.exit == 0, o.text
    signals = json.loads(o.out)["signals"]
    assert any("up_proj.weight: every value is 0.25" in s for s in signals)
    assert any("layers.0.mlp.down_proj.weight: near-zero norm" in s for s in signals)
    assert any("layers.1.mlp.up_proj.weight: 10237 of its 10240 values are zero" in s for s in signals)
    assert any("3 of 512 embedding rows are all zero" in s for s in signals)


def test_sound_checkpoints_of_every_kind_still_pass(tmp_path, hf_base, st_base, gguf_base):
    for ckpt in (hf_base, st_base, gguf_base):
        o = cli("validate", ckpt)
        assert o.exit == 0 and "verdict: PASS" in o.out, o.text
