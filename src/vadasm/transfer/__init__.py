"""Experimental cross-size language transfer (off by default), always scored beside its controls."""

from vadasm.transfer.mlp import MlpTransfer, MlpWeights, layer_pairs, matched_norm_random, mlp_transfer
from vadasm.transfer.run import TransferOptions, TransferResult, language_transfer, score_with_controls, verdict

__all__ = [
    "MlpTransfer", "MlpWeights", "layer_pairs", "matched_norm_random", "mlp_transfer", "TransferOptions",
    "TransferResult", "language_transfer", "score_with_controls", "verdict",
]
