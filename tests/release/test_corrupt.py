"""Corrupted inputs are caught by validate and qa: clear message, right exit code, no traceback."""

from __future__ import annotations

import math
import shutil
import struct

import pytest

from warmstart.checkpoint import read_structure
from warmstart.release.export import export_checkpoint
from warmstart.release.qa import run_qa
from warmstart.release.validate import validate


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _cli(*args):
    """`warmstart ARGS` in-process (same entry point as the console script): exit code, stdout, stderr."""
    import contextlib
    import io

    from warmstart.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    p = _Result(code, out.getvalue(), err.getvalue())
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    return p


@pytest.fixture()
def hf(ckpt_factory, tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(ckpt_factory("llama"), d)
    return d


@pytest.fixture()
def gguf_file(ckpt_factory, tmp_path):
    out = tmp_path / "m.gguf"
    export_checkpoint(ckpt_factory("llama"), "gguf", out, dtype="f16")
    return out


def test_flipped_header_byte_safetensors(hf):
    f = hf / "model.safetensors"
    data = bytearray(f.read_bytes())
    i = data.index(b'"dtype"', 8)
    data[i] = ord("}")  # breaks the JSON header
    f.write_bytes(bytes(data))
    r = validate(hf)
    assert r["verdict"] == "UNREADABLE" and r["exit_code"] == 2
    assert "header does not parse" in r["errors"][0]
    p = _cli("validate", hf)
    assert p.returncode == 2 and "header does not parse" in p.stdout
    p = _cli("qa", hf)
    assert p.returncode == 2 and "NO-GO" in p.stdout


def test_flipped_header_byte_gguf(gguf_file):
    data = bytearray(gguf_file.read_bytes())
    data[0] ^= 0xFF  # magic
    gguf_file.write_bytes(bytes(data))
    p = _cli("validate", gguf_file)
    assert p.returncode == 2 and "not a checkpoint" in p.stdout


def test_flipped_tensor_offset_gguf(gguf_file):
    """A flipped byte in a tensor-info offset: data out of bounds / misaligned -> FAIL (1)."""
    rf = read_structure(gguf_file).files[0]
    data = bytearray(gguf_file.read_bytes())
    name = rf.tensors[-1].name.encode()
    i = data.index(name) + len(name)
    nd = struct.unpack("<I", data[i:i + 4])[0]
    off_at = i + 4 + 8 * nd + 4
    data[off_at + 3] ^= 0x10  # offset += 2**28
    gguf_file.write_bytes(bytes(data))
    r = validate(gguf_file)
    assert r["exit_code"] == 1 and "truncated" in " ".join(r["checks"][0].items)


@pytest.mark.parametrize("kind", ["hf", "gguf"])
def test_truncated_data(kind, hf, gguf_file):
    f = hf / "model.safetensors" if kind == "hf" else gguf_file
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 4096])
    target = hf if kind == "hf" else gguf_file
    r = validate(target)
    assert r["verdict"] == "FAIL" and r["exit_code"] == 1
    assert "truncated" in " ".join(r["checks"][0].items)
    p = _cli("validate", target)
    assert p.returncode == 1 and "truncated" in p.stdout
    q = run_qa(target)
    assert q["verdict"] == "NO-GO" and q["exit_code"] == 1


def test_nan_planted(hf):
    f = hf / "model.safetensors"
    rf = read_structure(f).files[0]
    t = next(t for t in rf.tensors if t.name == "model.layers.1.mlp.up_proj.weight")
    assert t.dtype == "F32"
    data = bytearray(f.read_bytes())
    data[t.start + 40:t.start + 44] = struct.pack("<f", math.nan)
    data[t.start + 80:t.start + 84] = struct.pack("<f", math.inf)
    f.write_bytes(bytes(data))
    r = validate(hf)
    assert r["exit_code"] == 1
    values = next(c for c in r["checks"] if c.name == "values")
    assert values.status == "FAIL" and "model.layers.1.mlp.up_proj.weight: 2 of" in values.items[0]
    p = _cli("validate", hf)
    assert p.returncode == 1 and "NaN/Inf" in p.stdout
    p = _cli("qa", hf, "--json")
    assert p.returncode == 1
    import json

    rep = json.loads(p.stdout)
    assert rep["verdict"] == "NO-GO"
    assert any(b.startswith("finite:") for b in rep["blockers"])


def test_missing_path_and_non_checkpoint(tmp_path):
    p = _cli("validate", tmp_path / "nope")
    assert p.returncode == 2 and "error:" in p.stderr
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a model" * 10)
    p = _cli("validate", junk)
    assert p.returncode == 2
