"""`warmstart pretrain / prepare / plot` end to end, as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _corpus import make_corpus

_LAUNCH = ["-m", "warmstart"]


def ws(*args, env=None, timeout=300, check=True) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.pop("WARMSTART_DEBUG", None)
    e.update(env or {})
    p = subprocess.run([sys.executable, *_LAUNCH, *map(str, args)], capture_output=True, text=True,
                       env=e, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def popen(*args, env=None) -> subprocess.Popen:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.Popen([sys.executable, *_LAUNCH, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def tiny_args(corpus, cache, out, *extra):
    return ["pretrain", "--data", corpus, "--preset", "llama-tiny", "--vocab-size", 400, "--seq-len", 32,
            "--batch-size", 4, "--eval-tokens", 128, "--log-every", 1, "--cache-dir", cache, "--out", out, *extra]


def hf_logits_match(ckpt: Path) -> float:
    from transformers import AutoModelForCausalLM

    from warmstart.arch import CausalLM, ModelConfig
    from safetensors.torch import load_file

    cfg = ModelConfig.from_hf_config(json.loads((ckpt / "config.json").read_text()))
    ours = CausalLM(cfg)
    missing, unexpected = ours.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected
    ours.eval()
    hf = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    x = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (hf(x).logits - ours(x)).abs().max().item()


def test_pretrain_eval_checkpoint_resume_and_hf_load(corpus, tmp_path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    p = ws(*tiny_args(corpus, cache, run, "--max-steps", 4, "--lr-decay-steps", 6, "--save-every", 2,
                      "--eval-every", 2, "--license", "apache-2.0"))
    out = p.stdout
    assert "step 0 val_loss" in out and "random init ≈ ln V" in out
    assert "step 4/4" in out and "val_loss" in out  # plain progress lines when stdout is not a TTY
    assert "best checkpoint:" in out and "done: 4 steps" in out
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000004"
    assert (run / "config.yaml").is_file() and (run / "tokenizer.json").is_file()
    r = ws("pretrain", "--resume", run, "--max-steps", 6)
    assert "resuming" in r.stdout and "done: 6 steps" in r.stdout
    ck = run / "checkpoints" / "step-000006"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000006"
    assert json.loads((ck / "warmstart.json").read_text())["license"] == "apache-2.0"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 6 and steps.count(4) == 1
    assert hf_logits_match(ck) <= 1e-4
    # plot
    png = tmp_path / "c.png"
    ws("plot", run, "-o", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_yaml_and_flag_override(corpus, tmp_path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    y = tmp_path / "run.yaml"
    y.write_text(f"preset: llama-tiny\ndata: {corpus}\nvocab_size: 400\nseq_len: 32\nbatch_size: 2\n"
                 f"max_steps: 50\nlr: 0.002\neval_tokens: 64\ncache_dir: {cache}\nsave_every: 0\n")
    ws("pretrain", "--config", y, "--max-steps", 2, "--out", run)
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["max_steps"] == 2 and saved["lr"] == 0.002 and saved["batch_size"] == 2
    assert (run / "checkpoints" / "step-000002").is_dir()


def test_prepare_then_pretrain_on_the_cache(corpus, tmp_path):
    cache = tmp_path / "cache"
    p = ws("prepare", "--data", corpus, "--vocab-size", 400, "--seq-len", 32, "--cache-dir", cache)
    path = [line.split("cache: ", 1)[1] for line in p.stdout.splitlines() if line.startswith("cache: ")][0]
    assert (Path(path) / "manifest.json").is_file() and (Path(path) / "tokenizer.json").is_file()
    assert list((Path(path) / "shards").glob("*.bin"))
    printed = p.stdout.split("fingerprint ", 1)[1].split()[0]
    run = tmp_path / "run"
    r = ws("pretrain", "--data", path, "--preset", "llama-tiny", "--seq-len", 32, "--batch-size", 2,
           "--max-steps", 1, "--eval-tokens", 64, "--out", run)
    assert "using prepared token cache" in r.stdout
    prov = json.loads((run / "checkpoints" / "step-000001" / "warmstart.json").read_text())
    assert prov["data_fingerprint"] == printed


def test_errors_are_one_paragraph(corpus, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.py").write_bytes(b"\x00\x01")
    p = ws(*tiny_args(bad, tmp_path / "cache", tmp_path / "run", "--max-steps", 1), check=False)
    assert p.returncode == 2 and "[WS202]" in p.stderr and "Traceback" not in p.stderr
    p = ws("pretrain", "--resume", tmp_path / "nowhere", check=False)
    assert p.returncode == 2 and "[WS203]" in p.stderr and "Traceback" not in p.stderr
    p = ws("pretrain", "--preset", "nope", "--data", corpus, "--cache-dir", tmp_path / "cache", check=False)
    assert p.returncode == 2 and "unknown preset" in p.stderr
    p = ws("plot", tmp_path, check=False)
    assert p.returncode == 2 and "metrics.jsonl" in p.stderr
    h = ws("pretrain", "--help")
    assert "Examples" in h.stdout and "--resume" in h.stdout


def test_sigkill_during_checkpoint_write_leaves_previous_checkpoint(corpus, tmp_path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    proc = popen(*tiny_args(corpus, cache, run, "--max-steps", 4, "--save-every", 2),
                 env={"WARMSTART_TEST_SLOW_SAVE": "60@4"})
    ck = run / "checkpoints"
    deadline = time.time() + 240
    partial = None
    try:
        while time.time() < deadline:
            partial = [p for p in ck.glob(".step-000004.partial-*") if (p / "trainer_state" / "state.json").exists()]
            if partial:
                break
            if proc.poll() is not None:
                raise AssertionError(f"run ended early: {proc.communicate()}")
            time.sleep(0.1)
        assert partial, "the save of step 4 never started"
        os.kill(proc.pid, signal.SIGKILL)  # mid-write: every file of step 4 exists, nothing renamed yet
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (ck / "latest").read_text().strip() == "step-000002"
    assert not (ck / "step-000004").exists()
    assert hf_logits_match(ck / "step-000002") <= 1e-4  # the previous checkpoint loads, in transformers too
    r = ws("pretrain", "--resume", run)
    assert "resuming" in r.stdout and "step-000002" in r.stdout
    assert (ck / "latest").read_text().strip() == "step-000004"
    assert not list(ck.glob(".*"))  # leftovers of the killed save are cleaned
    # The killed-and-resumed run's per-step losses equal an uninterrupted run's, exactly.
    ref = tmp_path / "ref"
    ws(*tiny_args(corpus, cache, ref, "--max-steps", 4, "--save-every", 2))

    def losses(run):
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in recs if "loss" in r]

    assert losses(run) == losses(ref) and [s for s, _ in losses(ref)] == [1, 2, 3, 4]


def test_cli_defaults_match_trainconfig():
    """`--help` shows the defaults that TrainConfig really uses."""
    import dataclasses

    import typer

    import warmstart.cli.train_cmds  # noqa: F401
    from warmstart.cli import app
    from warmstart.train import TrainConfig

    cmd = typer.main.get_command(app).commands["pretrain"]
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(TrainConfig)}
    checked = 0
    for param in cmd.params:
        name = {"compile_": "compile", "config_": "config"}.get(param.name, param.name)
        if name in defaults and name != "max_time":
            want = defaults[name]
            got = param.default
            if isinstance(want, list):
                got = list(got or [])
            assert got == want, (name, got, want)
            checked += 1
    assert checked >= 40


def _pretrain_command():
    import typer

    import warmstart.cli.train_cmds  # noqa: F401
    from warmstart.cli import app

    return typer.main.get_command(app).commands


def test_every_trainconfig_field_is_a_generated_option():
    """Defaults, help and spellings come from TrainConfig's declarations; --config/--quiet/--nproc-per-node
    are CLI-only (how to run this invocation, not settings of the run)."""
    import dataclasses

    from warmstart.train import TrainConfig

    commands = _pretrain_command()
    params = {p.name: p for p in commands["pretrain"].params}
    fields = dataclasses.fields(TrainConfig)
    assert set(params) == {f.name for f in fields} | {"config", "quiet", "nproc_per_node"}
    for f in fields:
        p = params[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert (list(p.default or []) if isinstance(default, list) else p.default) == default, f.name
        assert p.help == f.metadata["help"] and p.help, f.name
        assert "--" + f.name.replace("_", "-") in p.opts, (f.name, p.opts)
    assert params["warmup_steps"].opts == ["--warmup-steps", "--warmup"]
    assert params["compile"].secondary_opts == ["--no-compile"]
    assert params["activation_checkpointing"].secondary_opts == ["--no-activation-checkpointing"]
    assert params["allow_untrained_init"].is_flag and not params["allow_untrained_init"].secondary_opts
    assert params["quiet"].opts == ["--quiet", "-q"] and params["config"].opts == ["--config"]
    assert params["nproc_per_node"].opts == ["--nproc-per-node"] and params["nproc_per_node"].default == 1
    assert params["data"].multiple and params["include"].multiple
    # prepare reuses the corpus declarations (three with their own wording)
    prep = {p.name: p for p in commands["prepare"].params}
    assert set(prep) == {"data", "include", "text_field", "tokenizer", "vocab_size", "seq_len", "val_fraction",
                         "max_corpus_bytes", "cache_dir", "workers", "skip_bad_records", "rebuild", "list_", "clean",
                         "quiet"}
    for name in ("include", "text_field", "vocab_size", "val_fraction", "max_corpus_bytes", "cache_dir", "workers",
                 "skip_bad_records"):
        assert (prep[name].help, prep[name].default) == (params[name].help, params[name].default), name
    assert prep["seq_len"].default == 128 and prep["seq_len"].help != params["seq_len"].help


def test_only_typed_flags_are_explicit():
    """Flags override --config, which overrides a resumed run's config.yaml: only typed flags count."""
    from warmstart.cli.train_cmds import _explicit

    cmd = _pretrain_command()["pretrain"]
    ctx = cmd.make_context("pretrain", ["--lr", "0.1", "--warmup", "3", "--no-compile", "--data", "a", "--data", "b",
                                        "--max-time", "15m", "-q"])
    values = dict(ctx.params)
    assert values.pop("quiet") is True and values.pop("config") is None
    assert _explicit(ctx, values) == {"lr": 0.1, "warmup_steps": 3, "compile": False, "data": ["a", "b"],
                                      "max_time": "15m"}
    ctx = cmd.make_context("pretrain", [])
    assert _explicit(ctx, {k: v for k, v in ctx.params.items() if k not in ("config", "quiet")}) == {}


def test_pretrain_help_lists_every_option_with_its_help():
    import dataclasses

    from typer.testing import CliRunner

    from warmstart.cli import app
    from warmstart.train import TrainConfig

    _pretrain_command()
    res = CliRunner().invoke(app, ["pretrain", "--help"], env={"COLUMNS": "300"}, prog_name="warmstart")
    assert res.exit_code == 0, res.output
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in res.output, f.name
        assert f.metadata["help"][:40] in res.output, f.name
    assert "--config" in res.output and "--quiet" in res.output and "Examples" in res.output
