"""Same-architecture merges driven by mergekit-style recipes."""

from vadasm.merge.plan import TensorAction, plan_tensors
from vadasm.merge.recipe import (
    MergeConfig,
    ModelConfig,
    load_recipe,
    read_recipe_yaml,
    recipe_from_dict,
    resolve_setting,
)
from vadasm.merge.run import MergeOptions, MergeResult, run_merge

__all__ = [
    "MergeConfig", "ModelConfig", "load_recipe", "read_recipe_yaml", "recipe_from_dict", "resolve_setting",
    "MergeOptions", "MergeResult", "TensorAction", "plan_tensors", "run_merge",
]
