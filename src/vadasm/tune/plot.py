"""A picture of the search: every validation trial, the running best, and the references."""

from __future__ import annotations

from pathlib import Path

from vadasm.io.figure import pyplot, save_plot
from vadasm.tune.run import REFERENCE_KINDS, TuneResult


def plot_search(result: TuneResult, path: Path) -> Path:
    plt = pyplot()
    searched = [t for t in result.trials if t.kind == "search"]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = list(range(1, len(searched) + 1))
    ax.scatter(xs, [t.objective for t in searched], s=14, color="tab:blue", label="candidate (val)")
    best, running = float("-inf"), []
    for t in searched:
        best = max(best, t.objective)
        running.append(best)
    ax.plot(xs, running, color="tab:blue", linewidth=1)
    styles = {"recipient": ("black", "--"), "default": ("tab:orange", ":"), "zero_delta": ("tab:green", "-.")}
    for kind in REFERENCE_KINDS:
        ref = result.reference(kind)
        if ref:
            color, style = styles[kind]
            ax.axhline(ref.objective, color=color, linestyle=style, label=f"{kind} (val)")
    return save_plot(fig, ax, path, xlabel="search trial", ylabel="validation objective",
                     title=f"vadasm tune ({result.search}): winner = {result.best.kind if result.best else '-'}")
