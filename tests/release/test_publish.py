"""card + qa + publish-check on a good checkpoint: GO only with everything in place."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from warmstart.errors import UsageError
from warmstart.release.card import build_card, write_card
from warmstart.release.publish_check import publish_check, read_front_matter
from warmstart.release.qa import run_qa


@pytest.fixture(scope="module")
def good(ckpt_factory, tmp_path_factory):
    """A trained llama checkpoint, stamped with its parent, with a model card."""
    from warmstart.release.stamp import stamp_checkpoint

    out = tmp_path_factory.mktemp("good") / "release"
    stamp_checkpoint(ckpt_factory("llama", trained=True), out, architecture="llama",
                     parent="HuggingFaceTB/SmolLM2-135M")
    write_card(out, out / "README.md")
    return out


def test_qa_go(good):
    r = run_qa(good)
    assert r["verdict"] == "GO", r["blockers"]
    names = [g.name for g in r["gates"]]
    assert names == ["validate", "finite", "tokenizer", "probe-loss", "generation", "export-safetensors",
                     "metadata", "hf-schema"]
    loss = next(g for g in r["gates"] if g.name == "probe-loss").data
    assert loss["loss"] < loss["ln_v"]


def test_qa_untrained_is_no_go(ckpt_factory):
    r = run_qa(ckpt_factory("qwen3"))
    assert r["verdict"] == "NO-GO" and r["exit_code"] == 1
    failed = {g.name for g in r["gates"] if g.status == "FAIL"}
    assert "probe-loss" in failed and "metadata" in failed


def test_card_front_matter_and_sections(good):
    text = (good / "README.md").read_text()
    meta, problem = read_front_matter(text)
    assert meta is not None, problem
    assert meta["license"] == "apache-2.0"
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M"
    assert meta["datasets"] == ["tests/release corpus"]
    assert "warmstart" in meta["tags"] and "llama" in meta["tags"]
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert {m["type"] for m in metrics} == {"loss", "perplexity"}
    for section in ("## Intended use and limits", "## Training procedure", "## Loss trajectory", "## Data",
                    "## How to use", "## Reproduce"):
        assert section in text
    assert "AutoModelForCausalLM.from_pretrained" in text


def test_card_refuses_overwrite(good):
    before = (good / "README.md").read_text()
    with pytest.raises(UsageError):
        write_card(good, good / "README.md")
    assert (good / "README.md").read_text() == before
    write_card(good, good / "README.md", force=True)


def test_card_from_run_dir(good, tmp_path):
    """Inside RUN_DIR/checkpoints/step-NNNNNN the card reads config.yaml and metrics.jsonl."""
    import shutil

    run = tmp_path / "run"
    step = run / "checkpoints" / "step-000080"
    shutil.copytree(good, step)
    (step / "README.md").unlink()
    (run / "config.yaml").write_text(yaml.safe_dump({"preset": "llama-tiny", "lr": 0.003, "max_steps": 80}))
    rows = [{"step": 0, "val_loss": 5.8, "tokens_seen": 0}]
    rows += [{"step": s, "loss": 5.0 - s / 40, "lr": 0.003, "tokens_seen": s * 512} for s in range(10, 90, 10)]
    rows += [{"step": 80, "val_loss": 2.1, "tokens_seen": 80 * 512}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text = build_card(step)
    assert "| preset | llama-tiny |" in text
    assert "| 80 | 40960 |" in text and "2.1000" in text
    assert "warmstart pretrain --config" in text


def test_publish_check_go(good):
    r = publish_check(good, env={"HF_TOKEN": "hf_dummy"})
    assert r["verdict"] == "GO", r["blockers"]
    assert [g.name for g in r["gates"]] == ["validate", "quality", "qa", "model-card", "hf-token", "smoke-gen",
                                            "export"]


def test_publish_check_cli_env(good):
    """HF_TOKEN through the environment of a real process; without it: NO-GO naming the fix."""
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    rep = publish_check(good, env=env)
    assert rep["verdict"] == "NO-GO" and rep["exit_code"] == 1
    assert len(rep["blockers"]) == 1 and rep["blockers"][0].startswith("hf-token:")
    assert "export HF_TOKEN" in rep["blockers"][0]
    p = subprocess.run([sys.executable, "-m", "warmstart", "publish-check", str(good)],
                       capture_output=True, text=True, env={**env, "HF_TOKEN": "hf_dummy"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verdict: GO" in p.stdout


def test_publish_check_missing_card_and_provenance(ckpt_factory):
    r = publish_check(ckpt_factory("qwen3"), env={})
    assert r["verdict"] == "NO-GO"
    blockers = "\n".join(r["blockers"])
    assert "model-card" in blockers and "warmstart card" in blockers
    assert "hf-token" in blockers and "quality" in blockers
    assert r["stamp_recipe"] and "--license LICENSE" in r["stamp_recipe"]
