"""The typer app the command modules register on, and the pieces of generated command signatures."""

from __future__ import annotations

import inspect

import typer

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


ARGV: list[str] = []  # the arguments of this invocation (``pretrain --nproc-per-node`` relaunches them)
