"""Dense <-> mixture-of-experts: dense deltas into every expert, experts aggregated into a dense delta,
and MoEs built from dense models (mergekit-moe configs)."""

from vadasm.moe.build import MoeBuildResult, build_moe, build_moe_from_file
from vadasm.moe.build_config import MoeBuildConfig, load_moe_config
from vadasm.moe.convert import MoeResult, dense_into_moe, moe_into_dense
from vadasm.moe.experts import AGGREGATIONS, INJECT_SCALES, aggregate_experts, injection_scale, top_k_experts
from vadasm.moe.router import router_usage

__all__ = [
    "MoeResult", "dense_into_moe", "moe_into_dense", "AGGREGATIONS", "INJECT_SCALES", "aggregate_experts",
    "injection_scale", "top_k_experts", "router_usage", "MoeBuildResult", "build_moe", "build_moe_from_file",
    "MoeBuildConfig", "load_moe_config",
]
