"""Public benchmarks (VQAv2, OK-VQA, MMLU, GSM8K, MATH-500, AIME 24/25, AMC 23) on the harness.

The tasks are in `tasks.py` (listed with the built-in ones in `vadasm.eval.registry`), the runner in
`runner.py`. This package imports nothing itself, so the registry can read the task declarations
without loading the runner (which depends on the harness, which depends on the registry).
"""
