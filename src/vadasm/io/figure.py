"""PNG figures: matplotlib on its file-only backend, and one way to finish and write a one-panel plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: figures only go to files, so no display is needed (servers, tests).

    Imported on call: matplotlib is slow to import and only the commands that draw need it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plot(fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str) -> Path:
    """Label the axes, add the legend, write `path` (PNG, 120 dpi) and free the figure; returns `path`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path
