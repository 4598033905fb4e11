"""Dense <-> mixture-of-experts: dense deltas into every expert, experts aggregated into a dense delta."""

from vadasm.moe.convert import MoeResult, dense_into_moe, moe_into_dense
from vadasm.moe.experts import AGGREGATIONS, INJECT_SCALES, aggregate_experts, injection_scale, top_k_experts
from vadasm.moe.router import router_usage

__all__ = [
    "MoeResult", "dense_into_moe", "moe_into_dense", "AGGREGATIONS", "INJECT_SCALES", "aggregate_experts",
    "injection_scale", "top_k_experts", "router_usage",
]
