"""Merge methods as pure tensor functions, registered by name (the recipe's `merge_method`)."""

from vadasm.methods.arcee_fusion import arcee_fusion
from vadasm.methods.linear import linear_merge
from vadasm.methods.model_stock import model_stock
from vadasm.methods.nearswap import nearswap
from vadasm.methods.passthrough import passthrough
from vadasm.methods.ram import ram_merge, ramplus_tl_merge
from vadasm.methods.registry import METHODS, MergeMethod, get_method, method_names
from vadasm.methods.regmean import regmean, regmean_or_average
from vadasm.methods.sce import sce_merge
from vadasm.methods.slerp import slerp
from vadasm.methods.sparsify import magnitude_prune, random_prune
from vadasm.methods.spherical import karcher_mean, multislerp, nuslerp, nuslerp_merge
from vadasm.methods.task_arithmetic import (
    dare_merge,
    generalized_task_arithmetic,
    sign_consensus_mask,
    ties_merge,
)

__all__ = [
    "arcee_fusion", "karcher_mean", "multislerp", "nearswap", "nuslerp", "nuslerp_merge", "ram_merge",
    "ramplus_tl_merge",
    "METHODS", "MergeMethod", "get_method", "method_names", "linear_merge", "slerp", "magnitude_prune", "random_prune",
    "dare_merge", "generalized_task_arithmetic", "sign_consensus_mask", "ties_merge",
    "model_stock", "sce_merge", "passthrough", "regmean", "regmean_or_average",
]
