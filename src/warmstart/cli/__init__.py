"""The `warmstart` command line: one typer app; commands live in per-concern modules.

Each module below registers its commands on ``app``. ``main()`` turns every
``WarmstartError`` into one paragraph on stderr and its exit code (1: a gate or
check said no; 2: bad usage or unreadable input). No traceback reaches a user
unless WARMSTART_DEBUG=1.
"""

from __future__ import annotations

import inspect
import os
import sys

import typer

from warmstart.errors import WarmstartError

app = typer.Typer(
    name="warmstart",
    help="Pretrain decoder-only LMs from scratch or continue pretraining from a checkpoint "
    "(--init), refusing every initialisation that would silently train from random weights.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def option(name: str, annotation, default, *flags: str, help: str, **kw) -> inspect.Parameter:
    """A keyword parameter whose default is a typer option: a piece of a generated command signature."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *flags, help=help, **kw))


def with_params(*params: inspect.Parameter):
    """Give a ``**kwargs`` command function the signature (hence the options) typer should see, so that
    options shared by several commands are declared once."""

    def apply(fn):
        fn.__signature__ = inspect.Signature(list(params))
        fn.__annotations__ = {p.name: p.annotation for p in params}
        return fn

    return apply


def print_error(err: WarmstartError) -> None:
    sys.stderr.write("error: " + err.paragraph() + "\n")
    sys.stderr.flush()


def _register() -> None:
    # Imported for their side effect: each adds its commands to ``app``.
    from warmstart.cli import checkpoint_cmds  # noqa: F401  inspect, eval, generate
    from warmstart.cli import release_cmds  # noqa: F401  validate, stamp, export, qa, card, publish-check
    from warmstart.cli import train_cmds  # noqa: F401  pretrain, prepare, plot


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        app(args=argv, prog_name="warmstart", standalone_mode=True)
    except WarmstartError as err:
        print_error(err)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        sys.stderr.write(f"error: [WS001] {err.filename or ''}: {err.strerror or err}. "
                         "Fix: check the path and its permissions.\n")
        sys.exit(2)
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - last line of defence: no traceback for users
        if os.environ.get("WARMSTART_DEBUG"):
            raise
        sys.stderr.write(
            f"error: [WS999] internal error: {type(err).__name__}: {err}. "
            "This is a bug in warmstart; rerun with WARMSTART_DEBUG=1 for the traceback and report it.\n"
        )
        sys.exit(3)
