"""Tuning finds known optima, always reports the change-nothing candidate, resumes, never tunes on test."""

from __future__ import annotations

import json

import pytest

from synthetic_objectives import Quadratic
from vadasm.errors import VadasmError
from vadasm.tune import make_optimizer, parse_param, space_from_specs, tune

SPACE = space_from_specs(["beta=0:1@0.5", "density=0:1@0.5"])


def run(search, objective=None, **kwargs):
    opts = {k: kwargs.pop(k) for k in ("grid_points", "population", "generations") if k in kwargs}
    optimizer = make_optimizer(search, SPACE, seed=0, **opts)
    return tune(objective or Quadratic(), SPACE, optimizer, progress=False, **kwargs)


def test_grid_finds_the_optimum_and_reports_the_references_first():
    result = run("grid", grid_points=11)
    assert result.best.params == {"beta": 0.3, "density": 0.7} and result.best.objective == pytest.approx(1.0)
    assert [t.kind for t in result.trials[:2]] == ["recipient", "default"]
    assert result.trials[0].params is None and result.trials[0].objective == 0.5
    assert result.improved_over_default and result.improved_over_recipient
    assert len([t for t in result.trials if t.kind == "search"]) == 121


def test_winner_is_chosen_on_validation_and_rescored_on_test():
    result = run("grid", grid_points=11)
    assert {t.split for t in result.trials if t.kind in ("recipient", "default", "search")} == {"val"}
    assert set(result.test) == {"recipient", "default", "winner"}
    assert result.test["winner"].split == "test" and result.test["winner"].params == {"beta": 0.3, "density": 0.7}
    # on test this point scores 1 - (0.6^2 + 0.6^2); the test optimum (0.9, 0.1) was never chosen
    assert result.test["winner"].objective == pytest.approx(1 - 0.72)


@pytest.mark.parametrize(("search", "kwargs", "tolerance"), [
    ("cma", {"budget": 200}, 0.05),
    ("tpe", {"budget": 60}, 0.15),
    ("deap", {"population": 20, "generations": 12}, 0.1),
])
def test_model_based_searches_get_close_to_the_optimum(search, kwargs, tolerance):
    result = run(search, **kwargs)
    assert abs(result.best.params["beta"] - 0.3) < tolerance
    assert abs(result.best.params["density"] - 0.7) < tolerance
    assert result.trials[0].kind == "recipient"


def test_deap_runs_population_times_generations():
    result = run("deap", population=6, generations=3)
    assert len([t for t in result.trials if t.kind == "search"]) == 18


def test_when_nothing_beats_change_nothing_the_recipient_wins():
    result = run("grid", Quadratic(recipient=2.0), grid_points=3)
    assert result.best.kind == "recipient" and result.best.params is None
    assert not result.improved_over_recipient
    assert set(result.test) == {"recipient", "default"}
    assert any("change nothing" in line for line in result.lines())


class Counting(Quadratic):
    calls = 0

    def __call__(self, params, split, controls=False):
        Counting.calls += 1
        return super().__call__(params, split, controls)


def test_resume_reuses_logged_trials(tmp_path):
    log = tmp_path / "trials.jsonl"
    Counting.calls = 0
    first = run("grid", Counting(), grid_points=3, log_path=log)
    calls_first = Counting.calls
    # references + 3x3 grid (less the defaults' point, answered by the reference run) + test of the
    # recipient and the winner: (0.5, 0.5) is the grid's best and ties the defaults, which win as the
    # earlier trial and need no second validation run
    assert first.best.kind == "default"
    assert calls_first == 2 + 8 + 2
    lines = log.read_text().splitlines()
    assert len(lines) == calls_first and json.loads(lines[0])["kind"] == "recipient"
    with log.open("a") as handle:
        handle.write('{"number": 99, "kind": "sea')  # a crash mid-write leaves a torn last line
    second = run("grid", Counting(), grid_points=3, log_path=log)
    assert Counting.calls == calls_first  # nothing evaluated again
    assert all(t.cached for t in second.trials)
    assert second.best.params == first.best.params


def test_worker_processes_give_the_same_result_as_inline():
    inline = run("grid", grid_points=3)
    parallel = run("grid", grid_points=3, workers=2)
    assert [t.objective for t in parallel.trials] == [t.objective for t in inline.trials]


def test_zero_delta_candidate_is_evaluated_when_given():
    result = run("grid", grid_points=2, zero_params={"beta": 0.0})
    zero = result.reference("zero_delta")
    assert zero.params == {"beta": 0.0, "density": 0.5} and result.trials[2] is zero


def test_param_specs():
    p = parse_param("protect_ratio=0:0.5@0.2")
    assert (p.low, p.high, p.default, p.kind) == (0.0, 0.5, 0.2, "float")
    assert parse_param("layers=0:6:int").grid(4) == [0, 2, 4, 6]
    choice = parse_param("map_method=lstsq,procrustes,omp@procrustes")
    assert choice.default == "procrustes" and choice.decode(0.99) == "omp" and choice.decode(0.0) == "lstsq"
    listed = parse_param("density=0.5,0.9@0.9")  # listed numbers reach the graft as numbers, not strings
    assert listed.choices == (0.5, 0.9) and listed.default == 0.9 and listed.grid(5) == [0.5, 0.9]
    for bad in ("beta", "beta=1:0", "beta=0:1@2", "m=onlyone", "beta=a:b"):
        with pytest.raises(VadasmError):
            parse_param(bad)
