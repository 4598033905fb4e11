"""Search strategies behind one ask/tell interface; all maximise the objective.

`ask()` returns the next batch of parameter dicts (evaluated in parallel by the caller), `tell()`
receives their scores; an empty batch means the strategy is finished. Every strategy is seeded, so
a resumed run asks the same candidates again and the trial log answers them without re-evaluation.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any, Protocol

from vadasm.errors import MissingExtraError, VadasmError
from vadasm.tune.space import SearchSpace

Params = dict[str, Any]


class Optimizer(Protocol):
    name: str

    def ask(self) -> list[Params]: ...

    def tell(self, results: list[tuple[Params, float]]) -> None: ...


class GridSearch:
    """Every combination of `points` values per float range (all choices, spaced ints)."""

    name = "grid"

    def __init__(self, space: SearchSpace, points: int = 5, batch: int = 8):
        self._pending = space.grid(points)
        self._batch = batch
        self.total = len(self._pending)  # for the progress bar

    def ask(self) -> list[Params]:
        batch, self._pending = self._pending[: self._batch], self._pending[self._batch :]
        return batch

    def tell(self, results: list[tuple[Params, float]]) -> None:
        pass


class CmaSearch:
    """CMA-ES (the `cma` package) in the unit cube, started at the defaults with step 0.3."""

    name = "cma"

    def __init__(self, space: SearchSpace, seed: int = 0, popsize: int | None = None):
        try:
            import cma
        except ImportError as err:
            raise MissingExtraError("cma", "tune", "--search cma") from err
        if len(space.params) < 2:
            raise VadasmError("--search cma needs at least two parameters (use grid or tpe for one)")
        options = {"bounds": [0.0, 1.0], "seed": seed + 1, "verbose": -9}
        if popsize:
            options["popsize"] = popsize
        self._space = space
        self._es = cma.CMAEvolutionStrategy(space.encode(space.defaults()), 0.3, options)
        self._points: list[list[float]] = []

    def ask(self) -> list[Params]:
        self._points = [list(map(float, x)) for x in self._es.ask()]
        return [self._space.decode(p) for p in self._points]

    def tell(self, results: list[tuple[Params, float]]) -> None:
        self._es.tell(self._points, [-score for _, score in results])


class TpeSearch:
    """Optuna's TPE sampler through its ask/tell interface, one candidate per ask."""

    name = "tpe"

    def __init__(self, space: SearchSpace, seed: int = 0, batch: int = 1):
        try:
            import optuna
        except ImportError as err:
            raise MissingExtraError("optuna", "tune", "--search tpe") from err
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dist = optuna.distributions
        self._distributions = {
            p.name: dist.CategoricalDistribution(list(p.choices)) if p.kind == "choice"
            else dist.IntDistribution(int(p.low), int(p.high)) if p.kind == "int"
            else dist.FloatDistribution(p.low, p.high)
            for p in space.params
        }
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(5, 2 * len(space.params)))
        self._study = optuna.create_study(direction="maximize", sampler=sampler)
        self._batch = batch
        self._trials: list = []

    def ask(self) -> list[Params]:
        self._trials = [self._study.ask(self._distributions) for _ in range(self._batch)]
        return [dict(t.params) for t in self._trials]

    def tell(self, results: list[tuple[Params, float]]) -> None:
        for trial, (_, score) in zip(self._trials, results):
            self._study.tell(trial, score)


class DeapSearch:
    """DEAP genetic algorithm as in the seed (population 30, 15 generations): blend crossover,
    Gaussian mutation and tournament selection in the unit cube, with elitism."""

    name = "deap"

    def __init__(self, space: SearchSpace, seed: int = 0, population: int = 30, generations: int = 15,
                 crossover: float = 0.6, mutation: float = 0.3):
        try:
            from deap import tools
        except ImportError as err:
            raise MissingExtraError("deap", "tune", "--search deap") from err
        self._tools = tools
        self._space = space
        self._rng = random.Random(seed)
        self._generations_left = generations
        self.total = population * generations  # for the progress bar
        self._cx, self._mut = crossover, mutation
        dims = len(space.params)
        first = [space.encode(space.defaults())]
        first += [[self._rng.random() for _ in range(dims)] for _ in range(population - 1)]
        self._population = first
        self._scored: list[tuple[list[float], float]] = []

    def ask(self) -> list[Params]:
        if self._generations_left <= 0:
            return []
        return [self._space.decode(p) for p in self._population]

    def tell(self, results: list[tuple[Params, float]]) -> None:
        self._scored = [(point, score) for point, (_, score) in zip(self._population, results)]
        self._generations_left -= 1
        self._population = self._next_generation()

    def _next_generation(self) -> list[list[float]]:
        # deap's operators mutate lists in place and read `.fitness`; a tiny wrapper is all they need.
        tools, rng, individual = self._tools, self._rng, _individual_class()
        state = random.getstate()
        random.seed(rng.random())  # deap draws from the global `random`; keep it seeded and restore it
        try:
            individuals = []
            for point, score in self._scored:
                ind = individual(point)
                ind.fitness.values = (score,)
                individuals.append(ind)
            elite = max(individuals, key=lambda i: i.fitness.values[0])
            chosen = [individual(i) for i in tools.selTournament(individuals, len(individuals) - 1, tournsize=3)]
            for a, b in zip(chosen[::2], chosen[1::2]):
                if random.random() < self._cx:
                    tools.cxBlend(a, b, alpha=0.3)
            for ind in chosen:
                if random.random() < self._mut:
                    tools.mutGaussian(ind, mu=0.0, sigma=0.15, indpb=0.5)
            return [list(elite)] + [[min(max(x, 0.0), 1.0) for x in ind] for ind in chosen]
        finally:
            random.setstate(state)


@lru_cache(maxsize=1)
def _individual_class() -> type:
    """A list with a maximising deap `Fitness`, made without `deap.creator`'s global registry."""
    from deap import base

    class FitnessMax(base.Fitness):
        weights = (1.0,)

    class Individual(list):
        def __init__(self, values):
            super().__init__(values)
            self.fitness = FitnessMax()

    return Individual


SEARCHES = ("grid", "cma", "tpe", "deap")


def make_optimizer(search: str, space: SearchSpace, seed: int = 0, grid_points: int = 5, population: int = 30,
                   generations: int = 15, batch: int = 1) -> Optimizer:
    if search == "grid":
        return GridSearch(space, grid_points, batch=max(batch, 1))
    if search == "cma":
        return CmaSearch(space, seed)
    if search == "tpe":
        return TpeSearch(space, seed, batch=batch)
    if search == "deap":
        return DeapSearch(space, seed, population, generations)
    raise VadasmError(f"unknown --search {search!r}; choose one of {', '.join(SEARCHES)}")
