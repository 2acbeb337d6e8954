"""The `warmstart` command line: one typer app; commands live in per-concern modules.

Each module below registers its commands on ``app``. ``main()`` turns every
``WarmstartError`` into one paragraph on stderr and its exit code (1: a gate or
check said no; 2: bad usage or unreadable input). No traceback reaches a user
unless WARMSTART_DEBUG=1. Under torchrun every rank runs ``main``; rank 0 alone prints a refusal
(every rank raises the same one), another rank only what it alone saw, prefixed with its rank
(``WarmstartError.speaks``). The app and the signature helpers are in ``_app.py``.
"""

from __future__ import annotations

import os
import sys

import typer

from warmstart.cli._app import ARGV, app
from warmstart.errors import UsageError, WarmstartError, print_error, unexpected_text


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    return int(os.environ.get("RANK", 0))


def _prefix() -> str:
    return f"[rank {_rank()}] " if _rank() else ""


def _register() -> None:
    # Imported for their side effect: each adds its commands to ``app``.
    from warmstart.cli import checkpoint_cmds  # noqa: F401  inspect, eval, generate
    from warmstart.cli import release_cmds  # noqa: F401  validate, stamp, export, qa, card, publish-check
    from warmstart.cli import train_cmds  # noqa: F401  pretrain, prepare, plot


def _usage_error(err) -> int:
    """A command-line value click refused (a number that is not one, an unknown option, ...): WS002."""
    if type(err).__name__ == "NoArgsIsHelpError":  # `warmstart` / `warmstart CMD` alone: help already shown
        return err.exit_code
    command = err.ctx.command_path if err.ctx is not None else "warmstart"
    print_error(UsageError(err.format_message().replace("\n", " "),
                           fix=f"see `{command} --help` for the options and their values"))
    return 2


def main(argv: list[str] | None = None) -> None:
    from typer import _click  # typer's own copy of click raises these

    _register()
    ARGV[:] = list(argv) if argv is not None else sys.argv[1:]
    try:
        code = app(args=argv, prog_name="warmstart", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except _click.exceptions.UsageError as err:
        sys.exit(_usage_error(err))
    except (_click.exceptions.ClickException, typer.Abort) as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(1)
    except WarmstartError as err:
        if err.speaks(_rank()):
            print_error(err, rank=_rank())
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        if _rank() == 0:
            sys.stderr.write("interrupted\n")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - last line of defence: no traceback for users
        from warmstart.checkpoint.write import write_only_failure

        failure = write_only_failure(err)  # a full disk outside the write helpers: still its code
        if failure is not None:
            print_error(failure)
            sys.exit(failure.exit_code)
        text, status = unexpected_text(err)
        if status == 3 and os.environ.get("WARMSTART_DEBUG"):
            raise
        if not getattr(err, "printed", False):  # (several ranks: the rank that speaks printed it already)
            sys.stderr.write(_prefix() + text + "\n")
        sys.exit(status)
