"""Fixtures for the gate tests: real checkpoints written by transformers' save_pretrained."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _ckpt_tools import FAMILY_PRESETS, save_transformers_model


@pytest.fixture(scope="session")
def hf_family_dirs(tmp_path_factory, tiny_tokenizer):
    """{family: directory} for llama, qwen2, qwen3 — pristine; copy before modifying."""
    root = tmp_path_factory.mktemp("hf-families")
    return {fam: save_transformers_model(root / fam, fam, tiny_tokenizer) for fam in FAMILY_PRESETS}


@pytest.fixture
def copy_ckpt(tmp_path):
    def _copy(src: Path, name: str | None = None) -> Path:
        dst = tmp_path / (name or src.name)
        shutil.copytree(src, dst)
        return dst

    return _copy
