"""Architectures as data: tensor roles per model family, looked up from `data/*.json`."""

from vadasm.arch.describe import ModelSummary, describe
from vadasm.arch.table import (
    LINEAR_ROLES,
    Architecture,
    TensorRole,
    TextArch,
    VisionLayout,
    architecture_for,
    load_spec,
    supported_model_types,
)

__all__ = [
    "ModelSummary", "describe", "LINEAR_ROLES", "Architecture", "TensorRole", "TextArch", "VisionLayout",
    "architecture_for",
    "load_spec", "supported_model_types",
]
