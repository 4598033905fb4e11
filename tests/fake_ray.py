"""A stand-in for the `ray` module: runs each task at submission, in another working directory.

Enough of Ray's API for `vadasm.scale.RayPool` (init, cluster_resources, put, remote, wait, get,
cancel, shutdown). It records what the pool asked for (task options, the most tasks in flight)
and finishes tasks newest first, so results gathered in order of completion must be put back in
submission order by the pool. Tasks run with the current directory changed, like Ray workers that
start elsewhere: a relative path sent to a task points at nothing.
"""

from __future__ import annotations

import os
import tempfile
from types import SimpleNamespace


class FakeRayError(Exception):
    """Like ray.exceptions.RayTaskError: wraps the task's own exception as `cause`."""

    def __init__(self, cause: BaseException):
        super().__init__(f"task failed\n{type(cause).__name__}: {cause}")
        self.cause = cause


class FakeAuthError(Exception):
    """Like ray.exceptions.AuthenticationError."""


class Ref:
    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error


class FakeRay:
    def __init__(self, cpus: int = 4, gpus: int = 0, init_error: BaseException | None = None):
        self.resources = {"CPU": float(cpus), "GPU": float(gpus)}
        self.init_error = init_error
        self.exceptions = SimpleNamespace(RayError=FakeRayError, AuthenticationError=FakeAuthError)
        self.initialized = False
        self.init_kwargs: dict | None = None
        self.task_options: dict | None = None
        self.in_flight = self.most_in_flight = self.tasks_run = 0
        self.cancelled: list[Ref] = []
        self.elsewhere = tempfile.mkdtemp(prefix="fake-ray-worker-")

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialized, self.init_kwargs = True, kwargs

    def shutdown(self) -> None:
        self.initialized = False

    def cluster_resources(self) -> dict[str, float]:
        return dict(self.resources)

    def put(self, value) -> Ref:
        return Ref(value)

    def remote(self, **options):
        self.task_options = options

        def wrap(fn):
            return SimpleNamespace(remote=lambda *args: self._run(fn, args))

        return wrap

    def _run(self, fn, args) -> Ref:
        args = [a.value if isinstance(a, Ref) else a for a in args]
        self.in_flight += 1
        self.tasks_run += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        here = os.getcwd()
        os.chdir(self.elsewhere)
        try:
            return Ref(fn(*args))
        except Exception as err:  # noqa: BLE001 - a task's failure travels back like Ray's
            return Ref(error=FakeRayError(err))
        finally:
            os.chdir(here)

    def wait(self, refs: list[Ref], num_returns: int = 1) -> tuple[list[Ref], list[Ref]]:
        self.in_flight -= 1
        return [refs[-1]], refs[:-1]  # the newest finishes first

    def get(self, ref: Ref):
        if ref.error is not None:
            raise ref.error
        return ref.value

    def cancel(self, ref: Ref) -> None:
        self.cancelled.append(ref)
