"""Vision grafting: a donor's vision tower and projector onto a recipient language model."""

from vadasm.graft.api import VADASMMerger
from vadasm.graft.options import GraftOptions
from vadasm.graft.projector import svd_subspace_reduction
from vadasm.graft.result import GraftResult
from vadasm.graft.run import graft
from vadasm.graft.write import record_scores

__all__ = ["VADASMMerger", "svd_subspace_reduction", "GraftOptions", "GraftResult", "graft", "record_scores"]
