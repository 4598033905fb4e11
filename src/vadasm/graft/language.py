"""Stage 2, the language model: class A merges the donor's language delta over the common base into the
recipient (task arithmetic, TIES, DARE through the method registry, or RegMean on each model's own
task); otherwise, and in protected layers, the recipient's tensors are copied. Each output tensor is
planned as a `Step` that computes it when the writer asks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vadasm.arch import VisionLayout, architecture_for
from vadasm.errors import VadasmError
from vadasm.graft.grams import layer_relative_name
from vadasm.graft.options import GraftOptions
from vadasm.graft.pairing import TextView
from vadasm.graft.result import GraftResult
from vadasm.io import Checkpoint
from vadasm.io.provenance import natural_key, tensor_seed
from vadasm.methods import MergeMethod, get_method
from vadasm.methods.regmean import regmean


@dataclass
class Step:
    """One output tensor: where it goes, what it is made from, and how."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    action: str
    compute: Callable[[], torch.Tensor]


def open_base(opts: GraftOptions, r_text: TextView, result: GraftResult) -> TextView | None:
    """The common base's language model (class A), checked against the recipient's; None without --base.
    Says in `result` what the language model will be."""
    lang, reg = opts.language, opts.language.regmean
    if lang.base is None:
        result.language_model = "recipient unchanged (pass --base to merge the donor's language delta)"
        result.warnings.append("class A without --base: the donor's language-model update is not merged; "
                               "its projector may expect it")
        return None
    base_ck = Checkpoint.open(lang.base, allow_pickle=opts.output.allow_pickle,
                              trust_remote_code=opts.output.trust_remote_code)
    base_arch = architecture_for(base_ck.config, base_ck.keys(), str(base_ck.path / "config.json"))
    view = TextView.of(base_ck, base_arch)
    if base_arch.text.model_type != r_text.arch.text.model_type:
        raise VadasmError(f"{base_ck.path / 'config.json'}: base text architecture '{base_arch.text.model_type}' "
                          f"differs from the recipient's '{r_text.arch.text.model_type}'")
    for name, shape in r_text.shapes().items():
        if view.shapes().get(name) != shape:
            raise VadasmError(f"{base_ck.path}: tensor '{name}' has shape {view.shapes().get(name)}, recipient "
                              f"has {shape}; --base must be the common base of donor and recipient")
    protected = protected_layers(opts, r_text.arch.num_layers())
    declares_density = "density" in get_method(lang.merge_method).model_params
    detail = {"task_arithmetic": "",
              "regmean": f" (alpha {reg.regmean_alpha}, donor weight {reg.regmean_donor_weight}, grams on "
                         f"{reg.donor_data} / {reg.recipient_data}; other tensors by task arithmetic)",
              }.get(lang.merge_method, f" (density {lang.density})" * declares_density)
    result.language_model = (f"recipient + {lang.beta} x (donor LM - base) by {lang.merge_method}{detail}"
                             + f"; layers 0-{protected - 1} protected" * (protected > 0)
                             + "; embeddings and head from the recipient")
    return view


def protected_layers(opts: GraftOptions, num_layers: int | None) -> int:
    """How many first layers keep the recipient's weights."""
    return round(opts.language.protect_ratio * (num_layers or 1))


def regmean_grams(opts: GraftOptions, donor: Checkpoint, recipient: Checkpoint) -> tuple[dict, dict]:
    """(donor, recipient) input Grams of every language-model linear, each on its own task."""
    from vadasm.graft.grams import cached_grams

    reg = opts.language.regmean
    return tuple(cached_grams(str(ck.path), ck.fingerprint(), source, reg.regmean_samples, opts.seed,
                              progress=opts.output.progress)
                 for ck, source in ((donor, reg.donor_data), (recipient, reg.recipient_data)))


def text_steps(r_text: TextView, base: TextView | None, donor: TextView, opts: GraftOptions, protected: int,
               rows: int, layout: VisionLayout | None, out_dtype: torch.dtype | None,
               grams: tuple[dict, dict] | None = None) -> list[Step]:
    """One step per language-model tensor of the recipient, in natural order, named as `layout` writes it."""
    merge_method = opts.language.merge_method
    method = get_method("task_arithmetic" if merge_method == "regmean" else merge_method)
    steps = []
    for text_name in sorted(r_text.names, key=natural_key):
        role = r_text.arch.text.role(text_name)
        shape = r_text.checkpoint.shape(r_text.names[text_name])
        dtype = out_dtype or r_text.checkpoint.dtype(r_text.names[text_name])
        out_name = layout.from_text_name(text_name) if layout else text_name
        gram_key = layer_relative_name(text_name)

        def recipient_tensor(name=text_name):
            return r_text.get(name)

        if role.role in ("embed", "lm_head") and rows != shape[0]:
            steps.append(Step(out_name, (rows, *shape[1:]), dtype, "resize_recipient",
                              lambda name=text_name: _grow_rows(r_text.get(name), rows)))
        elif base is None or role.role in ("embed", "lm_head") or not dtype.is_floating_point:
            steps.append(Step(out_name, shape, dtype, "copy_recipient", recipient_tensor))
        elif role.layer is not None and role.layer < protected:
            steps.append(Step(out_name, shape, dtype, "copy_recipient (protected layer)", recipient_tensor))
        elif grams is not None and all(gram_key in g for g in grams):
            pair_grams = tuple(g[gram_key] for g in grams)
            steps.append(Step(out_name, shape, dtype, "merge (regmean)",
                              lambda name=text_name, g=pair_grams: _regmean_language(opts, name, r_text, base,
                                                                                      donor, g)))
        else:
            steps.append(Step(out_name, shape, dtype, "merge",
                              lambda name=text_name: _merge_language(method, opts, name, r_text, base, donor)))
    return steps


def _regmean_language(opts: GraftOptions, name: str, recipient: TextView, base: TextView, donor: TextView,
                      grams: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The linear weight that best reproduces the recipient on its task's inputs and base + beta x donor
    delta on the donor's (RegMean), instead of adding both deltas everywhere."""
    base_weight = base.get(name).float()
    donor_weight = base_weight + opts.language.beta * (donor.get(name).float() - base_weight)
    donor_gram, recipient_gram = grams
    reg = opts.language.regmean
    return regmean([recipient.get(name).float(), donor_weight], [recipient_gram, donor_gram],
                   model_weight=[1.0, reg.regmean_donor_weight], alpha=reg.regmean_alpha)


def _merge_language(method, opts: GraftOptions, name: str, recipient: TextView, base: TextView,
                    donor: TextView) -> torch.Tensor:
    """recipient + beta * prune(donor - base), through the registry's task-vector methods: the
    recipient's own delta enters with weight 1 and density 1, so it is never pruned."""
    generator = torch.Generator().manual_seed(tensor_seed(opts.seed, name))
    return method.func(base.get(name).float(), [recipient.get(name).float(), donor.get(name).float()],
                       generator=generator, **delta_params(method, opts.language.beta, opts.language.density))


def delta_params(method: MergeMethod, beta: float, density: float) -> dict[str, Any]:
    """`method`'s parameters for [recipient, donor]: weights 1 and beta, densities 1 and `density`, no
    normalising, lambda 1, rescale on; what graft does not set keeps the method's default (per model: twice)."""
    chosen = {"weight": [1.0, beta], "density": [1.0, density], "normalize": False, "rescale": True, "lambda": 1.0}
    return {p.name: chosen.get(p.name, [p.default] * 2 if p.per_model else p.default) for p in method.params}


def _grow_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """Append rows equal to the mean row (a new token starts as an average token)."""
    extra = tensor.float().mean(0, keepdim=True).expand(rows - tensor.shape[0], *tensor.shape[1:])
    return torch.cat([tensor.float(), extra]).to(tensor.dtype)
