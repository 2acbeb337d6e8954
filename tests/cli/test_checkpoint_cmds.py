"""`warmstart inspect / eval / generate` through a real subprocess (`python -m warmstart`)."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys

import pytest
import torch


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "warmstart", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_help_has_examples():
    for cmd in ("inspect", "eval", "generate"):
        r = run(cmd, "--help")
        assert r.returncode == 0, r.stderr
        assert "Examples" in r.stdout and f"warmstart {cmd}" in r.stdout


def test_inspect_json(tiny_hf_dir):
    r = run("inspect", tiny_hf_dir, "--json", "--tensors")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["format"] == "hf-dir"
    assert {"where": "config.json architectures", "value": "LlamaForCausalLM"} in s["declared_claims"]
    assert s["family"]["declared"] == "llama" and s["family"]["evidence"] == "llama"
    assert s["dtypes"] == {"F32": len(s["tensors"])}
    assert s["tokenizer"]["present"] is True
    assert s["model"]["hidden_size"] == 64
    assert s["lineage"] == {"parent": None, "chain": []}
    names = {t["name"] for t in s["tensors"]}
    assert "model.layers.1.mlp.down_proj.weight" in names
    from warmstart.arch import CausalLM, get_preset

    assert s["parameters"] == CausalLM(get_preset("llama-tiny")).num_parameters()


def test_inspect_human_and_quality(tiny_hf_dir):
    r = run("inspect", tiny_hf_dir, "--tensors")
    assert r.returncode == 0, r.stderr
    assert "hf-dir" in r.stdout and "LlamaForCausalLM" in r.stdout and "model.norm.weight" in r.stdout
    r = run("inspect", tiny_hf_dir, "--quality", "--json")
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)["quality"]
    assert 0 <= q["score"] <= 100


def test_eval_json(tmp_path, tiny_hf_dir):
    text = tmp_path / "corpus"
    text.mkdir()
    (text / "a.py").write_text("def f(x):\n    return x * 2\n" * 40)
    (text / "b.py").write_text("import os\nprint(os.getcwd())\n" * 40)
    (text / "skip.txt").write_text("not python")
    r = run("eval", tiny_hf_dir, "--data", text, "--seq-len", "64", "--batch-size", "2", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["files"] == 2 and res["tokens"] > 100
    assert math.isclose(res["perplexity"], math.exp(res["loss"]), rel_tol=1e-9)
    # random weights: loss near ln V
    assert abs(res["loss"] - math.log(512)) < 2.0
    r = run("eval", tiny_hf_dir, "--data", text / "a.py", "--max-tokens", "50", "--json")
    assert json.loads(r.stdout)["tokens"] == 49


def test_eval_matches_direct_computation(tmp_path, tiny_hf_dir, tiny_tokenizer):
    from warmstart.checkpoint import load_checkpoint
    from warmstart.init.population import populate_model

    f = tmp_path / "t.txt"
    f.write_text("hello world, " * 50)
    r = run("eval", tiny_hf_dir, "--data", f, "--seq-len", "1000", "--json")
    res = json.loads(r.stdout)
    ids = torch.tensor([tiny_tokenizer.encode(f.read_text()).ids])
    model = populate_model(load_checkpoint(tiny_hf_dir)).eval()
    with torch.no_grad():
        expected = model.loss(ids[:, :-1], ids[:, 1:]).item()
    assert res["tokens"] == ids.shape[1] - 1
    assert abs(res["loss"] - expected) < 1e-4


def test_generate(tiny_hf_dir):
    r = run("generate", tiny_hf_dir, "--prompt", "def f(", "--max-new-tokens", "8", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert 1 <= out["new_tokens"] <= 8
    a = run("generate", tiny_hf_dir, "--prompt", "x", "--max-new-tokens", "8", "--temperature", "1.0",
            "--seed", "3", "--json")
    b = run("generate", tiny_hf_dir, "--prompt", "x", "--max-new-tokens", "8", "--temperature", "1.0",
            "--seed", "3", "--json")
    assert json.loads(a.stdout)["token_ids"] == json.loads(b.stdout)["token_ids"]
    r = run("generate", tiny_hf_dir, "--prompt", "x")
    assert r.returncode == 0 and "tokens in" in r.stdout


# ------------------------------------------------------------ bad inputs


def _corrupt_files(tmp_path, tiny_hf_dir, tiny_model_factory):
    good = (tiny_hf_dir / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8:8 + n])
    files = {}
    files["truncated.safetensors"] = good[: len(good) // 2]
    files["wrong_magic.gguf"] = b"GGUX" + bytes(range(4, 200))
    files["header_too_long.safetensors"] = struct.pack("<Q", len(good) * 3) + good[8:]
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [d + 1 for d in header[name]["shape"]]
    raw = json.dumps(header).encode()
    files["shape_mismatch.safetensors"] = struct.pack("<Q", len(raw)) + raw + good[8 + n:]
    paths = {}
    for fname, data in files.items():
        p = tmp_path / fname
        p.write_bytes(data)
        paths[fname] = p
    pkl = tmp_path / "pytorch_model.bin"
    torch.save(tiny_model_factory("llama-tiny").state_dict(), pkl)
    paths["pickle"] = pkl
    return paths


@pytest.mark.parametrize("cmd", ["inspect", "eval"])
def test_corrupt_inputs_exit_2_without_traceback(tmp_path, tiny_hf_dir, tiny_model_factory, cmd):
    paths = _corrupt_files(tmp_path, tiny_hf_dir, tiny_model_factory)
    expected = {
        "truncated.safetensors": ("WS101", "truncated"),
        "wrong_magic.gguf": ("WS101", "not a recognised checkpoint format"),
        "header_too_long.safetensors": ("WS101", "larger than the file"),
        "shape_mismatch.safetensors": ("WS101", "needs"),
        "pickle": ("WS100", "pickle"),
    }
    extra = ["--data", tmp_path / "truncated.safetensors"] if cmd == "eval" else []
    for key, (code, words) in expected.items():
        r = run(cmd, paths[key], *extra)
        assert r.returncode == 2, (key, r.stdout, r.stderr)
        assert code in r.stderr and words in r.stderr, (key, r.stderr)
        assert str(paths[key]) in r.stderr
        assert "Traceback" not in r.stderr + r.stdout


def test_trust_pickle_inspect(tmp_path, tiny_model_factory):
    model = tiny_model_factory("llama-tiny")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(model.cfg.to_hf_config()))
    r = run("inspect", tmp_path / "pytorch_model.bin", "--trust-pickle", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["format"] == "pickle"


def test_missing_path_and_bad_device(tmp_path, tiny_hf_dir):
    r = run("inspect", tmp_path / "nope")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run("eval", tiny_hf_dir, "--data", tmp_path / "nope.txt")
    assert r.returncode == 2 and "WS002" in r.stderr


def test_eval_and_generate_run_the_tokenizer_gate(tmp_path, tiny_hf_dir):
    import shutil

    ckpt = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_hf_dir, ckpt)
    (ckpt / "tokenizer.json").unlink()
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 20)
    for args in (("eval", ckpt, "--data", text), ("generate", ckpt, "--prompt", "x")):
        r = run(*args)
        assert r.returncode == 1 and "[WS104]" in r.stderr and "--tokenizer" in r.stderr, r.stderr
    r = run("eval", ckpt, "--data", text, "--tokenizer", tmp_path / "missing.json")
    assert r.returncode == 2 and "[WS002]" in r.stderr
    r = run("eval", ckpt, "--data", text, "--tokenizer", tiny_hf_dir / "tokenizer.json", "--json")
    assert r.returncode == 0, r.stderr


# --------------------------------------------------- what inspect shows, never failing on a readable file


def _gguf_with_tokenizer(path, kind: str, arch: str | None = None):
    """A llama-tiny GGUF whose tokenizer is ``kind`` (a SentencePiece vocabulary, relabelled when not "llama")."""
    import inspect as source
    import textwrap

    from _gguf_tools import spm_vocab, write_tiny_gguf

    from warmstart.arch import CausalLM, get_preset

    model = CausalLM(get_preset("llama-tiny").replace(bos_token_id=1, eos_token_id=2))
    model.reset_parameters(seed=0)
    vocab = spm_vocab([source.getsource(textwrap)])
    write_tiny_gguf(path, model, spm=vocab, arch=arch, spm_flags={"model": kind})
    return path


def test_inspect_shows_an_unsupported_family_and_tokenizer(tmp_path):
    path = _gguf_with_tokenizer(tmp_path / "falcon.gguf", "t5", arch="falcon")
    r = run("inspect", path, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["family"]["declared"] == "falcon" and s["family"]["kind"] == "unsupported-decoder"
    assert s["family"]["evidence"] == "llama"  # the tensors are still read and judged
    assert s["model"] is None and "[WS102]" in s["config_error"] and s["config"]["hidden_size"] == 64
    tok = s["tokenizer"]
    assert tok["kind"] == "t5" and tok["supported"] is False and "[WS101]" in tok["error"]
    assert tok["tokens"] == 512 and tok["bos_token_id"] == 1 and tok["eos_token_id"] == 2
    human = run("inspect", path)
    assert human.returncode == 0, human.stderr
    assert "not supported" in human.stdout and "declared shape" in human.stdout and "Falcon" in human.stdout


def test_inspect_shows_a_sentencepiece_tokenizer(tmp_path):
    r = run("inspect", _gguf_with_tokenizer(tmp_path / "spm.gguf", "llama"), "--json")
    assert r.returncode == 0, r.stderr
    tok = json.loads(r.stdout)["tokenizer"]
    assert (tok["kind"], tok["supported"], tok["present"], tok["vocab_size"]) == ("llama", True, True, 512)
    assert tok["kind_name"] == "SentencePiece BPE with byte fallback"


def test_tokenizer_flag_overrides_a_kind_warmstart_cannot_build(tmp_path, tiny_tokenizer):
    path = _gguf_with_tokenizer(tmp_path / "t5.gguf", "t5")
    text = tmp_path / "a.py"
    text.write_text("def f(x):\n    return x * 2\n" * 20)
    refused = run("eval", path, "--data", text)
    assert refused.returncode == 2 and "[WS101]" in refused.stderr and "--tokenizer" in refused.stderr
    tiny_tokenizer.save(str(tmp_path / "tokenizer.json"))
    r = run("eval", path, "--data", text, "--tokenizer", tmp_path / "tokenizer.json", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tokens"] > 10
