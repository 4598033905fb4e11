"""Passthrough: one model's tensor as is, optionally scaled (mergekit's layer-stacking method).

With `slices:` it builds frankenmerges: each slice copies a layer range of one model, and the
slices are stacked. mergekit 0.1.5 (merge_methods/passthrough.py) takes exactly one input per
tensor and multiplies by the source's `scale` when one is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vadasm.methods.registry import MergeMethod, Param, register


def passthrough(tensor: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """`tensor`, times `scale` when given."""
    return tensor if scale is None else tensor * float(scale)


def _passthrough(base, tensors: Sequence[torch.Tensor], *, scale, generator=None) -> torch.Tensor:
    return passthrough(tensors[0], scale[0])


register(MergeMethod("passthrough", _passthrough, needs_base=False, base_is_input=True,
                     params=(Param("scale", 1.0, per_model=True, help="factor applied to this source's tensors"),),
                     reference="https://github.com/arcee-ai/mergekit", exact_inputs=1, rows_independent=True,
                     summary="one model's tensors as they are (layer stacking with slices), optionally scaled"))
