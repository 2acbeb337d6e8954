"""The hostile-input suite itself: enough cases, every command and category covered, every code documented."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from _hostile import DOCUMENTED


def _module(name: str):
    """A sibling test module (pytest imports them by path, not by name)."""
    spec = importlib.util.spec_from_file_location(f"hostile_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_checkpoints, _options, _runs = _module("test_checkpoints"), _module("test_options"), _module("test_runs")
_data = _module("test_data")
CASES, PARAMS = _checkpoints.CASES, _checkpoints.PARAMS
OPTION_CASES = _options.OPTION_CASES
CACHE_CASES, OUTPUT_CASES, RESUME_CASES = _runs.CACHE_CASES, _runs.OUTPUT_CASES, _runs.RESUME_CASES
_run_files = _module("test_run_files")
RUN_FILE_CASES = {**_run_files.RUN_FILE_CASES, **_run_files.NESTING_CASES}  # links / FIFOs in a run, GGUF nesting
_resume_state = _module("test_resume_state")
RESUME_STATE_CASES = {**_resume_state.CASES, **_resume_state.MIXTURE_CASES}  # state.json field by field
RANK_CASES = _module("test_ranks").RANK_CASES  # two ranks: one rank's fault ends both, one paragraph
FULL_DISK_CASES = _module("test_full_disk").FULL_DISK_CASE_NAMES  # ENOSPC / EIO on every write path, save faults

COMMANDS = {"inspect", "validate", "eval", "generate", "init", "export", "stamp", "qa", "card", "publish-check",
            "prepare", "plot"}


def test_at_least_a_hundred_cases_over_every_command_and_category():
    checkpoint_commands = {name for case in CASES for name in case.commands}
    option_commands = {case.split("-")[0] for case in OPTION_CASES}  # prepare-..., plot-..., eval-..., generate-...
    assert COMMANDS <= checkpoint_commands | option_commands
    assert len(PARAMS) + len(OPTION_CASES) + len(RESUME_CASES) + len(CACHE_CASES) + len(OUTPUT_CASES) >= 100
    assert len(RUN_FILE_CASES) >= 25 and len(RESUME_STATE_CASES) >= 35
    assert len(RANK_CASES) >= 12 and len(FULL_DISK_CASES) >= 18
    assert RESUME_CASES and CACHE_CASES and OUTPUT_CASES  # resume, cache, output (concurrency: test_runs.py)
    assert len(_data.BAD_INPUT) + len(_data.MIXTURE_CASES) + len(_data.PREPARED_CASES) >= 30  # corpora, mixtures


def test_every_code_warmstart_raises_is_documented():
    import warmstart.errors as errors

    codes = {cls.code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.WarmstartError) and re.fullmatch(r"WS\d{3}", cls.code)}
    assert codes - {"WS000"} <= DOCUMENTED, sorted(codes - DOCUMENTED)
    asserted = {c.code for c in CASES} | {code for _, code in OPTION_CASES.values()}
    asserted |= {code for cases in (_data.BAD_INPUT, _data.MIXTURE_CASES, _data.PREPARED_CASES)
                 for _, code, _ in cases.values()}
    assert asserted <= DOCUMENTED


_hub, _gguf_tokenizer, _release = _module("test_hub"), _module("test_gguf_tokenizer"), _module("test_release")


def test_the_hf_cache_gguf_tokenizer_and_release_categories():
    """Issue 25's HF cache (>= 36 damages), GGUF tokenizer metadata (>= 40, byte-level BPE and SentencePiece)
    and release command (>= 20) categories, every code they assert documented."""
    assert len(_hub.CASES) >= 36 and len(_gguf_tokenizer.CASES) >= 40 and len(_release.RELEASE_CASES) >= 20
    assert {case.base for case in _gguf_tokenizer.CASES} == {"bpe", "spm"}
    codes = {case.code for case in _hub.CASES + _gguf_tokenizer.CASES}
    assert codes | {code for _, code in _release.RELEASE_CASES.values()} <= DOCUMENTED
