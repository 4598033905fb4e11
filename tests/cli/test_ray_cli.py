"""`--ray auto` with no cluster running, on the real Ray: one line on stderr, exit 2, no traceback.
(tune goes through the same `vadasm.scale.connect`, tested with a fake Ray in tests/test_scale.py.)"""

import importlib.util
import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'vadasm[ray]')")
def test_ray_auto_without_a_cluster_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    (tmp_path / "config.json").write_text("{}")
    done = subprocess.run([sys.executable, "-m", "vadasm", "eval", "-m", str(tmp_path), "--ray", "auto"],
                          capture_output=True, text=True, env=env)
    if "no Ray cluster found" not in done.stderr and done.returncode == 0:
        pytest.skip("a Ray cluster is running on this machine")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors and errors[0].startswith("error: --ray auto: no Ray cluster found (")
    assert "Traceback" not in done.stderr
