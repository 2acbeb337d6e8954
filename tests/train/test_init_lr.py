"""The default learning rate depends on whether trained weights are being continued."""

from warmstart.train.config import INIT_LR, TrainConfig, resolve_config


def test_init_defaults_to_a_small_learning_rate_unless_given():
    assert resolve_config({}).lr == TrainConfig().lr == 2e-3
    assert resolve_config({"init": "ckpt"}).lr == INIT_LR == 5e-5
    assert resolve_config({"init": "ckpt", "lr": 1e-3}).lr == 1e-3
