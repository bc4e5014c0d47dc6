"""Capacity planning: predicted peak memory per GPU of a training spec, before anything starts.

`raysft estimate SPEC [overrides] [--gpu-memory-gb N] [--json]` reads the spec and only the base model's
config.json (no weights, nothing downloaded), predicts the peak per GPU broken down into base weights,
adapter weights, gradients, optimizer states, activations, logits and overhead, says whether it fits the
GPU, and if not, which changes would (each with its own estimate). The formulas are documented in
`raysft.estimate.memory`; `raysft train` prints the same estimate before starting on GPUs.
"""

from raysft.estimate.memory import memory_breakdown
from raysft.estimate.report import estimate_for_spec, format_estimate
from raysft.estimate.shape import EstimateError, ModelShape, read_model_shape

__all__ = [
    "EstimateError",
    "ModelShape",
    "estimate_for_spec",
    "format_estimate",
    "memory_breakdown",
    "read_model_shape",
]
