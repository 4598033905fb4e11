"""A tuning run: references first, then the optimizer's candidates, all on the validation split.

1. The "change nothing" candidate (the recipient alone), the untuned defaults and, when the builder
   has one, the zero-delta candidate are always evaluated first, with controls.
2. The optimizer asks for batches; each candidate is evaluated once (in worker processes or on Ray)
   and logged to a JSONL file; a rerun with the same log answers known candidates from it (resume).
3. The winner is the best validation objective; on a tie the earlier reference wins, so a search that
   finds nothing better returns "change nothing" or the defaults.
4. The winner, the defaults and the recipient are re-scored on the test split, which no decision
   ever saw, and the validation gate is applied to the winner.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vadasm.errors import VadasmError
from vadasm.eval.gate import GateResult, validation_gate
from vadasm.scale import RayPool
from vadasm.tune.objective import Evaluation
from vadasm.tune.optimizers import Optimizer
from vadasm.tune.space import SearchSpace

Objective = Callable[[dict[str, Any] | None, str, bool], Evaluation]
REFERENCE_KINDS = ("recipient", "default", "zero_delta")


@dataclass
class Trial:
    number: int
    kind: str  # "recipient", "default", "zero_delta" or "search"
    params: dict[str, Any] | None
    split: str
    controls: bool
    objective: float
    scores: dict[str, float]
    seconds: float
    cached: bool = False
    started: float | None = None  # wall clock (time.time()) where the evaluation ran; None in older logs
    finished: float | None = None


@dataclass
class TuneResult:
    search: str
    space: list[dict]
    seed: int
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None
    best_validation: Trial | None = None  # the winner re-scored on val with controls (for the gate)
    test: dict[str, Trial] = field(default_factory=dict)
    gate: GateResult | None = None
    improved_over_default: bool = False
    improved_over_recipient: bool = False
    seconds: float = 0.0

    def reference(self, kind: str) -> Trial | None:
        return next((t for t in self.trials if t.kind == kind), None)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = []
        for kind in REFERENCE_KINDS:
            ref = self.reference(kind)
            if ref:
                out.append(f"{kind:<11} val objective {ref.objective:.4f}  params {ref.params}")
        searched = [t for t in self.trials if t.kind == "search"]
        out.append(f"searched {len(searched)} candidates ({self.search})")
        if self.best:
            out.append(f"winner: {self.best.kind} {self.best.params}  val objective {self.best.objective:.4f}")
        if not self.improved_over_default:
            out.append("no candidate beat the untuned defaults on validation")
        if not self.improved_over_recipient:
            out.append("no candidate beat the recipient alone (change nothing) on validation")
        for name, trial in self.test.items():
            out.append(f"test  {name:<9} objective {trial.objective:.4f}  " +
                       "  ".join(f"{k} {v:.4f}" for k, v in sorted(trial.scores.items())))
        if self.gate:
            out.append(self.gate.line())
        return out


def key_of(params: dict[str, Any] | None, split: str, controls: bool) -> str:
    return json.dumps([params, split, controls], sort_keys=True)


def read_log(path: Path) -> dict[str, Trial]:
    """Trials of an earlier run, by candidate key; a torn last line (crash mid-write) is ignored."""
    known: dict[str, Trial] = {}
    if not path.is_file():
        return known
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            trial = Trial(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            if number == len(lines):
                break
            raise VadasmError(f"{path}: line {number} is not a trial record; use another --log") from None
        known[key_of(trial.params, trial.split, trial.controls)] = trial
    return known


def _evaluate(objective: Objective, params, split: str, controls: bool, threads: int) -> Evaluation:
    """One candidate wherever it runs, with the wall-clock start and end (to show tasks overlapping)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    started = time.time()
    evaluation = objective(params, split, controls)
    return replace(evaluation, started=started, finished=time.time())


def candidate_label(params: dict[str, Any] | None, split: str) -> str:
    """How a failed Ray task names its candidate."""
    return f"tune candidate {'recipient (change nothing)' if params is None else json.dumps(params)} on {split}"


class Evaluator:
    """Evaluates batches inline, in worker processes, or as Ray tasks, returning results in order.

    With Ray, a batch is spread over the pool's slots and gathered as the tasks finish; the pool
    comes either ready made (the CLI sizes the optimizer's batches by its slots) or from an address.
    """

    def __init__(self, objective: Objective, workers: int = 1, ray_address: str | None = None,
                 threads: int | None = None, pool: RayPool | None = None):
        self.objective, self.workers, self._pool, self._ray = objective, workers, None, pool
        self._owns_ray = pool is None and ray_address is not None
        # Worker processes share this machine's cores; without a choice each takes its share. Ray tasks
        # run elsewhere with their own CPU count (OMP_NUM_THREADS), so only an explicit --threads goes there.
        self.ray_threads = threads or 0
        self.threads = threads or (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0)
        if self._owns_ray:
            self._ray = RayPool(ray_address, workers=workers if workers > 1 else None)
        elif pool is None and workers > 1:
            self._pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))

    def run(self, jobs: list[tuple[Any, str, bool]]) -> list[Evaluation]:
        if self._ray is not None:
            return self._ray.map(_evaluate, [(candidate_label(p, s), (self.objective, p, s, c, self.ray_threads))
                                             for p, s, c in jobs])
        if self._pool is not None:
            futures = [self._pool.submit(_evaluate, self.objective, p, s, c, self.threads) for p, s, c in jobs]
            return [f.result() for f in futures]
        return [_evaluate(self.objective, p, s, c, 0) for p, s, c in jobs]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        if self._owns_ray:
            self._ray.close()


class _Log:
    def __init__(self, path: Path | None, known: dict[str, Trial]):
        self.path, self.known, self.trials = path, known, []

    def get(self, params, split: str, controls: bool) -> Trial | None:
        """A logged trial for this candidate; one run with controls also answers one without."""
        found = self.known.get(key_of(params, split, controls))
        return found if found is not None or controls else self.known.get(key_of(params, split, True))

    def add(self, kind: str, params, split: str, controls: bool, evaluation: Evaluation | None,
            cached: Trial | None = None) -> Trial:
        source = cached or evaluation
        trial = Trial(len(self.trials), kind, params, split, controls, source.objective, dict(source.scores),
                      source.seconds, cached=cached is not None, started=source.started, finished=source.finished)
        self.trials.append(trial)
        if cached is None:
            self.known[key_of(params, split, controls)] = trial
            if self.path is not None:
                with self.path.open("a") as handle:
                    handle.write(json.dumps(asdict(trial)) + "\n")
        return trial


def _evaluate_batch(log: _Log, evaluator: Evaluator, kind: str | list[str], batch: list, split: str, controls: bool,
                    ) -> list[Trial]:
    """Evaluate the candidates of a batch the log does not know yet; trials in batch order.

    `kind` names every candidate of the batch, or each one (a list as long as the batch).
    """
    kinds = kind if isinstance(kind, list) else [kind] * len(batch)
    missing = list({key_of(p, split, controls): p for p in batch if log.get(p, split, controls) is None}.values())
    fresh = dict(zip((key_of(p, split, controls) for p in missing),
                     evaluator.run([(p, split, controls) for p in missing]))) if missing else {}
    out = []
    for kind_of, params in zip(kinds, batch):
        key = key_of(params, split, controls)
        if key in fresh:  # evaluated now (a duplicate later in the batch reads it from the log)
            out.append(log.add(kind_of, params, split, controls, fresh.pop(key)))
        else:  # known from an earlier run (resume) or from earlier in this batch
            out.append(log.add(kind_of, params, split, controls, None, cached=log.get(params, split, controls)))
    return out


def tune(objective: Objective, space: SearchSpace, optimizer: Optimizer, budget: int | None = None,
         log_path: Path | None = None, workers: int = 1, ray_address: str | None = None,
         zero_params: dict[str, Any] | None = None, seed: int = 0, test: bool = True,
         progress: bool = True, higher_is_better: dict[str, bool] | None = None,
         threads: int | None = None, pool: RayPool | None = None) -> TuneResult:
    """Search on validation, always against the references, then re-score the winner on test.

    Candidates run inline, in `workers` processes, or as Ray tasks: on `pool` (left open for its
    owner to close) or on a pool made for `ray_address`.
    """
    started = time.perf_counter()
    log = _Log(log_path, read_log(log_path) if log_path else {})
    evaluator = Evaluator(objective, workers, ray_address, threads, pool)
    result = TuneResult(optimizer.name, [asdict(p) for p in space.params], seed)
    try:
        references = [("recipient", None), ("default", space.defaults())]
        if zero_params is not None:
            references.append(("zero_delta", {**space.defaults(), **zero_params}))
        # one batch (side by side on workers or Ray), with controls: the gate needs the blind runs
        _evaluate_batch(log, evaluator, [kind for kind, _ in references], [p for _, p in references], "val", True)
        searched = 0
        total = budget if budget is not None else getattr(optimizer, "total", None)
        with tqdm(total=total, desc=f"tune ({optimizer.name})", unit=" trials", disable=not progress) as bar:
            while budget is None or searched < budget:
                batch = optimizer.ask()
                if not batch:
                    break
                trials = _evaluate_batch(log, evaluator, "search", batch, "val", False)
                optimizer.tell([(t.params, t.objective) for t in trials])
                searched += len(trials)
                bar.update(len(trials))
        result.trials = log.trials
        result.best = _winner(log.trials)
        default, recipient = result.reference("default"), result.reference("recipient")
        result.improved_over_default = result.best.objective > default.objective
        result.improved_over_recipient = result.best.objective > recipient.objective
        if result.best.kind == "search":  # re-score with controls on val for the gate
            result.best_validation = _evaluate_batch(log, evaluator, "winner", [result.best.params], "val", True)[0]
        else:
            result.best_validation = result.best
        result.gate = validation_gate(result.best_validation.scores, recipient.scores, "val", higher_is_better)
        if test:
            named = {"recipient": None, "default": default.params, "winner": result.best.params}
            jobs = {name: params for name, params in named.items()
                    if name == "recipient" or params is not None}
            unique = list({key_of(p, "test", True): p for p in jobs.values()}.values())
            tested = {key_of(t.params, "test", True): t
                      for t in _evaluate_batch(log, evaluator, "test", unique, "test", True)}
            result.test = {name: tested[key_of(p, "test", True)] for name, p in jobs.items()}
    finally:
        evaluator.close()
    result.trials = log.trials
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def _winner(trials: list[Trial]) -> Trial:
    """Best validation objective; ties go to the earliest trial (references come first)."""
    candidates = [t for t in trials if t.split == "val" and t.kind in (*REFERENCE_KINDS, "search")]
    best = candidates[0]
    for trial in candidates[1:]:
        if trial.objective > best.objective:
            best = trial
    return best
