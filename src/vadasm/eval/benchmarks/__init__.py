"""Public benchmarks (VQAv2, OK-VQA, MMLU, GSM8K, MATH-500, AIME 24/25, AMC 23) on the harness."""

from vadasm.eval.benchmarks.runner import BenchScore, load_items, run_benchmarks
from vadasm.eval.benchmarks.tasks import BENCHMARKS, HUB_SOURCES

__all__ = ["BENCHMARKS", "HUB_SOURCES", "BenchScore", "load_items", "run_benchmarks"]
