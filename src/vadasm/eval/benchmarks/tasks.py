"""The public benchmarks as tasks: how a data row becomes an item, and how a reply is scored.

Each has the shape of `task_protocol.EvalTask` (with `needs_data`: rows come from --data) and is
listed in `registry.TASKS` beside the built-in tasks. Generative benchmarks use the harness's
`Item` (question, image, references, group); MMLU is a log-likelihood multiple choice and has its
own `ChoiceItem`. Prompts follow the common public
setups (LLaVA's short-answer VQA prompt, lm-eval's MMLU prompt, the "reason step by step, answer in
\\boxed{}" prompt of math RL evaluations) so numbers are comparable in spirit, not to the decimal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vadasm.eval.benchmarks.data import Row, image_file
from vadasm.eval.benchmarks.math_answers import last_boxed, math_equal, reference_text
from vadasm.eval.metrics import extract_number, normalize_vqa_answer, numeric_match, vqa_accuracy
from vadasm.eval.task_protocol import PROMPT_FORMATS, Item, format_question
from vadasm.eval.tasks import first_line

MMLU_PROMPT = (
    "The following are multiple choice questions (with answers) about {subject}.\n\n{question}\n{options}Answer:"
)
GSM8K_PROMPT = "{question}\nSolve the problem step by step, then give the final number."
MATH_PROMPT = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
LETTERS = "ABCDEFGHIJ"
# Base models keep writing the next exercise after answering; a reply ends where one starts.
_NEXT_EXERCISE = re.compile(r"\n\s*(?:Question|Problem|Q):", re.IGNORECASE)


def cut_reply(reply: str) -> str:
    match = _NEXT_EXERCISE.search(reply)
    return reply[: match.start()] if match else reply


@dataclass(frozen=True)
class ChoiceItem:
    id: str
    context: str
    continuations: tuple[str, ...]
    answer: int
    group: str


def _row_id(row: Row, *names: str) -> str:
    for name in names:
        if row.data.get(name) is not None:
            return str(row.data[name])
    return f"row{row.number}"


@dataclass(frozen=True)
class VqaBenchmark:
    """VQAv2 / OK-VQA: official VQA accuracy of the reply's first line against the human answers."""

    name: str
    vision: bool = True
    kind: str = "generate"
    metric: str = "vqa_accuracy"
    max_new_tokens: int = 10
    samples: bool = False
    needs_data: bool = True
    prompt_format: str = "short-answer"
    prompt_formats: tuple[str, ...] = tuple(PROMPT_FORMATS)

    def parse(self, row: Row, image_cache: Path) -> Item:
        question = row.field("question")
        raw = row.field("answers", kind=list)
        answers = []
        for k, answer in enumerate(raw):
            text = answer.get("answer") if isinstance(answer, dict) else answer
            if not isinstance(text, str):
                raise row.error(f"answers[{k}] should be a string or an object with an 'answer' string")
            answers.append(text)
        if not answers:
            raise row.error("field 'answers' is empty")
        image = image_file(row, row.field("image", "image_path", kind=object), image_cache)
        group = str(row.data.get("answer_type") or row.data.get("question_type") or "all")
        return Item(_row_id(row, "question_id", "id"), format_question(self.prompt_format, question), image,
                    tuple(answers), group)

    def score(self, reply: str, item: Item) -> float:
        # The reply is normalised first, as LLaVA and lmms-eval do before the official evaluation
        # (which leaves the prediction raw when all annotators agree: "Yes" would score 0).
        return vqa_accuracy(normalize_vqa_answer(first_line(reply)), item.references)


@dataclass(frozen=True)
class MmluBenchmark:
    """MMLU: the choice whose letter the model finds most likely after the prompt (zero-shot)."""

    name: str = "mmlu"
    vision: bool = False
    kind: str = "choice"
    metric: str = "accuracy"
    max_new_tokens: int = 0
    samples: bool = False
    needs_data: bool = True
    prompt_format: str = ""
    prompt_formats: tuple[str, ...] = ()

    def parse(self, row: Row, image_cache: Path) -> ChoiceItem:
        question = row.field("question")
        choices = row.field("choices", kind=list)
        if not 2 <= len(choices) <= len(LETTERS) or not all(isinstance(c, str) for c in choices):
            raise row.error(f"field 'choices' should be 2-{len(LETTERS)} strings")
        answer = row.field("answer", kind=(int, str))
        if isinstance(answer, str):
            if answer.strip().upper() not in LETTERS[: len(choices)]:
                raise row.error(f"answer {answer!r} is not one of the choice letters")
            answer = LETTERS.index(answer.strip().upper())
        if not 0 <= answer < len(choices):
            raise row.error(f"answer index {answer} is out of range for {len(choices)} choices")
        subject = str(row.data.get("subject") or "general")
        options = "".join(f"{LETTERS[i]}. {c}\n" for i, c in enumerate(choices))
        context = MMLU_PROMPT.format(subject=subject.replace("_", " "), question=question.strip(), options=options)
        continuations = tuple(f" {LETTERS[i]}" for i in range(len(choices)))
        return ChoiceItem(_row_id(row, "id"), context, continuations, answer, subject)

    def score_choice(self, loglikelihoods: list[float], item: ChoiceItem) -> float:
        best = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
        return float(best == item.answer)


def gsm8k_reference(row: Row) -> str:
    """GSM8K stores the worked solution; the reference is the number after '####'."""
    answer = row.field("answer", kind=(str, int, float))
    text = str(answer).split("####")[-1]
    number = extract_number(text)
    if number is None:
        raise row.error(f"no final number in answer {str(answer)[-40:]!r}")
    return number


@dataclass(frozen=True)
class Gsm8kBenchmark:
    """GSM8K: the last number of the reply (cut before any next exercise) against the reference."""

    name: str = "gsm8k"
    vision: bool = False
    kind: str = "generate"
    metric: str = "accuracy"
    max_new_tokens: int = 256
    samples: bool = False
    needs_data: bool = True
    prompt_format: str = ""
    prompt_formats: tuple[str, ...] = ()

    def parse(self, row: Row, image_cache: Path) -> Item:
        question = row.field("question")
        return Item(_row_id(row, "id"), GSM8K_PROMPT.format(question=question.strip()), None,
                    (gsm8k_reference(row),), "all")

    def score(self, reply: str, item: Item) -> float:
        return float(numeric_match(cut_reply(reply), item.references[0]))


@dataclass(frozen=True)
class MathBenchmark:
    """MATH-500 / AIME / AMC: last \\boxed{} answer, equivalent to the reference; n samples each."""

    name: str
    vision: bool = False
    kind: str = "generate"
    metric: str = "pass@1"
    max_new_tokens: int = 2048
    samples: bool = True
    needs_data: bool = True
    prompt_format: str = ""
    prompt_formats: tuple[str, ...] = ()

    def parse(self, row: Row, image_cache: Path) -> Item:
        problem = row.field("problem", "question")
        reference = reference_text(row.field("answer", "solution", kind=(str, int, float)))
        if "answer" not in row.data:  # only a worked solution: its boxed answer is the reference
            reference = last_boxed(reference) or ""
        if not reference:
            raise row.error("no reference answer (empty 'answer', or a 'solution' without \\boxed{})")
        group = str(row.data.get("level") or row.data.get("subject") or row.data.get("year") or "all")
        return Item(_row_id(row, "unique_id", "id", "problem_id"), MATH_PROMPT.format(problem=problem.strip()),
                    None, (reference,), group)

    def score(self, reply: str, item: Item) -> float:
        answer = last_boxed(reply)
        return float(answer is not None and math_equal(answer, item.references[0]))


BENCHMARKS = {
    "vqav2": VqaBenchmark("vqav2"),
    "okvqa": VqaBenchmark("okvqa"),
    "mmlu": MmluBenchmark(),
    "gsm8k": Gsm8kBenchmark(),
    "math500": MathBenchmark("math500"),
    "aime24": MathBenchmark("aime24"),
    "aime25": MathBenchmark("aime25"),
    "amc23": MathBenchmark("amc23"),
}
# What to pass as --data for each benchmark when the user wants the public copy from the Hub.
HUB_SOURCES = {
    "vqav2": "lmms-lab/VQAv2",
    "okvqa": "lmms-lab/OK-VQA",
    "mmlu": "cais/mmlu:all",
    "gsm8k": "openai/gsm8k:main",
    "math500": "HuggingFaceH4/MATH-500",
    "aime24": "HuggingFaceH4/aime_2024",
    "aime25": "math-ai/aime25",
    "amc23": "math-ai/amc23",
}
