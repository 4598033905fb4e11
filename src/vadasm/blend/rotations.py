"""`vadasm rotations`: how singular subspaces turn along base -> M1 -> M2, beside a null model.

For every selected 2-D weight present with the same shape in all models, the chain of weights
and a null chain (each real change replaced by a seeded Gaussian change of the same Frobenius
norm) are measured with `rotation_math.measure_chain`; rows go to `rotations.csv` and
`rotations.json`, and `rotation_curves.png` plots them per layer and matrix type. The measures
are defined in `vadasm.blend.rotation_math`.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from vadasm.blend import rotation_math
from vadasm.blend.decompose import is_float_matrix
from vadasm.blend.rotation_math import PairMeasure, measure_chain, null_step
from vadasm.blend.select import TensorRoles, TensorSelector
from vadasm.blend.svd import svd_fp32
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint, atomic_output_dir
from vadasm.io.figure import pyplot
from vadasm.io.provenance import tensor_seed
from vadasm.version import __version__

CSV_FILE = "rotations.csv"
JSON_FILE = "rotations.json"
PLOT_FILE = "rotation_curves.png"


@dataclass
class RotationRow:
    tensor: str
    layer: int | None
    type: str
    kind: str  # "real" or "null"
    pair: str  # "M0->M1"
    k: int
    angle_left_mean_deg: float
    angle_left_max_deg: float
    angle_right_mean_deg: float
    angle_right_max_deg: float
    spectrum_rel_change: float
    delta_rel_norm: float
    compose_err_left: float | None
    compose_err_right: float | None


@dataclass
class RotationReport:
    output: str
    base: str
    models: list[str]
    top_k: int
    seed: int
    tensors: int
    skipped: dict[str, str]
    summary: list[dict]
    seconds: float
    rows: list[RotationRow]

    def to_dict(self, with_rows: bool = True) -> dict:
        out = asdict(self)
        if not with_rows:
            out.pop("rows")
        return out


def run_rotations(
    base: str,
    models: list[str],
    output: str | Path,
    selector: TensorSelector,
    *,
    top_k: int = 32,
    seed: int = 0,
    device: str = "cpu",
    force: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> RotationReport:
    start = time.perf_counter()
    if not models:
        raise VadasmError("give at least one model after the base (--models M1 M2)")
    if top_k < 1:
        raise VadasmError(f"--top-k must be at least 1 (got {top_k})")
    opened = dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    chain = [Checkpoint.open(ref, **opened) for ref in [base, *models]]
    roles = TensorRoles(chain[0].config, chain[0].keys())
    chosen, skipped = [], {}
    for name in chain[0].keys():
        entry = chain[0].entries[name]
        if any(name not in c for c in chain[1:]):
            reason = "missing_in_model"
        elif len(entry.shape) != 2:
            reason = "ndim!=2"
        elif any(c.shape(name) != entry.shape for c in chain[1:]):
            reason = "shape_mismatch"
        elif not is_float_matrix(entry.dtype, entry.shape):
            reason = "not_float"
        else:
            reason = selector.reason_to_skip(name, roles)
        if reason:
            skipped[name] = reason
        else:
            chosen.append(name)
    if not chosen:
        raise VadasmError(f"{chain[0].path}: no 2-D weight shared by all models is selected")

    labels = [f"M{i}" for i in range(len(chain))]
    rows: list[RotationRow] = []
    for name in tqdm(chosen, desc="rotations", unit="tensor", disable=not progress):
        weights = [c.get_checked(name).to(device, torch.float32) for c in chain]
        generator = torch.Generator().manual_seed(tensor_seed(seed, name))
        null = [weights[0]]
        for prev, cur in zip(weights, weights[1:], strict=False):
            null.append(null_step(null[-1].cpu(), float(torch.linalg.matrix_norm(cur - prev)), generator).to(device))
        layer, kind = roles.layer_and_type(name)
        for which, chain_w in (("real", weights), ("null", null)):
            svds = [svd_fp32(w) for w in chain_w]
            k = min(top_k, len(svds[0].S))
            for m in measure_chain(svds, chain_w, top_k):
                rows.append(_row(name, layer, kind, which, labels, k, m))
    report = RotationReport(
        output=str(Path(output).expanduser().resolve()), base=str(chain[0].path.resolve()),
        models=[str(c.path.resolve()) for c in chain[1:]], top_k=top_k, seed=seed, tensors=len(chosen), skipped=skipped,
        summary=_summary(rows), seconds=0.0, rows=rows,
    )
    with atomic_output_dir(output, force, chain) as tmp:
        _write_csv(rows, tmp / CSV_FILE)
        plot_curves(rows, labels, tmp / PLOT_FILE)
        report.seconds = round(time.perf_counter() - start, 3)
        payload = {"tool": f"vadasm {__version__}", "definitions": _definitions(), **report.to_dict()}
        (tmp / JSON_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    return report


def _row(name: str, layer: int | None, kind: str, which: str, labels: list[str], k: int, m: PairMeasure) -> RotationRow:
    values = {f.name: getattr(m, f.name) for f in fields(PairMeasure) if f.name not in ("a", "b")}
    return RotationRow(name, layer, kind, which, f"{labels[m.a]}->{labels[m.b]}", k, **values)


def _summary(rows: list[RotationRow]) -> list[dict]:
    """Mean of each measure over tensors, per pair and kind (real vs null)."""
    groups: dict[tuple[str, str], list[RotationRow]] = {}
    for row in rows:
        groups.setdefault((row.pair, row.kind), []).append(row)
    measures = ["angle_left_mean_deg", "angle_right_mean_deg", "spectrum_rel_change", "delta_rel_norm",
                "compose_err_left", "compose_err_right"]
    out = []
    for (pair, kind), group in groups.items():
        entry: dict = {"pair": pair, "kind": kind, "tensors": len(group)}
        for measure in measures:
            values = [getattr(r, measure) for r in group if getattr(r, measure) is not None]
            entry[measure] = sum(values) / len(values) if values else None
        out.append(entry)
    return out


def _definitions() -> dict:
    return {
        "angles": "principal angles (degrees) between the top-k left (U) / right (V) singular subspaces",
        "rotation": "R_ab = argmin over k x k orthogonal R of ||U_a R - U_b||_F (orthogonal Procrustes)",
        "compose_err": "||R_01 @ R_12 - R_02||_F / sqrt(k), on the row of pair M0->M2",
        "spectrum_rel_change": "||S_b - S_a|| / ||S_a|| over all singular values",
        "delta_rel_norm": "||W_b - W_a||_F / ||W_a||_F",
        "null": "each real change W_i - W_(i-1) replaced by a seeded Gaussian matrix of the same Frobenius norm",
        "module": rotation_math.__name__,
    }


def _write_csv(rows: list[RotationRow], path: Path) -> None:
    names = [f.name for f in fields(RotationRow)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def plot_curves(rows: list[RotationRow], labels: list[str], path: Path) -> None:
    """Four panels over layers, one colour per matrix type; solid = real change, dashed = null."""
    plt = pyplot()
    overall = f"{labels[0]}->{labels[-1]}"
    panels = [
        ("angle_left_mean_deg", overall, "mean principal angle, left subspace (deg)"),
        ("angle_right_mean_deg", overall, "mean principal angle, right subspace (deg)"),
        ("compose_err_left", overall, "composition error ||R01 R12 - R02|| / sqrt(k), left"),
        ("spectrum_rel_change", overall, "spectrum change ||S_b - S_a|| / ||S_a||"),
    ]
    types = sorted({r.type for r in rows})
    colours = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(types)}
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    for ax, (measure, pair, title) in zip(axes.flat, panels, strict=True):
        drawn = False
        for kind, style in (("real", "-"), ("null", "--")):
            for kind_type in types:
                points = sorted((r.layer, getattr(r, measure)) for r in rows
                                if r.kind == kind and r.type == kind_type and r.pair == pair
                                and r.layer is not None and getattr(r, measure) is not None)
                if not points:
                    continue
                drawn = True
                ax.plot([p[0] for p in points], [p[1] for p in points], style, color=colours[kind_type],
                        lw=1.6 if kind == "real" else 1.0, alpha=1.0 if kind == "real" else 0.6,
                        label=kind_type if kind == "real" else None)
        ax.set_title(f"{title}\n{pair}", fontsize=9)
        ax.set_xlabel("layer")
        if not drawn:
            ax.text(0.5, 0.5, "needs two models after the base", ha="center", va="center", transform=ax.transAxes)
    handles, names = axes.flat[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="grey", ls="--"))
    names.append("null (random change, same norm)")
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
