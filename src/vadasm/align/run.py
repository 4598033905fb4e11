"""Align whole checkpoints: for the merge pre-pass (`--align`) and for `vadasm align`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from vadasm.align.activations import activation_pairs, validation_token_ids
from vadasm.align.layout import unit_groups
from vadasm.align.model import SIMILARITIES, Alignment, AlignmentReport, compute_alignment
from vadasm.arch import Architecture, architecture_for
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint, PlannedTensor, ShardedWriter, atomic_output_dir, check_output_free
from vadasm.io.provenance import input_records, provenance_record, write_provenance


def align_checkpoints(reference: Checkpoint, models: list[Checkpoint], arch: Architecture,
                      similarity_kind: str = "weights") -> dict[Path, Alignment]:
    """One alignment per distinct model (keyed by folder); the reference itself stays as it is."""
    if similarity_kind not in SIMILARITIES:
        raise VadasmError(f"unknown alignment similarity '{similarity_kind}' (choose {', '.join(SIMILARITIES)})")
    alignments: dict[Path, Alignment] = {}
    for model in models:
        if model.path in alignments or model.path == reference.path:
            continue
        activations = None
        if similarity_kind == "activations":
            groups, _ = unit_groups(arch, reference)
            activations = activation_pairs(reference.path, model.path, groups, validation_token_ids(reference.path))
        alignments[model.path] = compute_alignment(reference, model, arch, similarity_kind, activations)
    return alignments


def write_aligned(reference_ref: str | Path, model_ref: str | Path, output: str | Path,
                  similarity_kind: str = "weights", force: bool = False, progress: bool = True) -> AlignmentReport:
    """Save `model` with its neurons and heads permuted to match `reference`: same function,
    reference's unit order. Provenance and the per-group report go to vadasm_config.json."""
    check_output_free(Path(output), force, [reference_ref, model_ref])
    reference, model = Checkpoint.open(reference_ref), Checkpoint.open(model_ref)
    arch = architecture_for(model.config, model.keys(), str(model.path / "config.json"))
    alignment = align_checkpoints(reference, [model], arch, similarity_kind).get(model.path)
    report = alignment.report if alignment else AlignmentReport(str(reference.path), str(model.path),
                                                                 similarity_kind)
    write_permuted(model, alignment, output, {"reference": {"path": str(reference.path),
                                                            "fingerprint": reference.fingerprint()}},
                   force, progress, also_read=[reference])
    return report


def write_permuted(model: Checkpoint, alignment: Alignment | None, output: str | Path, provenance: dict,
                   force: bool = False, progress: bool = True,
                   also_read: Sequence[str | Path | Checkpoint] = ()) -> None:
    """Stream `model` to `output` with `alignment` applied to every tensor it names (`also_read`: other
    inputs, which the output may not touch either)."""
    names = model.keys()
    plan = [PlannedTensor(n, model.shape(n), model.get(n).dtype) for n in names]
    with atomic_output_dir(output, force, [model, *also_read]) as tmp:
        writer = ShardedWriter(tmp, plan)
        for name in tqdm(names, desc="permute", unit="tensor", disable=not progress):
            tensor = model.get_checked(name)
            writer.write(name, alignment.apply(name, tensor) if alignment else tensor)
        writer.close()
        for file in model.sidecar_files():
            shutil.copy2(file, tmp / file.name)
        (tmp / "config.json").write_text(json.dumps(model.config, indent=2, sort_keys=True) + "\n")
        write_provenance(tmp, provenance_record(
            "align", **provenance, model=input_records([model])[0],
            alignment=alignment.report.to_dict() if alignment else None))
