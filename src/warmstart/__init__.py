"""warmstart: pretrain decoder-only LMs, or continue pretraining from a checkpoint, never from random weights by accident."""

__version__ = "0.1.0"
