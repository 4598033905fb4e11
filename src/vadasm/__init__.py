"""vadasm: training-free model merging, vision grafting and SVD blending, measured honestly.

The seed's API names live here: `VADASMMerger` (graft), `MergeConfig` / `ModelConfig` (recipes),
and pure functions on plain tensors `ties_merge`, `dare_merge`, `hungarian_neuron_alignment`,
`svd_subspace_reduction`.
"""

from vadasm.align.hungarian import hungarian_neuron_alignment
from vadasm.graft import VADASMMerger, svd_subspace_reduction
from vadasm.merge import MergeConfig, ModelConfig
from vadasm.methods import dare_merge, ties_merge
from vadasm.version import __version__

__all__ = [
    "__version__", "VADASMMerger", "MergeConfig", "ModelConfig", "ties_merge", "dare_merge",
    "hungarian_neuron_alignment", "svd_subspace_reduction",
]
