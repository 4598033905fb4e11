"""Token surgery: give a model another tokenizer's vocabulary without training (mergekit-tokensurgeon)."""

from vadasm.tokensurgeon.approximate import SURGERY_METHODS, omp_combination, predict_rows, retrieval_top1
from vadasm.tokensurgeon.run import SurgeryOptions, SurgeryResult, token_surgery
from vadasm.tokensurgeon.vocab import TokenizerView, TokenPlan, plan_tokens, read_tokenizer

__all__ = ["SURGERY_METHODS", "omp_combination", "predict_rows", "retrieval_top1", "SurgeryOptions",
           "SurgeryResult", "token_surgery", "TokenPlan", "TokenizerView", "plan_tokens", "read_tokenizer"]
