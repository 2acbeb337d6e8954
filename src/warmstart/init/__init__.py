"""The warm-start gates: nothing trains until the checkpoint is proven sound."""

from warmstart.init.evidence import infer_family_from_names
from warmstart.init.gates import (
    WarmStart, check_tokenizer, inference_model, prepare_warm_start, repair_command, step0_gate, tensor_evidence,
)
from warmstart.init.population import build_model, expected_shapes, plan_population, populate_model

__all__ = [
    "WarmStart", "build_model", "check_tokenizer", "inference_model", "expected_shapes", "infer_family_from_names",
    "plan_population", "populate_model", "prepare_warm_start", "repair_command", "step0_gate", "tensor_evidence",
]
