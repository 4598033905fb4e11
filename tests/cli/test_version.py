"""`vadasm --version` prints the package version and exits 0."""

import subprocess
import sys

import vadasm


def test_version_flag():
    done = subprocess.run([sys.executable, "-m", "vadasm", "--version"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"vadasm {vadasm.__version__}"
