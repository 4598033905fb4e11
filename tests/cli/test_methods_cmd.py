"""`vadasm methods` and `merge --method`'s help come from the registry, so a new method shows up in both."""

import json

from fuzz_cases import run_cli
from vadasm.methods import METHODS


def test_every_registered_method_is_listed_and_in_merge_help():
    listed = run_cli(["methods"])
    helped = run_cli(["merge", "--help"])
    assert listed.code == 0 and helped.code == 0
    for name in METHODS:
        assert f"{name}:" in listed.stdout
        assert name in " ".join(helped.stdout.split())


def test_one_method_in_json_has_its_typed_parameters():
    outcome = run_cli(["methods", "ties", "--json"])
    density = json.loads(outcome.stdout)["ties"]["parameters"]["density"]
    assert density == {"default": 1.0, "per_model": True, "type": "float", "low": 0.0, "high": 1.0,
                       "choices": None, "help": density["help"]}


def test_an_unknown_method_is_one_line():
    outcome = run_cli(["methods", "bogus"])
    assert outcome.code == 2 and outcome.stderr.startswith("error: unknown merge method 'bogus'")
