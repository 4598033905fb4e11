"""Activation-based similarity: what each unit does on real inputs, not what its weights look like.

Runs a transformers forward pass over real text (the evaluation harness's validation prose by
default, never test data) and records the input of each group's down/o projection: the MLP
neuron activations and the per-head attention outputs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vadasm.align.layout import UnitGroup
from vadasm.arch.capture import capture_inputs
from vadasm.errors import VadasmError
from vadasm.io.hf_load import load_with_transformers


def text_token_ids(model_path: str | Path, texts: list[str], max_tokens: int = 2048,
                   seq_len: int = 128) -> list[torch.Tensor]:
    """Token ids of `texts` in the model's tokenizer, one batch per text, until `max_tokens`."""
    from transformers import AutoTokenizer

    tokenizer = load_with_transformers(lambda: AutoTokenizer.from_pretrained(model_path), Path(model_path),
                                       "tokenizer (measuring activations needs it)")
    batches, total = [], 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=seq_len)["input_ids"]
        batches.append(ids)
        total += ids.shape[1]
        if total >= max_tokens:
            break
    return batches


def validation_token_ids(model_path: str | Path, max_tokens: int = 2048, seq_len: int = 128) -> list[torch.Tensor]:
    """Token ids of the held-out validation prose (eval task `perplexity`, split `val`)."""
    from vadasm.eval.tasks import perplexity_texts

    return text_token_ids(model_path, perplexity_texts("val"), max_tokens, seq_len)


def file_token_ids(model_path: str | Path, path: str | Path, max_tokens: int = 2048) -> list[torch.Tensor]:
    """Token ids of a text file's non-empty lines (one input per line), e.g. prompts of the user's task."""
    file = Path(path)
    if not file.is_file():
        raise VadasmError(f"{file}: input text file not found")
    lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise VadasmError(f"{file}: no non-empty lines to measure router usage on")
    return text_token_ids(model_path, lines, max_tokens)


@torch.no_grad()
def measure_activations(model_path: str | Path, modules: list[str],
                        input_ids: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """{module name: [tokens, features]} inputs of the named modules over the given batches."""
    from transformers import AutoModelForCausalLM

    model = load_with_transformers(lambda: AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                                   Path(model_path), "model").eval()
    named = dict(model.named_modules())
    missing = [m for m in modules if m not in named]
    if missing:
        raise VadasmError(f"{model_path}: no module '{missing[0]}' to record activations from")
    records: dict[str, list[torch.Tensor]] = {m: [] for m in modules}
    with capture_inputs({m: named[m] for m in modules}, lambda m, _mod, rows: records[m].append(rows)):
        for ids in input_ids:
            model(input_ids=ids)
    return {m: torch.cat(chunks) for m, chunks in records.items()}


def activation_pairs(reference: str | Path, model: str | Path, groups: list[UnitGroup],
                     input_ids: list[torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(reference, model) activations for every dense MLP and attention group (experts see
    different tokens in the two models, so they keep weight similarity)."""
    modules = sorted({g.activation_module for g in groups
                      if g.activation_module and ".expert" not in g.key and ".shared_expert" not in g.key})
    ref = measure_activations(reference, modules, input_ids)
    oth = measure_activations(model, modules, input_ids)
    return {m: (ref[m], oth[m]) for m in modules}
