"""Option choices are declared on the option: one grammar checks them and --help lists them."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from warmstart.choices import DEVICES, Choices
from warmstart.errors import UsageError
from warmstart.train.config import TrainConfig, resolve_config


def test_the_grammar():
    assert DEVICES.matches("cuda:3") and DEVICES.matches("cpu") and not DEVICES.matches("cuda:")
    assert not DEVICES.matches("cuda:x") and not DEVICES.matches("CPU") and not DEVICES.matches(3)
    folded = Choices(("hf", "gguf"), fold_case=True)
    assert folded.check("--to", "GGUF") == "gguf" and folded.metavar == "hf|gguf"
    with pytest.raises(UsageError, match=r"--to 'onnx' is not one of hf, gguf") as err:
        folded.check("--to", "onnx")
    assert err.value.code == "WS002" and "--to hf|gguf" in err.value.fix


DECLARED = [f for f in dataclasses.fields(TrainConfig) if f.metadata["choices"]]


def test_device_schedule_parallel_and_dtype_declare_their_choices():
    assert {f.name for f in DECLARED} >= {"device", "dtype", "parallel", "schedule"}


@pytest.mark.parametrize("f", DECLARED, ids=lambda f: f.name)
def test_every_declared_choice_is_accepted_and_anything_else_refused_by_name(f):
    flag = "--" + f.name.replace("_", "-")
    for value in f.metadata["choices"]:
        assert getattr(resolve_config({f.name: value.replace(":N", ":1")}), f.name) == value.replace(":N", ":1")
    with pytest.raises(UsageError, match=f"{flag} 'bogus' is not one of {', '.join(f.metadata['choices'])}"):
        resolve_config({f.name: "bogus"})
    with pytest.raises(UsageError, match=f"{flag} 'bogus' is not one of"):  # a YAML value, the same grammar
        TrainConfig.from_dict({f.name: "bogus"}).validate()


def test_help_lists_the_choices():
    import warmstart.cli.checkpoint_cmds  # noqa: F401
    import warmstart.cli.release_cmds  # noqa: F401
    import warmstart.cli.train_cmds  # noqa: F401
    from warmstart.cli import app

    commands = typer.main.get_command(app).commands
    metavars = {p.name: p.metavar for p in commands["pretrain"].params}
    for f in DECLARED:
        assert metavars[f.name] == f.metadata["choices"].metavar
    assert {p.name: p.metavar for p in commands["eval"].params}["device"] == "auto|cpu|cuda|cuda:N"
    export = {p.name: p.metavar for p in commands["export"].params}
    assert export["to"] == "hf|safetensors|gguf" and export["dtype"] == "f32|f16|bf16|q8_0"
