"""WS102 for self-contradicting metadata prints the exact `warmstart stamp` repair the tensor evidence
chooses, as WS103 does; and the printed command, run, makes the checkpoint pass the family gates."""

from __future__ import annotations

import json
import shlex

from _ckpt_tools import ws

from warmstart.errors import FamilyError
from warmstart.init.gates import prepare_warm_start, repair_command


def test_contradicting_metadata_names_the_evidence_repair(hf_family_dirs, copy_ckpt, tmp_path):
    ckpt = copy_ckpt(hf_family_dirs["qwen2"])
    (ckpt / "warmstart.json").write_text(json.dumps({"architecture": "llama"}))
    try:
        prepare_warm_start(ckpt)
    except FamilyError as err:
        msg = str(err)
        assert err.code == "WS102" and "contradicts itself" in msg
        assert "the tensor names say qwen2" in msg
        assert f"`{repair_command(ckpt, 'qwen2')}`" in msg
    else:
        raise AssertionError("self-contradicting metadata was accepted")
    proc = ws("pretrain", "--init", str(ckpt), "--max-steps", "1", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "warmstart stamp" in proc.stderr
    command = proc.stderr.split("`")[1]
    assert shlex.split(command)[:2] == ["warmstart", "stamp"]
    ws(*shlex.split(command)[1:], cwd=tmp_path)
    fixed = ckpt.with_name(ckpt.name + "-fixed")
    warm = prepare_warm_start(fixed)
    assert warm.config.family == "qwen2" and [c.name for c in warm.report][:3] == ["readable", "family", "evidence"]


def test_contradiction_without_evidence_keeps_the_general_fix(hf_family_dirs, copy_ckpt):
    from _ckpt_tools import rewrite_tensors

    ckpt = copy_ckpt(hf_family_dirs["llama"])
    (ckpt / "warmstart.json").write_text(json.dumps({"architecture": "qwen2"}))
    rewrite_tensors(ckpt, lambda t: [t.pop(k) for k in list(t) if "mlp.gate_proj" in k])  # names cannot decide
    try:
        prepare_warm_start(ckpt)
    except FamilyError as err:
        assert "contradicts itself" in str(err) and "warmstart inspect CKPT --quality" in str(err)
    else:
        raise AssertionError("self-contradicting metadata was accepted")
