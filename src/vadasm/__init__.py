"""vadasm: training-free model merging, vision grafting and SVD blending, measured honestly."""

__version__ = "0.1.0"
