"""Dense <-> MoE on tiny *synthetic* models (no real small MoE exists offline), with controls.

    python benchmarks/moe_synthetic.py [--out results/moe_synthetic.json]

Models: a dense Mistral-style model D0 (width 64, 4 layers), a "fine-tune" D1 = D0 + a seeded
Gaussian delta, and Mixtral-style MoEs (8 experts, top-2) built from D0 by sparse upcycling: M0
(every expert a copy of D0's MLP) and M1 (expert e = D0's MLP + a shared change s + its own change
n_e, standing for experts that learned a common skill and specialised). Inputs are random token
ids (the tiny models have no tokenizer); router statistics use one set, scores another.

Dense -> MoE: does injecting TUNED - BASE into every expert move the MoE's logits the way it moves the
dense model's? Cosine and relative error between logit changes, for scales none/usage/norm, beside
a zero delta and a random delta of matched norm in the same tensors.
MoE -> dense: how close is a dense model with aggregated experts to the MoE's function? Mean KL(MoE ||
dense) per token for uniform / norm_avg / top-2 by router usage, beside zero delta (D0), one
expert only, and a random delta of matched norm.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pico_models import make_text_model, perturbed_copy  # noqa: E402
from vadasm.arch import architecture_for  # noqa: E402
from vadasm.io import Checkpoint  # noqa: E402
from vadasm.moe import dense_into_moe, moe_into_dense  # noqa: E402
from vadasm.moe.convert import EXPERT_ROLES  # noqa: E402

SIZE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            initializer_range=0.1)  # peakier next-token distributions than the 0.02 default
MOE = dict(SIZE, num_local_experts=8, num_experts_per_tok=2, rms_norm_eps=1e-6,
           rope_parameters={"rope_theta": 10000.0, "rope_type": "default"})


def token_batches(seed: int, count: int = 16, length: int = 32) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 96, (1, length), generator=gen) for _ in range(count)]


@torch.no_grad()
def logits(folder: Path, batches: list[torch.Tensor]) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return torch.cat([model(input_ids=ids).logits[0] for ids in batches])


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """Mean KL(p || q) per token, in nats."""
    p = p_logits.log_softmax(-1)
    return float((p.exp() * (p - q_logits.log_softmax(-1))).sum(-1).mean())


def upcycle(dense: Path, template: Path, out: Path, shared: float = 0.0, own: float = 0.0, seed: int = 0) -> Path:
    """MoE from a dense model: experts = dense MLP (+ shared change + each expert's own change)."""
    weights, moe = load_file(dense / "model.safetensors"), load_file(template / "model.safetensors")
    ck = Checkpoint.open(template)
    arch = architecture_for(ck.config, ck.keys())
    gen = torch.Generator().manual_seed(seed)
    common = {}
    for name in sorted(moe):
        role = arch.role(name)
        if role.role in EXPERT_ROLES:
            source = weights[f"model.layers.{role.layer}.mlp.{EXPERT_ROLES[role.role][4:]}_proj.weight"]
            key = (role.layer, role.role)
            if key not in common:
                common[key] = shared * source.std() * torch.randn(source.shape, generator=gen)
            moe[name] = source + common[key] + own * source.std() * torch.randn(source.shape, generator=gen)
        elif name in weights:
            moe[name] = weights[name].clone()
    out.mkdir()
    save_file(moe, out / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(template / "config.json", out / "config.json")
    return out


def random_control(recipient: Path, changed: Path, out: Path, seed: int = 0) -> Path:
    """recipient + Gaussian delta with the norm of (changed - recipient), tensor by tensor."""
    base, other = load_file(recipient / "model.safetensors"), load_file(changed / "model.safetensors")
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in base.items():
        delta = other[name] - tensor
        if delta.norm() > 0:
            noise = torch.randn(tensor.shape, generator=gen)
            base[name] = tensor + noise * (delta.norm() / noise.norm())
    out.mkdir()
    save_file(base, out / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(recipient / "config.json", out / "config.json")
    return out


def change_agreement(moved: torch.Tensor, reference: torch.Tensor) -> dict:
    cos = torch.nn.functional.cosine_similarity(moved.flatten(), reference.flatten(), dim=0)
    return {"cosine": round(float(cos), 4),
            "relative_error": round(float((moved - reference).norm() / reference.norm()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/moe_synthetic.json")
    parser.add_argument("--seeds", type=int, default=3, help="independent synthetic setups")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    runs = [run(seed) for seed in range(args.seeds)]
    record = {"setup": runs[0]["setup"], "seeds": args.seeds, "mean": _mean(runs), "runs": runs,
              "seconds": round(time.time() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["mean"], indent=2))


def _mean(runs: list[dict]) -> dict:
    """Element-wise mean over runs of every number below 'dense_to_moe' and 'moe_to_dense_kl_to_moe'."""
    def mean(values):
        if isinstance(values[0], dict):
            return {k: mean([v[k] for v in values]) for k in values[0]}
        return round(sum(values) / len(values), 5)

    return {key: mean([r[key] for r in runs]) for key in ("dense_to_moe", "moe_to_dense_kl_to_moe")}


def run(seed: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="vadasm-moe-"))
    stats_ids, test_ids = token_batches(100 * seed), token_batches(100 * seed + 1)
    d0 = make_text_model(work / "d0", "mistral", seed=10 * seed, **SIZE)
    d1 = perturbed_copy(d0, work / "d1", scale=0.02, seed=10 * seed + 1)
    template = make_text_model(work / "moe_template", "mixtral", seed=10 * seed + 2, **MOE)
    m0 = upcycle(d0, template, work / "m0")
    m1 = upcycle(d0, template, work / "m1", shared=0.3, own=0.3, seed=10 * seed + 3)
    record: dict = {"setup": {"dense": SIZE, "moe": {k: MOE[k] for k in ("num_local_experts", "num_experts_per_tok")},
                              "inputs": "random token ids (synthetic; no real small MoE offline)",
                              "tokens_scored": sum(x.numel() for x in test_ids)}}

    dense_change = logits(d1, test_ids) - logits(d0, test_ids)
    record["dense_to_moe"] = {}
    for moe_name, moe in (("upcycled_identical_experts", m0), ("diverged_experts", m1)):
        base_logits = logits(moe, test_ids)
        rows = {"zero_delta": change_agreement(torch.zeros_like(dense_change), dense_change)}
        for scale in ("none", "usage", "norm"):
            out = work / f"into_{moe_name}_{scale}"
            dense_into_moe(moe, d0, d1, out, scale=scale, input_ids=stats_ids, progress=False)
            rows[f"scale_{scale}"] = change_agreement(logits(out, test_ids) - base_logits, dense_change)
            if scale == "none":
                control = random_control(moe, out, work / f"random_{moe_name}")
                rows["random_delta_matched_norm"] = change_agreement(logits(control, test_ids) - base_logits,
                                                                     dense_change)
        record["dense_to_moe"][moe_name] = rows

    moe_logits = logits(m1, test_ids)
    rows = {"zero_delta (dense base)": round(kl(moe_logits, logits(d0, test_ids)), 5)}
    variants = {"uniform": dict(method="uniform"), "norm_avg": dict(method="norm_avg"),
                "top2_usage_weighted_norm_avg": dict(method="norm_avg", top_k=2, usage_weighted=True),
                "top2_uniform": dict(method="uniform", top_k=2)}
    for name, kwargs in variants.items():
        out = work / f"dense_{name}"
        moe_into_dense(d0, m1, out, input_ids=stats_ids, progress=False, **kwargs)
        rows[name] = round(kl(moe_logits, logits(out, test_ids)), 5)
        if name == "uniform":
            rows["random_delta_matched_norm"] = round(kl(moe_logits, logits(
                random_control(d0, out, work / "dense_random"), test_ids)), 5)
    one = upcycle_one_expert(m1, d0, work / "dense_one_expert")
    rows["one_expert_only (expert 0)"] = round(kl(moe_logits, logits(one, test_ids)), 5)
    record["moe_to_dense_kl_to_moe"] = rows
    shutil.rmtree(work, ignore_errors=True)
    return record


def upcycle_one_expert(moe: Path, dense: Path, out: Path) -> Path:
    """Control: the dense model with expert 0's MLP and the MoE's other tensors."""
    weights, experts = load_file(dense / "model.safetensors"), load_file(moe / "model.safetensors")
    names = {"gate": "w1", "up": "w3", "down": "w2"}
    for name in weights:
        if ".mlp." in name:
            layer, kind = name.split(".")[2], name.split(".")[-2].removesuffix("_proj")
            weights[name] = experts[f"model.layers.{layer}.block_sparse_moe.experts.0.{names[kind]}.weight"].clone()
        elif name in experts:
            weights[name] = experts[name].clone()
    out.mkdir()
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(dense / "config.json", out / "config.json")
    return out


if __name__ == "__main__":
    main()
