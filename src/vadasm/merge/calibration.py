"""Calibration data for merge methods that need it (`needs_data`, e.g. `merge_method: regmean`).

Each input model names its data in its parameters (`calibration: FILE_OR_TASK`; a value under the
recipe's or a slice's `parameters` is the default for every model, as for `weight`). Before any
tensor is merged, each input model is loaded whole once and run on its own items (a JSONL file of
`{"text"[, "answer"]}` records or a built-in task's train split, read by vadasm.graft.grams as the
graft reads them), recording the Gram matrix (mean x x^T) of the inputs of every linear layer in its
decoder layers (kept for the last two (model, data) pairs, so a tuning run does not recompute
them). Then each merged tensor is handed the Grams of its sources' own tensors.

Memory: one [in, in] fp32 Gram per decoder linear layer per input model, all kept until the merge
ends (SmolLM2-135M: about 0.5 GB per model), plus one model loaded at a time for the forward passes;
the last two (model, data) pairs' Grams stay cached in the process afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from vadasm.errors import VadasmError
from vadasm.graft.grams import cached_grams, calibration_items, layer_relative_name
from vadasm.merge.lora import LoraCheckpoint
from vadasm.methods.registry import MergeMethod

if TYPE_CHECKING:  # recipe.py imports this module, and slices.py imports recipe.py
    from vadasm.arch import Architecture
    from vadasm.io import Checkpoint
    from vadasm.merge.plan import TensorAction
    from vadasm.merge.slices import LayerSlice

SOURCE_KEY = "calibration"
SAMPLES_KEY = "calibration_samples"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def check_calibration_settings(scopes: list[tuple[str, dict]]) -> None:
    """Each `calibration` setting is one file or task name, and `calibration_samples` one number in
    the top-level `parameters`: a model has one set of Grams, so the gradients and `{filter, value}`
    lists other parameters accept mean nothing here. ValueError("<key path>: <problem>")."""
    for where, params in scopes:
        value = params.get(SOURCE_KEY)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}.{SOURCE_KEY}: one JSONL file or built-in task name per model, not a list "
                             "or filters (a model's Grams come from one data set)")
        if SAMPLES_KEY in params and (where != "parameters" or not isinstance(params[SAMPLES_KEY], int)):
            raise ValueError(f"{where}.{SAMPLES_KEY}: one whole number, set in the top-level 'parameters' "
                             "(every model reads that many items)")


def calibration_sources(recipe: Any, slices: list[LayerSlice]) -> dict[str, str]:
    """Input model -> its calibration source, with mergekit's precedence (the source's own value,
    then the slice's, then the recipe's); a model given two different sources is refused."""
    sources: dict[str, str] = {}
    for piece in slices:
        shared = {**recipe.parameters, **piece.parameters}
        for entry in piece.inputs:
            source = entry.parameters.get(SOURCE_KEY, shared.get(SOURCE_KEY))
            if not source:
                raise VadasmError(f"recipe: '{recipe.merge_method}' needs calibration data for '{entry.model}' "
                                  f"(parameters: {{{SOURCE_KEY}: FILE.jsonl or TASK}}, or --calibration)")
            if sources.setdefault(entry.model, source) != source:
                raise VadasmError(f"recipe: '{entry.model}' is given two calibration sources ({sources[entry.model]!r}"
                                  f", {source!r}); its Grams come from one")
    return sources


@dataclass
class ModelGrams:
    """The Grams of every input model's decoder linear layers, and what the merge did with them."""

    grams: dict[str, dict[str, torch.Tensor]]  # model -> layer-relative weight name -> [in, in]
    notes: list[str] = field(default_factory=list)
    solved: int = 0
    averaged_linears: list[str] = field(default_factory=list)  # 2-D decoder tensors no Gram covered

    def for_tensor(self, action: TensorAction, piece: LayerSlice, arch: Architecture) -> list[torch.Tensor] | None:
        """The Grams of this output tensor's sources (one per input, in order), or None where the
        tensor is not a text decoder layer's 2-D weight with a Gram in every input model."""
        role = arch.role(action.source_name(piece.reference.model))
        if role.part != "text" or role.layer is None or len(action.shape) != 2:
            return None
        found = []
        for entry in piece.inputs:
            gram = self.grams[entry.model].get(layer_relative_name(action.source_name(entry.model)) or "")
            if gram is None or tuple(gram.shape) != (action.shape[1], action.shape[1]):
                self.averaged_linears.append(action.name)
                return None
            found.append(gram)
        self.solved += 1
        return found

    def summary(self) -> list[str]:
        """Notes for the result: how many tensors were solved, and any 2-D layer weight left averaged."""
        lines = [f"regmean: {self.solved} linear weight(s) solved from the Grams; every other tensor is the "
                 "weighted average of the inputs"]
        if self.averaged_linears:
            names = ", ".join(self.averaged_linears[:3]) + (" ..." if len(self.averaged_linears) > 3 else "")
            lines.append(f"regmean: {len(self.averaged_linears)} 2-D layer weight(s) had no Gram (not a "
                         f"torch.nn.Linear input in every model) and were averaged: {names}")
        return lines


def prepare_grams(recipe: Any, method: MergeMethod, slices: list[LayerSlice], checkpoints: dict[str, Checkpoint],
                  align: str | None, device: str, progress: bool) -> ModelGrams | None:
    """Run each input model on its calibration items and keep its Grams; None if `method` needs no data."""
    if not method.needs_data:
        return None
    if align:
        raise VadasmError(f"--align cannot be combined with '{method.name}': its Grams are measured on the "
                          "models as stored, not on permuted ones")
    samples = int(recipe.parameters.get(SAMPLES_KEY, method.param(SAMPLES_KEY).default))
    sources = calibration_sources(recipe, slices)
    items = {source: _items(source, samples, recipe.seed) for source in dict.fromkeys(sources.values())}
    grams, notes = {}, []
    for model, source in sources.items():
        checkpoint = checkpoints[model]
        if isinstance(checkpoint, LoraCheckpoint):
            raise VadasmError(f"{model}: '{method.name}' runs each model on its calibration data and cannot yet "
                              "run a MODEL+LORA reference; merge the adapter into the model first")
        if not any((checkpoint.path / name).is_file() for name in TOKENIZER_FILES):
            raise VadasmError(f"{checkpoint.path}: no tokenizer files; '{method.name}' runs each model on its "
                              "calibration text")
        # Remembered for the last two (model, data) pairs, as in the graft: a tuning run merges the same
        # models many times with other weights or alpha.
        grams[model] = cached_grams(str(checkpoint.path), checkpoint.fingerprint(), source, samples, recipe.seed,
                                    device, progress)
        notes.append(f"regmean: {model}: Grams of {len(grams[model])} linear layer(s) from "
                     f"{len(items[source])} item(s) of {source}")
    return ModelGrams(grams, notes)


def _items(source: str, samples: int, seed: int) -> list:
    """`samples` calibration items of `source`; fewer is refused (calibration_samples says how many)."""
    items = calibration_items(source, samples, seed)
    if len(items) < samples:
        raise VadasmError(f"{source}: {len(items)} calibration item(s), but {SAMPLES_KEY} is {samples}; "
                          f"add records or set parameters: {{{SAMPLES_KEY}: {len(items)}}}")
    return items
