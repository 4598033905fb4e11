"""The Ray pool shared by tune and eval, against a fake `ray` (fast); the real Ray runs in test_scale_ray.py."""

from __future__ import annotations

import os
import sys

import pytest

from fake_ray import FakeAuthError, FakeRay
from vadasm.errors import VadasmError
from vadasm.scale import RayPool, cluster_slots, connect, import_ray


def square_after_checking_cwd(x: int, cwd: str) -> int:
    assert os.getcwd() != cwd  # the fake runs tasks elsewhere, as Ray workers may
    return x * x


def test_results_come_back_in_job_order_with_every_slot_busy():
    ray = FakeRay(cpus=3)
    pool = RayPool("auto", ray_module=ray)
    done = []
    jobs = [(f"job {k}", (k, os.getcwd())) for k in range(7)]
    assert pool.map(square_after_checking_cwd, jobs, on_done=lambda label, value: done.append(label)) == [
        k * k for k in range(7)]
    assert pool.slots == 3 and ray.most_in_flight == 3  # the cluster's CPUs, not one at a time
    # gathered as they finish (the fake finishes the newest first; a freed slot takes the next job at once)
    assert done == ["job 2", "job 3", "job 4", "job 5", "job 6", "job 1", "job 0"]
    assert sorted(r.label for r in pool.records) == sorted(label for label, _ in jobs)
    assert all(r.started <= r.finished and r.pid == os.getpid() for r in pool.records)
    assert ray.task_options == {"max_retries": 1, "retry_exceptions": True, "num_cpus": 1}


def test_workers_caps_the_tasks_in_flight_and_sizes_a_local_ray():
    ray = FakeRay(cpus=8)
    pool = RayPool("local", workers=2, ray_module=ray)
    pool.map(square_after_checking_cwd, [(str(k), (k, os.getcwd())) for k in range(5)])
    assert pool.slots == 2 and ray.most_in_flight == 2
    assert ray.init_kwargs["num_cpus"] == 2
    pool.close()
    assert not ray.initialized  # a Ray this pool started is shut down


def test_a_cuda_job_asks_one_gpu_per_task_and_counts_gpu_slots():
    ray = FakeRay(cpus=16, gpus=4)
    pool = RayPool("auto", gpus_per_task=1, ray_module=ray)
    assert pool.slots == 4 and ray.task_options["num_gpus"] == 1
    with pytest.raises(VadasmError, match="the job runs on cuda but the Ray cluster has no GPU"):
        cluster_slots({"CPU": 16.0}, gpus_per_task=1)


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise RuntimeError(f"out of memory on item {x}")
    return x


def test_a_failed_task_names_its_model_and_cancels_the_rest():
    ray = FakeRay(cpus=4)
    pool = RayPool("auto", ray_module=ray)
    with pytest.raises(VadasmError) as err:
        pool.map(fail_on, [(f"model alpha_{k}", (k, 3)) for k in range(4)])
    assert str(err.value) == "model alpha_3: Ray task failed, also on its retry: RuntimeError: out of memory on item 3"
    assert len(ray.cancelled) == 3


def test_no_cluster_and_a_refused_token_are_one_line_with_the_fix():
    missing = FakeRay(init_error=ConnectionError("Could not find any running Ray instance.\nPlease specify"))
    with pytest.raises(VadasmError) as err:
        connect(missing, "auto")
    assert str(err.value) == ("--ray auto: no Ray cluster found (Could not find any running Ray instance.); start "
                              "one with `ray start --head` (or use --ray local for a Ray on this machine only)")
    refused = FakeRay(init_error=FakeAuthError("token mismatch"))
    with pytest.raises(VadasmError, match="refused this client's token .*RAY_AUTH_TOKEN"):
        connect(refused, "auto")
    # What Ray 2.60 raises for a wrong or missing token (seen against a real token-auth Ray); its log names the token
    wrong_token = FakeRay(init_error=ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379"))
    with pytest.raises(VadasmError) as err:
        connect(wrong_token, "auto")
    assert str(err.value).startswith("--ray auto: could not join the Ray cluster there (Failed to connect to Ray "
                                     "cluster at 10.0.0.1:6379); if the cluster uses token authentication, set "
                                     "RAY_AUTH_TOKEN")
    bug = FakeRay(init_error=ValueError("something else"))
    with pytest.raises(ValueError):  # not a user error: keeps its traceback
        connect(bug, "auto")


def test_an_address_nobody_answers_at_is_refused_at_once():
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(VadasmError, match=rf"--ray 127.0.0.1:{port}: no Ray head answers there"):
        connect(FakeRay(), f"127.0.0.1:{port}")


def test_ray_missing_is_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(VadasmError) as err:
        import_ray()
    assert str(err.value) == "--ray needs Ray, which is not installed: pip install 'vadasm[ray]'"
