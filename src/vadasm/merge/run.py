"""Run a merge: load recipe -> plan tensors -> for each tensor read, merge, write -> provenance.

One plain loop; follow any weight from the YAML to disk by reading `run_merge` top to bottom. How one
tensor is read and merged (whole, or streamed in row chunks) lives in tensors.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from vadasm.align import align_checkpoints
from vadasm.arch import Architecture, architecture_for
from vadasm.errors import VadasmError
from vadasm.io import (
    DEFAULT_SHARD_SIZE,
    Checkpoint,
    InputWatch,
    PlannedTensor,
    ShardedWriter,
    atomic_output_dir,
    check_output_free,
    parse_dtype,
    parse_size,
    resolve_model_path,
)
from vadasm.io.provenance import provenance_record, write_provenance
from vadasm.merge.calibration import prepare_grams
from vadasm.merge.lora import LoraCheckpoint, split_reference
from vadasm.merge.plan import TensorAction, layer_contents, plan_tensors
from vadasm.merge.recipe import MergeConfig
from vadasm.merge.sidecars import (
    input_record,
    prepare_chat_template,
    prepare_vocabulary,
    write_config,
    write_mergekit_config,
    write_tokenizer,
)
from vadasm.merge.slices import check_layer_structure, is_identity, output_config, resolve_slices
from vadasm.merge.tensors import merge_rows, merge_tensor, sources_of
from vadasm.merge.two_pass import streams_in_two_passes
from vadasm.methods import get_method
from vadasm.methods.registry import ignored_settings
from vadasm.options import (
    ALLOW_PICKLE_HELP,
    DEVICE_HELP,
    FORCE_HELP,
    SHARD_SIZE_HELP,
    TRUST_REMOTE_CODE_HELP,
    option,
)


@dataclass
class MergeResult:
    output: str
    merge_method: str
    architecture: str
    tensors: int
    merged: int
    not_merged: list[TensorAction] = field(default_factory=list)
    seconds: float = 0.0
    alignment: list[dict] | None = None  # per input model, when aligned (vadasm.align reports)
    notes: list[str] = field(default_factory=list)  # e.g. a mergekit parameter the method ignores

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MergeOptions:
    """How to run a recipe (flags that are not part of the recipe itself); `vadasm merge` derives its flags."""

    # output dtype; default: recipe out_dtype/dtype, else each input tensor's dtype
    dtype: str | None = option(None, help="Output dtype (float32, bfloat16, float16). Arithmetic is always fp32.")
    shard_size: str | int = option(DEFAULT_SHARD_SIZE, help=SHARD_SIZE_HELP)
    align: str | None = option(None, help=(
        "Permute each input's MLP neurons and attention heads to match the base (Hungarian weight "
        "matching) before merging: 'weights' or 'activations' (measured on held-out validation text)."))
    # torch threads for the math; the reader thread overlaps I/O with it. 1 by default: merge math is
    # memory-bound, and on shared cores OpenMP's spinning threads were measured to cost 8x more CPU.
    threads: int = option(1, help=(
        "Torch threads for the math (a reader thread overlaps I/O; model_stock and della also run their "
        "per-chunk statistics on two worker threads); more pays only on idle cores."))
    device: str = option("cpu", help=DEVICE_HELP)
    force: bool = option(False, help=FORCE_HELP)
    allow_pickle: bool = option(False, help=ALLOW_PICKLE_HELP)
    trust_remote_code: bool = option(False, help=TRUST_REMOTE_CODE_HELP)
    progress: bool = option(True, cli=False, help="Progress bars (the CLI turns them off for --quiet and --json).")


def run_merge(recipe: MergeConfig, output: str | Path, options: MergeOptions | None = None) -> MergeResult:
    """Merge the recipe's models into the folder `output`, one tensor at a time.

    Opens every input lazily, plans each output tensor (merged by the recipe's method, or copied
    from the base with the reason recorded), writes shards into a temporary folder and renames it on
    success, so a failure leaves nothing behind. Refuses bad inputs with a `VadasmError`; returns
    what was merged and what was not (`MergeResult.not_merged`).
    """
    options = options or MergeOptions()
    started = time.perf_counter()
    output = Path(output)
    refs = [part for ref in recipe.referenced_models() for part in split_reference(ref) if part]
    check_output_free(output, options.force, refs)
    method = get_method(recipe.merge_method)
    notes = ignored_settings(method, recipe.model_dump(exclude_none=True))

    checkpoints = _open_all(recipe, options)
    watch = InputWatch(checkpoints.values())  # fingerprints at open (provenance); checked again before the rename
    reference = checkpoints[recipe.base_model or recipe.referenced_models()[0]]
    arch = _common_architecture(reference, list(checkpoints.values()))
    out_dtype_name = options.dtype or recipe.out_dtype or recipe.dtype
    out_dtype = parse_dtype(out_dtype_name) if out_dtype_name else None

    slices = resolve_slices(recipe, checkpoints, arch)
    vocabulary = prepare_vocabulary(recipe, checkpoints, arch, slices)
    actions = plan_tensors(slices, checkpoints, arch, recipe.exclude_norms, vocabulary.rows if vocabulary else None)
    template = prepare_chat_template(recipe, checkpoints, reference, vocabulary)
    notes += vocabulary.notes if vocabulary else []
    if recipe.chat_template == "auto" and template is None:
        notes.append("chat_template: auto found no template among the inputs; none is set (as mergekit)")
    grams = prepare_grams(recipe, method, slices, checkpoints, options.align, options.device, options.progress)
    notes += grams.notes if grams else []
    alignments = {}
    if options.align:
        if not is_identity(slices, checkpoints, arch):
            raise VadasmError("--align works on recipes that keep every layer in place (`models:` or one full "
                              "slice); this recipe's slices move or drop layers")
        inputs = [checkpoints[m.model] for m in slices[0].inputs]
        alignments = align_checkpoints(checkpoints[slices[0].reference.model], inputs, arch, options.align)

    def source_dtype(action: TensorAction) -> torch.dtype:
        ref = slices[action.slice].reference.model
        return checkpoints[ref].dtype(action.source_name(ref))

    plan = [PlannedTensor(a.name, a.shape, out_dtype or source_dtype(a)) for a in actions]
    merged = 0

    threads_before = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    if not is_identity(slices, checkpoints, arch):
        check_layer_structure(layer_contents(actions, arch), reference, arch)
    out_config = output_config(reference.config, slices, checkpoints, arch)
    read = [c.path for c in checkpoints.values()]
    with atomic_output_dir(output, options.force, read) as tmp, _restore_threads(threads_before):
        writer = ShardedWriter(tmp, plan, parse_size(options.shard_size))
        for action, planned in tqdm(zip(actions, plan), desc=f"merge ({method.name})", unit="tensor",
                                    total=len(actions), disable=not options.progress):
            piece = slices[action.slice]
            if action.action == "copy_base":
                ref = piece.reference.model
                tensor = checkpoints[ref].get_checked(action.source_name(ref))
            else:
                merged += 1
                sources = sources_of(piece, action, checkpoints)
                remap = vocabulary if action.action == "remap_vocab_then_merge" else None
                streamed = method.rows_independent or streams_in_two_passes(method.name, action.shape)
                rows_path = streamed and action.shape and math.prod(action.shape) and not alignments
                if rows_path and remap is None:
                    merge_rows(recipe, method, action, piece, sources, options.device, writer, planned.dtype)
                    continue
                data = {"grams": grams.for_tensor(action, piece, arch)} if grams and remap is None else {}
                tensor = merge_tensor(recipe, method, action, piece, sources, options.device, alignments, remap, data)
            writer.write(action.name, tensor)
        writer.close()
        write_tokenizer(tmp, recipe, checkpoints, reference, vocabulary, template)
        write_config(tmp, out_config, plan, arch, vocabulary)
        write_mergekit_config(tmp, recipe)
        notes += grams.summary() if grams else []
        provenance = provenance_record(
            "merge",
            recipe=recipe.model_dump(exclude_none=True),
            inputs=[input_record(ref, c, watch.fingerprint(c)) for ref, c in checkpoints.items()],
            architecture=arch.model_type,
            not_merged=[asdict(a) for a in actions if a.action != "merge"],
        )
        if notes:
            provenance["notes"] = notes
        if options.align:
            provenance["alignment"] = [a.report.to_dict() for a in alignments.values()]
        if vocabulary is not None:
            provenance["tokenizer"] = {"vocab_size": vocabulary.rows, "notes": vocabulary.notes}
        write_provenance(tmp, provenance)
        from vadasm.card import render_card  # the card reads vadasm_config.json back

        (tmp / "README.md").write_text(render_card(tmp, location=output))
        watch.refuse_changed("merge")  # an input rewritten or replaced meanwhile: nothing written

    return MergeResult(
        output=str(output), merge_method=method.name, architecture=arch.model_type, tensors=len(actions),
        merged=merged, not_merged=[a for a in actions if a.action != "merge"],
        seconds=round(time.perf_counter() - started, 3),
        alignment=[a.report.to_dict() for a in alignments.values()] if options.align else None, notes=notes,
    )


@contextmanager
def _restore_threads(count: int) -> Iterator[None]:
    try:
        yield
    finally:
        torch.set_num_threads(count)


def _open_all(recipe: MergeConfig, options: MergeOptions) -> dict[str, Checkpoint]:
    """Every model of the recipe, opened; a `MODEL+LORA` reference reads MODEL with the adapter folded in."""
    opened = {}
    for ref in recipe.referenced_models():
        model, adapter = split_reference(ref)
        checkpoint = Checkpoint.open(model, allow_pickle=options.allow_pickle,
                                     trust_remote_code=options.trust_remote_code)
        opened[ref] = LoraCheckpoint.wrap(checkpoint, resolve_model_path(adapter)) if adapter else checkpoint
    return opened


def _common_architecture(reference: Checkpoint, models: list[Checkpoint]) -> Architecture:
    arch = architecture_for(reference.config, reference.keys(), source=str(reference.path / "config.json"))
    for other in models:
        if other.config["model_type"] != reference.config["model_type"]:
            raise VadasmError(
                f"{other.path / 'config.json'}: model_type '{other.config['model_type']}' differs from "
                f"'{reference.config['model_type']}' ({reference.path}); merge needs one architecture "
                "(use `vadasm graft` across families)"
            )
    return arch
