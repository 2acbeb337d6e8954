"""Hugging Face cache ids (``ORG/NAME``, ``ORG/NAME@REVISION``) resolved offline from a cache on disk in the
real layout (models--ORG--NAME/{blobs, snapshots/<commit>, refs/main}), by every command that takes a
checkpoint; not cached: exit 2 with the download command; a local path always wins."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from _ckpt_tools import add_to_cache, ws

from warmstart.checkpoint import load_checkpoint, resolve_checkpoint_path
from warmstart.checkpoint.hub import is_hub_id
from warmstart.errors import UnreadableError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_hf_dir, tiny_model_factory, tiny_tokenizer):
    """A cache holding Org/Tiny (llama-tiny) at main and a qwen2-tiny at the tag v2, via HF_HUB_CACHE."""
    from warmstart.checkpoint.write import save_hf_checkpoint

    cache = tmp_path / "hf-cache"
    add_to_cache(cache, "Org/Tiny", tiny_hf_dir, COMMIT)
    qwen = tiny_model_factory("qwen2-tiny")
    save_hf_checkpoint(tmp_path / "qwen", qwen.cfg, qwen.canonical_state_dict(), tokenizer=tiny_tokenizer)
    add_to_cache(cache, "Org/Tiny", tmp_path / "qwen", OTHER, refs=("v2",))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_hub_ids_and_paths():
    for text in ("Qwen/Qwen2.5-0.5B", "Org/Tiny@main", "HuggingFaceTB/SmolLM2-135M@refs/pr/1", "a/b@0123abc"):
        assert is_hub_id(text), text
    for text in ("./Org/Tiny", "/abs/path", "runs/x/model.gguf", "one", "a/b/c", "~/x/y", "dir/model.safetensors"):
        assert not is_hub_id(text), text


def test_ids_resolve_to_snapshots(hub_cache):
    main = hub_cache / "models--Org--Tiny" / "snapshots" / COMMIT
    for spec in ("Org/Tiny", "Org/Tiny@main", f"Org/Tiny@{COMMIT}", f"Org/Tiny@{COMMIT[:8]}", "org/tiny"):
        assert resolve_checkpoint_path(spec) == main, spec
    assert resolve_checkpoint_path("Org/Tiny@v2") == hub_cache / "models--Org--Tiny" / "snapshots" / OTHER
    assert load_checkpoint("Org/Tiny").model_config().family == "llama"
    assert load_checkpoint("Org/Tiny@v2").model_config().family == "qwen2"


def test_hf_home_layout(tmp_path, monkeypatch, tiny_hf_dir):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    snapshot = add_to_cache(tmp_path / "hf-home" / "hub", "Org/Tiny", tiny_hf_dir, COMMIT)
    assert resolve_checkpoint_path("Org/Tiny") == snapshot


def test_not_cached_names_the_download_command(hub_cache):
    with pytest.raises(UnreadableError) as err:
        resolve_checkpoint_path("Org/Missing")
    assert err.value.exit_code == 2 and "`hf download Org/Missing`" in str(err.value)
    assert "huggingface-cli download Org/Missing" in str(err.value) and "never downloads" in str(err.value)
    with pytest.raises(UnreadableError) as err:
        resolve_checkpoint_path("Org/Tiny@dev")
    assert "`hf download Org/Tiny --revision dev`" in str(err.value)
    assert f"main ({COMMIT[:12]})" in str(err.value) and f"v2 ({OTHER[:12]})" in str(err.value)


def test_a_local_path_wins(hub_cache, tmp_path, monkeypatch, tiny_model_factory, tiny_tokenizer):
    from warmstart.checkpoint.write import save_hf_checkpoint

    qwen = tiny_model_factory("qwen3-tiny")
    save_hf_checkpoint(tmp_path / "Org" / "Tiny", qwen.cfg, qwen.canonical_state_dict(), tokenizer=tiny_tokenizer)
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint_path("Org/Tiny") == Path("Org/Tiny")
    assert load_checkpoint("Org/Tiny").model_config().family == "qwen3"


def test_every_command_takes_an_id(hub_cache, tmp_path, corpus):
    """inspect, validate, eval, generate, stamp, export, qa and pretrain --init, through the CLI."""
    assert os.environ["HF_HUB_CACHE"] == str(hub_cache)  # ws() passes the environment on
    out = json.loads(ws("inspect", "Org/Tiny@v2", "--json", cwd=tmp_path).stdout)
    assert out["family"]["declared"] == "qwen2" and f"snapshots/{OTHER}" in out["resolved"]
    ws("validate", "Org/Tiny", cwd=tmp_path)
    loss = json.loads(ws("eval", "Org/Tiny", "--data", str(corpus), "--max-tokens", "200", "--seq-len", "64",
                         "--json", cwd=tmp_path).stdout)["loss"]
    assert loss > 0
    ws("generate", "Org/Tiny", "--prompt", "def ", "--max-new-tokens", "4", cwd=tmp_path)
    ws("stamp", "Org/Tiny", "--license", "mit", "-o", "stamped", cwd=tmp_path)
    ws("export", "Org/Tiny", "--to", "safetensors", "-o", "tiny.safetensors", cwd=tmp_path)
    qa = ws("qa", "Org/Tiny", "--json", cwd=tmp_path, check=False)
    assert qa.returncode in (0, 1) and json.loads(qa.stdout)["path"].endswith(COMMIT)
    run = ws("pretrain", "--init", f"Org/Tiny@{COMMIT[:10]}", "--data", str(corpus), "--max-steps", "1",
             "--seq-len", "32", "--batch-size", "2", "--eval-tokens", "256", "--val-fraction", "0.3",
             "--save-every", "0", "--allow-untrained-init", "--out", "run", cwd=tmp_path)
    assert "step 0 val_loss" in run.stdout + run.stderr
    missing = ws("inspect", "Org/Missing", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "hf download Org/Missing" in missing.stderr


def test_repair_of_a_cached_checkpoint_names_the_id_and_writes_outside_the_cache(hub_cache, tmp_path, tiny_hf_dir):
    from _ckpt_tools import rewrite_config

    from warmstart.errors import EvidenceError
    from warmstart.init.gates import prepare_warm_start

    relabelled = tmp_path / "relabelled"
    shutil.copytree(tiny_hf_dir, relabelled)
    rewrite_config(relabelled, architectures=["Qwen2ForCausalLM"], model_type="qwen2")
    (relabelled / "warmstart.json").unlink()
    add_to_cache(hub_cache, "Org/Relabelled", relabelled, COMMIT)
    with pytest.raises(EvidenceError) as err:
        prepare_warm_start("Org/Relabelled")
    assert (f"`warmstart stamp Org/Relabelled@{COMMIT} --architecture llama --hf-architecture LlamaForCausalLM "
            "--model-type llama -o Relabelled-fixed`") in str(err.value)
    ws("stamp", f"Org/Relabelled@{COMMIT}", "--architecture", "llama", "-o", "Relabelled-fixed", cwd=tmp_path)
    assert prepare_warm_start(tmp_path / "Relabelled-fixed").config.family == "llama"
