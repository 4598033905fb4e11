#!/usr/bin/env python
"""The seed's entry point, kept as a thin wrapper over `vadasm graft`.

    python scripts/vmerge.py --small SMALL --large LARGE --output OUT [--no-vision] [--val_vision DATA]

--small is the recipient, --large the vision-language donor. --no-vision writes only the merged
language model (possible when both share a base: pass --base). --val_vision evaluates the result on
that task ("easyvqa") beside its controls; a folder of images is used as calibration images instead.
Every other `vadasm graft` option can follow and is passed through (e.g. --base, --beta, --map).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Other `vadasm graft` options are passed through unchanged.")
    parser.add_argument("--small", required=True, help="recipient: the (small) text model")
    parser.add_argument("--large", required=True, help="donor: the vision-language model")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--no-vision", action="store_true", help="text-only merge of the language models")
    parser.add_argument("--val_vision", "--val-vision", default=None,
                        help="'easyvqa' to evaluate the graft, or a folder of calibration images")
    args, rest = parser.parse_known_args(argv)
    command = ["graft", args.large, args.small, args.output, *rest]
    if args.no_vision:
        command.append("--text-only")
    if args.val_vision:
        command += (["--calibration-images", args.val_vision] if Path(args.val_vision).is_dir()
                    else ["--eval", args.val_vision])
    from vadasm.cli import main as vadasm_main

    sys.argv = ["vadasm", *command]
    vadasm_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
