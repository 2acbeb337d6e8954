"""warmstart: pretrain decoder-only LMs, or continue pretraining from a checkpoint, never from random weights by accident."""

import os

__version__ = "0.1.0"

# CPU threads that wait for each other sleep instead of spinning (GNU OpenMP, read when torch loads it):
# with other processes on the cores, spinning waiters take the CPU from the threads doing the work
# (the evidence: bench/results/cpu/). OMP_WAIT_POLICY, when set, decides.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
