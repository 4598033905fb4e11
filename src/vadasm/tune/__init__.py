"""Coefficient tuning on validation data with the change-nothing candidate always in the race."""

from vadasm.eval.gate import GateResult, validation_gate
from vadasm.tune.objective import Evaluation, GraftBuilder, HarnessObjective, MergeBuilder
from vadasm.tune.optimizers import SEARCHES, make_optimizer
from vadasm.tune.run import Trial, TuneResult, tune
from vadasm.tune.space import Param, SearchSpace, parse_param, space_from_specs

__all__ = [
    "SEARCHES", "Evaluation", "GateResult", "GraftBuilder", "HarnessObjective", "MergeBuilder", "Param",
    "SearchSpace", "Trial", "TuneResult", "make_optimizer", "parse_param", "space_from_specs", "tune",
    "validation_gate",
]
