"""Merge methods as pure tensor functions, registered by name (the recipe's `merge_method`)."""

from vadasm.methods.linear import linear_merge
from vadasm.methods.registry import METHODS, MergeMethod, get_method
from vadasm.methods.slerp import slerp
from vadasm.methods.sparsify import magnitude_prune, random_prune
from vadasm.methods.task_arithmetic import (
    dare_merge,
    generalized_task_arithmetic,
    sign_consensus_mask,
    ties_merge,
)

__all__ = [
    "METHODS", "MergeMethod", "get_method", "linear_merge", "slerp", "magnitude_prune", "random_prune",
    "dare_merge", "generalized_task_arithmetic", "sign_consensus_mask", "ties_merge",
]
