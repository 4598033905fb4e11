"""Router (gate) weights of a MoE built from dense models without training, one row per expert and layer.

The modes, as mergekit 0.1.5 defines them (`mergekit/moe/router.py`), unless marked vadasm:
- `hidden` / `hidden_last`: each layer's input hidden state (the residual stream before the layer)
  at the prompt's last token, averaged over prompts; positive minus negative prompts; unit norm.
  (mergekit runs the base model in bfloat16; vadasm in float32, so rows differ by rounding.)
- `hidden_avg`: the same with the states averaged over all positions (padding included, as mergekit).
- `cheap_embed`: the unit-norm sum of the prompts' token embeddings, the same row in every layer;
  positive minus negative (each unit-norm), renormalised.
- `random` (standard normal) and `uniform_random` (U(-1/sqrt(h), 1/sqrt(h)), nn.Linear's init):
  seeded here (mergekit's are not).
- `router_input` (vadasm, the closed-form router of benchmarks/moe_testbed.py): the mean over all
  prompt tokens of what the router actually sees (the layer's MLP input, after its norm), positive
  minus negative, then centred over the routed experts so that only what tells them apart is left.

Pure tensor functions first; `prompt_gate_rows` runs the base model (transformers, CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from vadasm.arch.capture import capture_inputs
from vadasm.errors import VadasmError

Batch = dict[str, torch.Tensor]  # input_ids and attention_mask, [batch, seq]


def unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """Each row (last dimension) scaled to unit L2 norm; zero rows stay zero (norm clamped at 1e-8)."""
    return rows / rows.norm(p=2, dim=-1, keepdim=True).clamp(min=1e-8)


def cheap_embedding(embed: torch.Tensor, batch: Batch) -> torch.Tensor:
    """[hidden]: unit-norm sum of the embeddings of the batch's unmasked tokens."""
    rows = embed.float()[batch["input_ids"]] * batch["attention_mask"].unsqueeze(-1).float()
    return unit_rows(rows.sum(dim=(0, 1)))


def pooled_hidden_states(states: Sequence[torch.Tensor], pool: str) -> torch.Tensor:
    """[layers, hidden] from per-layer [batch, seq, hidden] states: the last position ('last') or the mean
    over all positions ('mean'), then the mean over the batch, as mergekit's `get_hidden_states`."""
    stacked = torch.stack([s.float() for s in states])
    pooled = stacked[:, :, -1, :] if pool == "last" else stacked.mean(dim=2)
    return pooled.mean(dim=1)


def centred(rows: torch.Tensor) -> torch.Tensor:
    """[layers, experts, hidden] minus its mean over experts (dim 1)."""
    return rows - rows.mean(dim=1, keepdim=True)


def random_gates(layers: int, experts: int, hidden: int, seed: int, uniform: bool = False) -> torch.Tensor:
    """[layers, experts, hidden]: standard normal, or nn.Linear's uniform init; seeded."""
    generator = torch.Generator().manual_seed(seed)
    if not uniform:
        return torch.randn((layers, experts, hidden), generator=generator)
    scale = math.sqrt(1.0 / hidden)
    return torch.rand((layers, experts, hidden), generator=generator) * 2 * scale - scale


def gate_rows(positive: torch.Tensor, negative: torch.Tensor | None, normalise: bool = True) -> torch.Tensor:
    """One expert's [layers, hidden] row: positive minus negative signal, unit-norm per layer if asked."""
    rows = positive - negative if negative is not None else positive.clone()
    return unit_rows(rows) if normalise else rows


def tokenize_prompts(tokenizer, prompts: list[str]) -> Batch:
    """mergekit's tokenisation: the BOS text prepended, no other special tokens, padded on the left."""
    encoded = tokenizer([(tokenizer.bos_token or "") + p for p in prompts], return_tensors="pt", padding=True,
                        add_special_tokens=False)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def load_prompt_tokenizer(model_path: str | Path):
    """The base model's tokenizer set up as mergekit does (left padding, pad = BOS, else EOS)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except Exception as err:  # noqa: BLE001 - any failure means there is no usable tokenizer
        raise VadasmError(f"{model_path}: cannot load a tokenizer to run the prompts ({type(err).__name__}); "
                          "prompt-based gate modes need one (or use gate_mode: random)") from None
    tokenizer.padding_side = "left"
    tokenizer.pad_token_id = tokenizer.bos_token_id
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def signal_function(mode: str, model_path: str | Path, embed: torch.Tensor | None = None,
                    num_layers: int = 0) -> Callable[[list[Batch]], torch.Tensor]:
    """A function from token batches to the [layers, hidden] signal of `mode` (model loaded once)."""
    if mode == "cheap_embed":
        if embed is None:
            raise ValueError("cheap_embed needs the embedding matrix")
        return lambda batches: cheap_embedding(embed, _joined(batches)).repeat(num_layers, 1)
    model = _load_model(model_path)
    if mode in ("hidden", "hidden_last", "hidden_avg"):
        pool = "mean" if mode == "hidden_avg" else "last"

        @torch.no_grad()
        def hidden(batches: list[Batch]) -> torch.Tensor:
            return torch.stack([pooled_hidden_states(model(**b, output_hidden_states=True).hidden_states[:-1], pool)
                                for b in batches]).mean(0)
        return hidden
    if mode == "router_input":
        return lambda batches: mean_mlp_inputs(model, batches)
    raise ValueError(f"gate mode '{mode}' does not run prompts")


@torch.no_grad()
def mean_mlp_inputs(model, batches: list[Batch]) -> torch.Tensor:
    """[layers, hidden]: every layer's MLP input averaged over all unmasked tokens of all batches."""
    modules = dict(model.named_modules())
    layers = model.config.num_hidden_layers
    names = [f"model.layers.{i}.mlp" for i in range(layers)]
    if any(n not in modules for n in names):
        raise VadasmError(f"{model.name_or_path}: no module model.layers.N.mlp to read router inputs from")
    sums = torch.zeros(layers, model.config.hidden_size, dtype=torch.float64)
    mask: list[torch.Tensor] = []

    def record(layer: int, _module: torch.nn.Module, rows: torch.Tensor) -> None:
        sums[layer] += (rows.double() * mask[0].reshape(-1, 1)).sum(dim=0)

    count = 0
    with capture_inputs({i: modules[n] for i, n in enumerate(names)}, record):
        for batch in batches:
            mask[:] = [batch["attention_mask"].double()]
            count += int(batch["attention_mask"].sum())
            model(**batch)
    return (sums / max(count, 1)).float()


def prompt_gate_rows(signal: Callable[[list[Batch]], torch.Tensor], experts: list[tuple[list[Batch], list[Batch]]],
                     mode: str, routed: int) -> torch.Tensor:
    """[layers, experts, hidden] gate rows from each expert's (positive, negative) token batches; the
    first `routed` experts are the routed ones (the rest shared experts, never centred)."""
    rows = []
    for positive, negative in experts:
        rows.append(gate_rows(signal(positive), signal(negative) if negative else None,
                              normalise=mode != "router_input"))
    stacked = torch.stack(rows, dim=1)
    if mode == "router_input":
        stacked[:, :routed] = centred(stacked[:, :routed])
    return stacked


def _joined(batches: list[Batch]) -> Batch:
    """One batch standing for several (for cheap_embed, which only sums tokens): right-padded, masked."""
    width = max(b["input_ids"].shape[1] for b in batches)
    pad = [(b, width - b["input_ids"].shape[1]) for b in batches]
    return {key: torch.cat([torch.nn.functional.pad(b[key], (0, extra)) for b, extra in pad])
            for key in ("input_ids", "attention_mask")}


def _load_model(model_path: str | Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
