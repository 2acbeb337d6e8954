"""CLI: validate / stamp / export / qa / card / publish-check — help, exit codes, one-paragraph errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _load_release_fixtures():
    """tests/release/conftest.py under its own module name (every conftest is called 'conftest')."""
    import importlib.util

    name = "warmstart_tests_release_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "release" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


_fx = _load_release_fixtures()
ckpt_factory, tokenizer = _fx.ckpt_factory, _fx.tokenizer  # shared fixtures

COMMANDS = ["validate", "stamp", "export", "qa", "card", "publish-check"]


def run(capsys, *args) -> tuple[int, str, str]:
    from warmstart.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_has_examples(cmd, capsys):
    code, out, _ = run(capsys, cmd, "--help")
    assert code == 0 and "Examples" in out and f"warmstart {cmd}" in out


def test_validate_json(ckpt_factory, capsys):
    code, out, _ = run(capsys, "validate", ckpt_factory("llama"), "--json")
    rep = json.loads(out)
    assert code == 0 and rep["verdict"] == "PASS" and rep["format"] == "hf-dir"
    assert [c["name"] for c in rep["checks"]][:4] == ["structure", "readable", "family", "shapes"]


def test_stamp_cli(ckpt_factory, tmp_path, capsys):
    src = ckpt_factory("qwen2")
    out = tmp_path / "fixed"
    code, text, err = run(capsys, "stamp", src, "--architecture", "Qwen2ForCausalLM", "--license", "mit",
                          "--data-source", "a", "--data-source", "b", "--data-license", "cc0-1.0", "-o", out)
    assert code == 0, err
    assert "byte-identical" in text and "sha256 verified" in text
    ws = json.loads((out / "warmstart.json").read_text())
    assert ws["data_sources"] == ["a", "b"] and ws["hf_architecture"] == "Qwen2ForCausalLM"
    # contradicting claim: exit 1, one paragraph naming both sides
    code, _, err = run(capsys, "stamp", src, "--architecture", "llama", "-o", tmp_path / "x")
    assert code == 1 and err.startswith("error: [WS103]") and "qwen2" in err and "llama" in err
    assert "--force" in err and not (tmp_path / "x").exists()
    # its own input: exit 2
    code, _, err = run(capsys, "stamp", src, "--license", "mit", "-o", src)
    assert code == 2 and "is the input" in err
    # nothing to stamp
    code, _, err = run(capsys, "stamp", src, "-o", tmp_path / "y")
    assert code == 2 and "nothing to stamp" in err


def test_export_cli(ckpt_factory, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    code, text, err = run(capsys, "export", ckpt_factory("qwen3"), "--to", "gguf", "--dtype", "q8_0", "-o", out)
    assert code == 0, err
    assert "logits equal" in text and "tokenizer ids equal" in text and out.is_file()
    code, _, err = run(capsys, "export", ckpt_factory("qwen3"), "--to", "safetensors", "--dtype", "q8_0",
                       "-o", tmp_path / "m.safetensors")
    assert code == 2 and "GGUF quantisation" in err
    code, _, err = run(capsys, "export", tmp_path / "missing", "--to", "gguf", "-o", tmp_path / "z.gguf")
    assert code == 2 and "no such file" in err


def test_card_cli(ckpt_factory, tmp_path, capsys):
    out = tmp_path / "README.md"
    code, _, err = run(capsys, "card", ckpt_factory("llama", trained=True), "-o", out)
    assert code == 0, err
    assert out.read_text().startswith("---\nlicense: apache-2.0\n")
    code, _, err = run(capsys, "card", ckpt_factory("llama", trained=True), "-o", out)
    assert code == 2 and "--force" in err


def test_qa_and_publish_check_cli(ckpt_factory, capsys, monkeypatch):
    src = ckpt_factory("qwen3")
    code, out, _ = run(capsys, "qa", src)
    assert code == 1 and "verdict: NO-GO" in out and "FAIL  probe-loss" in out
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code, out, _ = run(capsys, "publish-check", src)
    assert code == 1 and "verdict: NO-GO" in out and "blockers:" in out and "stamp recipe: warmstart stamp" in out


def test_module_entry_point(tmp_path):
    """`python -m warmstart validate` on a missing path: exit 2, one paragraph on stderr."""
    p = subprocess.run([sys.executable, "-m", "warmstart", "validate", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("error: [WS101]") and "Traceback" not in p.stderr
