"""Router statistics on real inputs: how often each expert is among a token's top-k choices."""

from __future__ import annotations

from pathlib import Path

import torch

from vadasm.arch import Architecture
from vadasm.arch.capture import capture_inputs
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint


@torch.no_grad()
def router_usage(model_path: str | Path, arch: Architecture, input_ids: list[torch.Tensor],
                 top_k: int | None = None) -> dict[int, list[float]]:
    """{layer: fraction of top-k picks per expert} over the tokens of `input_ids`.

    Router logits are recomputed from each router's input and weight (x @ W.T), which works for
    every family whatever its router module returns. (Top-k of logits = top-k of softmax.)
    """
    from transformers import AutoModelForCausalLM

    checkpoint = Checkpoint.open(model_path)
    on_disk = {name: role.layer for name in checkpoint.keys()
               if (role := arch.role(name)).role == "router" and name.endswith(".weight")}
    if not on_disk:
        raise VadasmError(f"{model_path}: no router weights found; not a mixture-of-experts model")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    top_k = top_k or getattr(model.config, "num_experts_per_tok", None) or 2
    # transformers may rename modules in memory (v5 fuses experts), so find each router by its values
    routers = {}
    for name, param in model.named_parameters():
        for disk_name, layer in on_disk.items():
            if param.shape == checkpoint.shape(disk_name) and torch.equal(param, checkpoint.get(disk_name).float()):
                routers[name.removesuffix(".weight")] = layer
    if len(set(routers.values())) != len(set(on_disk.values())):
        raise VadasmError(f"{model_path}: could not locate every router in the loaded model")
    modules = dict(model.named_modules())
    counts: dict[int, torch.Tensor] = {}

    def record(name: str, module: torch.nn.Module, x: torch.Tensor) -> None:
        layer = routers[name]
        logits = x @ module.weight.float().T
        picks = logits.topk(min(top_k, logits.shape[1]), dim=1).indices.flatten()
        counts[layer] = counts.get(layer, 0) + torch.bincount(picks, minlength=logits.shape[1])

    with capture_inputs({m: modules[m] for m in routers}, record):
        for ids in input_ids:
            model(input_ids=ids)
    return {layer: (c.double() / c.sum()).tolist() for layer, c in sorted(counts.items())}
