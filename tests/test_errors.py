"""Errors render themselves: one paragraph on stderr, and which rank prints it."""

from __future__ import annotations

from warmstart.errors import InitLossRegressionError, UsageError, print_error
from warmstart.train.distributed import announce, local_error


def test_print_error_is_one_paragraph(capsys):
    print_error(UsageError("--lr -1 must be positive", fix="pass a positive --lr"))
    assert capsys.readouterr().err == "error: [WS002] --lr -1 must be positive. Fix: pass a positive --lr.\n"


def test_rank_zero_prints_a_shared_refusal_once_and_a_rank_what_it_alone_saw(capsys):
    shared = InitLossRegressionError("step-0 loss 9.1 > recorded 2.0")
    assert shared.speaks(0) and not shared.speaks(1)
    announce(shared)  # rank 0 printed it before every rank raised it
    assert shared.printed and not shared.speaks(0) and not shared.speaks(1)
    assert capsys.readouterr().err.count("[WS110]") == 1
    mine = local_error(UsageError("rank 1 cannot read its slice"))
    assert mine.speaks(1) and mine.speaks(0)
    print_error(mine, rank=1)
    assert capsys.readouterr().err.startswith("[rank 1] error: [WS002]")
    other = local_error(OSError("disk"))  # any other exception is printed by every rank that raises it
    assert not hasattr(other, "rank_local")
