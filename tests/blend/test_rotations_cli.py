"""`vadasm rotations` on pico models: zero against itself, a null model that is not, readable outputs."""

import csv
import json

from pico_models import make_text_model, perturbed_copy

MATRICES_PER_LAYER = 7  # q, k, v, o, gate, up, down
LAYERS = 2


def _rows(folder):
    with open(folder / "rotations.csv") as f:
        return list(csv.DictReader(f))


def test_model_against_itself_is_zero_and_null_is_not(tmp_path, vadasm):
    base = make_text_model(tmp_path / "base", "llama", seed=0)
    out = tmp_path / "rot"
    vadasm("rotations", "--base", base, "--models", base, base, "--top-k", "4", "--output", out, "--quiet")
    rows = _rows(out)
    assert len(rows) == MATRICES_PER_LAYER * LAYERS * 2 * 3  # tensors x (real, null) x 3 pairs
    real = [r for r in rows if r["kind"] == "real"]
    null = [r for r in rows if r["kind"] == "null"]
    assert all(float(r["angle_left_max_deg"]) < 1e-3 and float(r["angle_right_max_deg"]) < 1e-3 for r in real)
    assert all(float(r["spectrum_rel_change"]) == 0 for r in real)
    composed = [r for r in real if r["pair"] == "M0->M2"]
    assert composed and all(float(r["compose_err_left"]) < 1e-5 for r in composed)
    # Against itself the change has norm 0, so the null chain is also unchanged.
    assert all(float(r["delta_rel_norm"]) == 0 for r in null)


def test_real_chain_beside_null_chain(tmp_path, vadasm):
    base = make_text_model(tmp_path / "base", "llama", seed=0)
    m1 = perturbed_copy(base, tmp_path / "m1", scale=0.005, seed=1)
    m2 = perturbed_copy(m1, tmp_path / "m2", scale=0.005, seed=2)
    out = tmp_path / "rot"
    result = vadasm("rotations", "--base", base, "--models", m1, m2, "--top-k", "4", "--output", out, "--json")
    report = json.loads(result.stdout)
    assert report["tensors"] == MATRICES_PER_LAYER * LAYERS
    assert report["skipped"]["model.norm.weight"] == "ndim!=2"
    rows = _rows(out)
    for pair in ("M0->M1", "M1->M2", "M0->M2"):
        for kind in ("real", "null"):
            picked = [r for r in rows if r["pair"] == pair and r["kind"] == kind]
            assert len(picked) == MATRICES_PER_LAYER * LAYERS
            assert all(float(r["angle_left_mean_deg"]) > 0 for r in picked)
    by_key = {(r["tensor"], r["pair"], r["kind"]): r for r in rows}
    for (tensor, pair, kind), row in by_key.items():  # the null's first step has the real step's norm
        if kind == "null" and pair == "M0->M1":
            real = float(by_key[(tensor, pair, "real")]["delta_rel_norm"])
            assert abs(float(row["delta_rel_norm"]) - real) < 1e-4 * real
    payload = json.loads((out / "rotations.json").read_text())
    assert "Procrustes" in payload["definitions"]["rotation"] and len(payload["rows"]) == len(rows)
    assert (out / "rotation_curves.png").stat().st_size > 10_000

    again = tmp_path / "rot2"
    vadasm("rotations", "--base", base, "--models", m1, "--models", m2, "--top-k", "4", "--output", again, "--quiet")
    assert _rows(again) == rows  # seeded null model: same numbers on every run
