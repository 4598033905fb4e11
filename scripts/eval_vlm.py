#!/usr/bin/env python
"""The seed's evaluation entry point, kept as a thin wrapper over `vadasm eval`.

    python scripts/eval_vlm.py --model ./vadasm-7b --tasks vqav2 okvqa mmlu gsm8k --limit 1000 \
        --data vqav2=vqav2_val.jsonl --data mmlu=cais/mmlu:all ...

--tasks takes space-separated names (the seed's style); public benchmarks need --data TASK=SOURCE
(a local .jsonl/.json/.parquet file, or a Hub dataset id when online). Every other `vadasm eval`
option follows and is passed through (e.g. --split, --compare, --backend vllm, --json-out out.json).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Other `vadasm eval` options are passed through unchanged.")
    parser.add_argument("--model", required=True, action="append", help="model folder (repeatable)")
    parser.add_argument("--tasks", nargs="+", required=True, help="e.g. vqav2 okvqa mmlu gsm8k math500")
    parser.add_argument("--limit", type=int, default=None, help="items per task")
    args, rest = parser.parse_known_args(argv)
    command = ["eval", *[x for m in args.model for x in ("--model", m)], "--tasks", ",".join(args.tasks), *rest]
    if args.limit is not None:
        command += ["--limit", str(args.limit)]
    from vadasm.cli import main as vadasm_main

    sys.argv = ["vadasm", *command]
    vadasm_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
