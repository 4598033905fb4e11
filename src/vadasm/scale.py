"""Ray as the scale-out engine: one task pool for every embarrassingly parallel job.

`vadasm tune --ray` spreads candidates and `vadasm eval --ray` spreads models over a Ray cluster
through `RayPool`, so both share one answer to the questions a cluster raises: how many tasks run
at once (every slot of the cluster unless told fewer), what each task asks for (one CPU, or one GPU
when the job runs on cuda, so a GPU cluster never piles tasks onto one device), what happens when
a task fails (Ray retries it once; a second failure names the model), and how results come back
(gathered with `ray.wait` as they finish, returned in submission order). Each task's start and end
times are recorded, so a run can show that its tasks really overlapped.

Workers may run in another directory or on another machine: callers send absolute paths only.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vadasm.errors import VadasmError

INSTALL_HINT = "pip install 'vadasm[ray]'"
START_HINT = "start one with `ray start --head` (or use --ray local for a Ray on this machine only)"
TOKEN_HINT = ("if the cluster uses token authentication, set RAY_AUTH_TOKEN (or ~/.ray/auth_token) to its token, "
              "from `ray get-auth-token` on the head node")


@dataclass
class TaskRecord:
    """When and where one task ran (wall-clock seconds since the epoch, as `time.time()`)."""

    label: str
    started: float
    finished: float
    host: str
    pid: int


def import_ray() -> Any:
    """The `ray` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise VadasmError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(ray: Any, address: str, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address` ('local': start a private Ray with `num_cpus` CPUs).

    Returns whether this call initialised Ray (and so should shut it down). A missing cluster and
    a refused token become one line with the fix, instead of Ray's traceback.
    """
    if ray.is_initialized():
        return False
    _check_reachable(address)
    try:
        if address == "local":
            # address="local": always a new private Ray, even where `ray start` left a cluster running
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as err:
        if _is_auth_error(ray, err):
            raise VadasmError(f"--ray {address}: the cluster refused this client's token ({_first_line(err)}); "
                              f"{TOKEN_HINT.removeprefix('if the cluster uses token authentication, ')}") from None
        if not isinstance(err, ConnectionError):
            raise
        if "could not find any running ray instance" in str(err).lower():
            raise VadasmError(f"--ray {address}: no Ray cluster found ({_first_line(err)}); {START_HINT}") from None
        # A head answered (see _check_reachable) but the connection failed: Ray 2.5x says only this when
        # the token is wrong or missing (the reason is in its log lines), or when versions differ.
        raise VadasmError(f"--ray {address}: could not join the Ray cluster there ({_first_line(err)}); "
                          f"{TOKEN_HINT}; the client's Ray and Python versions must match the cluster's") from None
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT nobody answers at is one line now; `ray.init` would retry it for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in address:
        return  # 'auto', 'local', ray://... : Ray reports those itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise VadasmError(f"--ray {address}: no Ray head answers there ({err.strerror or err}); {START_HINT}") from None


def _is_auth_error(ray: Any, err: Exception) -> bool:
    auth_error = getattr(getattr(ray, "exceptions", None), "AuthenticationError", None)
    if isinstance(auth_error, type) and isinstance(err, auth_error):
        return True
    text = str(err).lower()
    return "unauthenticated" in text or "authentication" in text


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def cluster_slots(resources: dict[str, float], gpus_per_task: int) -> int:
    """Tasks the cluster can run at once: its GPUs when each task takes one, else its CPUs."""
    if gpus_per_task:
        gpus = int(resources.get("GPU", 0))
        if gpus < gpus_per_task:
            raise VadasmError("--ray: the job runs on cuda but the Ray cluster has no GPU; use --device cpu "
                              "or join GPU nodes (`ray start --address HEAD:6379 --num-gpus N`)")
        return gpus // gpus_per_task
    return max(1, int(resources.get("CPU", 1)))


def _timed(fn: Callable, args: tuple) -> tuple[Any, dict]:
    """Run one task where Ray placed it, recording when and where."""
    started = time.time()
    value = fn(*args)
    return value, {"started": started, "finished": time.time(), "host": socket.gethostname(), "pid": os.getpid()}


class RayPool:
    """Ray tasks for independent jobs, at most `slots` at a time, gathered as they finish."""

    def __init__(self, address: str, gpus_per_task: int = 0, workers: int | None = None, ray_module: Any = None):
        if workers is not None and workers < 1:
            raise VadasmError(f"--workers {workers}: give at least 1")
        self.ray = ray_module or import_ray()
        self.address = address
        self._owns_ray = connect(self.ray, address, num_cpus=workers if address == "local" else None)
        self.slots = workers or cluster_slots(self.ray.cluster_resources(), gpus_per_task)
        options: dict[str, Any] = {"max_retries": 1, "retry_exceptions": True, "num_cpus": 1}
        if gpus_per_task:
            options["num_gpus"] = gpus_per_task
        self.options = options
        self._remote = self.ray.remote(**options)(_timed)
        self.records: list[TaskRecord] = []

    def map(self, fn: Callable, jobs: Sequence[tuple[str, tuple]],
            on_done: Callable[[str, Any], None] | None = None) -> list[Any]:
        """`fn(*args)` for each `(label, args)` job; results in job order.

        A task that fails twice (Ray retries it once) stops the run with one line naming its label;
        the tasks still running are cancelled.
        """
        ray = self.ray
        shared = ray.put(fn)  # sent to the object store once, not once per task
        waiting = list(enumerate(jobs))
        running: dict[Any, tuple[int, str]] = {}
        results: list[Any] = [None] * len(jobs)
        while waiting or running:
            while waiting and len(running) < self.slots:
                index, (label, args) = waiting.pop(0)
                running[self._remote.remote(shared, args)] = (index, label)
            ready, _ = ray.wait(list(running), num_returns=1)
            index, label = running.pop(ready[0])
            try:
                value, where = ray.get(ready[0])
            except ray.exceptions.RayError as err:
                for ref in running:
                    ray.cancel(ref)
                raise VadasmError(f"{label}: Ray task failed, also on its retry: {_task_error(err)}") from None
            self.records.append(TaskRecord(label, **where))
            results[index] = value
            if on_done is not None:
                on_done(label, value)
        return results

    def close(self) -> None:
        """Shut down a Ray this pool started or joined; a Ray the caller initialised is left running."""
        if self._owns_ray:
            self.ray.shutdown()
            self._owns_ray = False


def _task_error(err: BaseException) -> str:
    """The task's own exception as one line (Ray wraps it with the remote traceback)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {_first_line(cause)}"
    return f"{type(err).__name__}: {_first_line(err)}"
