"""vadasm: training-free model merging, vision grafting and SVD blending, measured honestly."""

__version__ = "0.1.0"

# The seed's API name, usable on plain tensors.
from vadasm.align.hungarian import hungarian_neuron_alignment as hungarian_neuron_alignment  # noqa: E402
from vadasm.graft import VADASMMerger as VADASMMerger  # noqa: E402
from vadasm.graft import svd_subspace_reduction as svd_subspace_reduction  # noqa: E402
