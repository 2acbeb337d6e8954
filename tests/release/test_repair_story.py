"""The motivating failure (README): a Qwen2 checkpoint whose metadata says LlamaForCausalLM.

quality flags hf_identity, publish-check says NO-GO and prints the stamp recipe; the warm-start
gate's exact repair line works; afterwards identity is full and tensor hashes are unchanged."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys

import pytest

from warmstart.checkpoint import read_structure, tensor_hashes
from warmstart.release.publish_check import publish_check
from warmstart.release.quality import quality_report


@pytest.fixture()
def mislabelled(ckpt_factory, tmp_path):
    src = ckpt_factory("qwen2", trained=True)
    bad = tmp_path / "qwen2-as-llama"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["LlamaForCausalLM"], "llama"
    (bad / "config.json").write_text(json.dumps(cfg, indent=2))
    ws = json.loads((bad / "warmstart.json").read_text())
    ws.update({"architecture": "llama", "hf_architecture": "LlamaForCausalLM", "model_type": "llama"})
    (bad / "warmstart.json").write_text(json.dumps(ws, indent=2))
    return bad


def test_repair_story(mislabelled, tmp_path):
    q = quality_report(mislabelled)
    idn = q["dimensions"]["hf_identity"]
    assert idn["score"] == 0 and idn["evidence"]["family"] == "qwen2"
    assert any("contradicts the tensors" in m for m in idn["missing"])
    assert "--architecture qwen2 --hf-architecture Qwen2ForCausalLM --model-type qwen2" in q["stamp_recipe"]

    r = publish_check(mislabelled, env={})
    assert r["verdict"] == "NO-GO" and r["exit_code"] == 1
    assert "--architecture qwen2 --hf-architecture Qwen2ForCausalLM --model-type qwen2" in r["stamp_recipe"]
    quality_gate = next(g for g in r["gates"] if g.name == "quality")
    assert quality_gate.status == "FAIL" and "warmstart stamp" in quality_gate.fix

    # the exact line the warm-start gate prints
    from warmstart.init.gates import repair_command

    line = repair_command(mislabelled, "qwen2")
    assert line.startswith("warmstart stamp ") and " -o " in line
    before = tensor_hashes(read_structure(mislabelled))
    argv = shlex.split(line)
    proc = subprocess.run([sys.executable, "-m", "warmstart", *argv[1:]], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    fixed = mislabelled.with_name(mislabelled.name + "-fixed")
    assert fixed.is_dir()
    assert tensor_hashes(read_structure(fixed)) == before
    q2 = quality_report(fixed)
    assert q2["dimensions"]["hf_identity"]["score"] == 20
    assert q2["score"] == 100
    cfg = json.loads((fixed / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["model_type"] == "qwen2"
