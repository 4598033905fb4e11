"""`--prompt-format` (issue 15): easy-vqa asked with the bare question or LLaVA-1.5's short-answer
suffix, on the same items, the choice recorded in the results."""

from __future__ import annotations

import json
from functools import partial

from typer.testing import CliRunner

from vadasm.cli import _register_subcommands, app
from vadasm.errors import VadasmError
from vadasm.eval.backends import TransformersBackend, load_backend
from vadasm.eval.harness import evaluate
from vadasm.eval.report import format_table

SUFFIX = "Answer the question using a single word or phrase."


def _run(vlm, monkeypatch, prompt_format):
    """Evaluate the tiny VLM and return the report and every prompt string the model was given."""
    seen: list[str] = []
    render = TransformersBackend.render

    def spy(self, request):
        prompt = render(self, request)
        seen.append(prompt)
        return prompt

    monkeypatch.setattr(TransformersBackend, "render", spy)
    report = evaluate([("vlm", partial(load_backend, vlm))], ["easyvqa"], split="test", progress=False,
                      prompt_format=prompt_format)
    return report, seen


def test_short_answer_suffix_reaches_the_prompt_of_every_condition(tiny_models, fake_easyvqa, monkeypatch):
    vlm, _ = tiny_models
    short, prompts = _run(vlm, monkeypatch, "short-answer")
    assert len(prompts) == 3 * len(fake_easyvqa)  # image, blind, shuffled
    for question, prompt in zip([item.question for item in fake_easyvqa] * 3, prompts):
        assert f"{question}\n{SUFFIX}" in prompt
    assert short.prompt_formats == {"easyvqa": "short-answer"}
    assert [s.condition for s in short.scores] == ["image", "blind", "shuffled"]
    assert format_table(short).startswith("easyvqa (test split, short-answer prompt)")


def test_default_stays_the_bare_question_on_the_same_items(tiny_models, fake_easyvqa, monkeypatch):
    vlm, _ = tiny_models
    bare, prompts = _run(vlm, monkeypatch, None)
    assert prompts and not any(SUFFIX in p for p in prompts)
    assert any(fake_easyvqa[0].question in p for p in prompts)
    assert bare.prompt_formats == {"easyvqa": "bare"}
    assert format_table(bare).startswith("easyvqa (test split)\n")  # the default table is unchanged
    short = evaluate([("vlm", partial(load_backend, vlm))], ["easyvqa"], split="test", progress=False,
                     prompt_format="short-answer")
    assert short.item_ids == bare.item_ids


def test_cli_records_the_format_and_refuses_one_that_applies_to_nothing(tiny_models, fake_easyvqa):
    vlm, lm = tiny_models
    _register_subcommands()
    done = CliRunner().invoke(app, ["eval", "-m", str(vlm), "--tasks", "easyvqa,arith", "--limit", "2",
                                    "--no-controls", "--prompt-format", "short-answer", "--json", "-q"])
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert payload["prompt_formats"] == {"easyvqa": "short-answer"}
    wrong = CliRunner().invoke(app, ["eval", "-m", str(lm), "--tasks", "arith", "--prompt-format", "bare"])
    # The CLI's entry point turns a VadasmError into one line and exit 2; the test runner shows the error.
    assert isinstance(wrong.exception, VadasmError)
    assert str(wrong.exception).startswith("--prompt-format applies to easyvqa, vqav2, okvqa")
