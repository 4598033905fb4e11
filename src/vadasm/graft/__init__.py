"""Vision grafting: a donor's vision tower and projector onto a recipient language model."""

from vadasm.graft.api import VADASMMerger
from vadasm.graft.projector import svd_subspace_reduction
from vadasm.graft.run import GraftOptions, GraftResult, graft, record_scores

__all__ = ["VADASMMerger", "svd_subspace_reduction", "GraftOptions", "GraftResult", "graft", "record_scores"]
