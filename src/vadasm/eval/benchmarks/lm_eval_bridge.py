"""Text benchmarks through EleutherAI's lm-eval, for users who want its exact task definitions.

Only the text benchmarks it defines identically are bridged (MMLU, GSM8K). lm-eval downloads its
own data from the Hub, so this path needs network access and `--data` is refused with it (one line,
in `evaluate_all`) rather than silently ignored; the results land in the same table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vadasm.errors import VadasmError
from vadasm.eval.benchmarks.runner import BenchScore

# our task -> (lm-eval task, metric key in its results, our metric name)
LM_EVAL_TASKS = {
    "mmlu": ("mmlu", "acc,none", "accuracy"),
    "gsm8k": ("gsm8k", "exact_match,flexible-extract", "accuracy"),
}


def run_lm_eval(name: str, path: Path, tasks: Sequence[str], limit: int | None, device: str,
                batch_size: int) -> list[BenchScore]:
    try:
        import lm_eval
    except ImportError:
        raise VadasmError("--backend lm-eval needs EleutherAI's lm-eval: pip install lm-eval") from None
    unsupported = [t for t in tasks if t not in LM_EVAL_TASKS]
    if unsupported:
        raise VadasmError(f"--backend lm-eval runs only {', '.join(LM_EVAL_TASKS)}; not {', '.join(unsupported)}")
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={path}", tasks=[LM_EVAL_TASKS[t][0] for t in tasks],
        limit=limit, device=device, batch_size=batch_size,
    )
    scores = []
    for task in tasks:
        lm_task, key, metric = LM_EVAL_TASKS[task]
        result = out["results"].get(lm_task)
        if result is None or key not in result:
            raise VadasmError(f"lm-eval returned no '{key}' for task {lm_task}")
        n = out.get("n-samples", {}).get(lm_task, {}).get("effective", 0)
        extra = {"backend": "lm-eval", **{k: v for k, v in result.items() if isinstance(v, float) and k != key}}
        scores.append(BenchScore(name, task, "text", metric, float(result[key]), int(n), {}, None, extra))
    return scores
