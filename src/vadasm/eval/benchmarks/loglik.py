"""Log-likelihood of continuations, the scoring primitive of multiple-choice benchmarks.

Context and continuation are tokenised separately and concatenated (as lm-eval does), so the
continuation's tokens are exactly those of the answer text and never merge with the prompt's end.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vadasm.errors import VadasmError


@torch.no_grad()
def transformers_loglikelihoods(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 8,
                                device: torch.device | str = "cpu") -> list[float]:
    """Summed log-probability (nats) of each continuation given its context."""
    encoded = []
    for context, continuation in pairs:
        ctx = tokenizer(context).input_ids
        cont = tokenizer(continuation, add_special_tokens=False).input_ids
        if not cont:
            raise VadasmError(f"continuation {continuation!r} encodes to no tokens")
        encoded.append((ctx, cont))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        sequences = [ctx + cont for ctx, cont in batch]
        width = max(len(s) for s in sequences)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(sequences):  # right padding: positions stay those of the unpadded text
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        for row, (ctx, cont) in enumerate(batch):
            positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
            out.append(logprobs[row, positions, torch.tensor(cont)].sum().item())
    return out


def backend_loglikelihoods(backend, pairs: Sequence[tuple[str, str]]) -> list[float]:
    """Use the backend's own `loglikelihood` when it has one, else its transformers model."""
    own = getattr(backend, "loglikelihood", None)
    if callable(own):
        return list(own(pairs))
    model, tokenizer = getattr(backend, "model", None), getattr(backend, "tokenizer", None)
    if model is None or tokenizer is None:
        raise VadasmError(f"backend {getattr(backend, 'name', backend)!r} cannot score log-likelihoods")
    return transformers_loglikelihoods(model, tokenizer, pairs, device=getattr(backend, "device", "cpu"))
