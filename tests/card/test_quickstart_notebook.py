"""examples/quickstart.ipynb runs top to bottom on the built testbed (slow)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vadasm.testbed.paths import is_built

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


@pytest.mark.slow
@pytest.mark.skipif(not all(is_built(n) for n in ("smollm2", "smollm2-arith", "llava-smollm2")),
                    reason="testbed not built (run: vadasm testbed build)")
def test_quickstart_notebook_runs_on_the_testbed(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("VADASM_NB_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("VADASM_NB_LIMIT", "12")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=1800, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for o in cell.get("outputs", []))
    assert "class A" in text and "blind" in text and "validation gate:" in text
    assert "recipient   val objective" in text and "would upload" in text
    card = (tmp_path / "work" / "smollm2-sees" / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    exec(code.replace("me/smollm2-sees", str(tmp_path / "work" / "smollm2-sees")), {})  # the card's code loads it
