"""SVD sigma blending, decomposition and rotation analysis of before/after model pairs.

Pure math lives in `svd` and `rotation_math`; `sweep`, `decompose` and `rotations` stream
checkpoints through it.
"""

from vadasm.blend.decompose import DecomposeResult, DecompositionStore, run_decompose, sanitize
from vadasm.blend.rotation_math import (
    PairMeasure,
    composition_error,
    measure_chain,
    principal_angles,
    procrustes_rotation,
    spectrum_change,
)
from vadasm.blend.rotations import RotationReport, RotationRow, run_rotations
from vadasm.blend.select import TensorRoles, TensorSelector
from vadasm.blend.svd import (
    Svd,
    blend_weights,
    blended_spectrum,
    interpolate_weights,
    sigma_shift,
    singular_values_fp32,
    svd_fp32,
)
from vadasm.blend.sweep import BlendOptions, BlendResult, alpha_labels, run_blend

__all__ = [
    "BlendOptions", "BlendResult", "DecomposeResult", "DecompositionStore", "PairMeasure", "RotationReport",
    "RotationRow", "Svd", "TensorRoles", "TensorSelector", "alpha_labels", "blend_weights", "blended_spectrum",
    "composition_error", "interpolate_weights", "measure_chain", "principal_angles", "procrustes_rotation", "run_blend",
    "run_decompose", "run_rotations", "sanitize", "sigma_shift", "singular_values_fp32", "spectrum_change",
    "svd_fp32",
]
