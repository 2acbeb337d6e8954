"""inspect --quality: dimensions, scores, missing items and the stamp flags that supply them."""

from __future__ import annotations

from warmstart.release.quality import DIMENSIONS, quality_report, render_quality


def test_dimensions_sum_to_100():
    assert sum(DIMENSIONS.values()) == 100
    assert DIMENSIONS["hf_identity"] == 20 and DIMENSIONS["provenance"] == 25


def test_complete_checkpoint_scores_full(ckpt_factory):
    q = quality_report(ckpt_factory("llama", trained=True))
    assert q["score"] == 100, render_quality(q)
    assert q["stamp_recipe"] is None
    assert all(not d["missing"] for d in q["dimensions"].values())


def test_missing_provenance_lists_stamp_flags(ckpt_factory):
    q = quality_report(ckpt_factory("qwen3"))  # no license / data sources / data license
    pv = q["dimensions"]["provenance"]
    assert pv["score"] == 6  # only lineage (scratch) present
    assert "--license LICENSE" in pv["flags"] and "--data-source SOURCE" in pv["flags"]
    assert "--data-license LICENSE" in pv["flags"]
    assert q["dimensions"]["hf_identity"]["score"] == 20
    assert "warmstart stamp" in q["stamp_recipe"] and "--license LICENSE" in q["stamp_recipe"]
    text = render_quality(q)
    assert "provenance" in text and "stamp flags" in text
