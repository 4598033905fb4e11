"""Capture what chosen modules of a loaded model receive: one forward-hook helper for every caller.

Activation similarity (align), router statistics (moe) and RegMean's Gram matrices (graft) all need
the input of some modules during forward passes; they differ only in what they keep. The hooks are
always removed, even when a forward pass fails, so a model is never left instrumented.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import torch

Key = TypeVar("Key", bound=Hashable)


def flat_input(x: torch.Tensor) -> torch.Tensor:
    """A module input [..., features] as float32 rows [tokens, features]."""
    return x.reshape(-1, x.shape[-1]).float()


@contextmanager
def capture_inputs(modules: Mapping[Key, torch.nn.Module],
                   record: Callable[[Key, torch.nn.Module, torch.Tensor], None]) -> Iterator[None]:
    """While inside, each forward of `modules[key]` calls `record(key, module, rows)` with the module's
    first input as float32 [tokens, features] (see `flat_input`), before the module runs."""
    hooks = [module.register_forward_pre_hook(
        lambda mod, args, key=key: record(key, mod, flat_input(args[0])))
        for key, module in modules.items()]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
