import json
import math
from functools import partial

import pytest
import torch

from vadasm.errors import VadasmError
from vadasm.eval.backends import Decoding, Request, TransformersBackend, load_backend
from vadasm.eval.harness import condition_requests, evaluate
from vadasm.eval.report import format_table
from vadasm.eval.tasks import GENERATIVE_TASKS, derange_images


def _backends(*paths):
    return [(p.name, partial(load_backend, p)) for p in paths]


def test_vision_model_gets_three_conditions_and_text_model_only_blind(tiny_models, fake_easyvqa):
    vlm, lm = tiny_models
    report = evaluate(_backends(vlm, lm), ["easyvqa"], split="test", progress=False)
    conditions = [(s.model, s.condition) for s in report.scores]
    assert conditions == [("vlm", "image"), ("vlm", "blind"), ("vlm", "shuffled"), ("lm", "blind")]
    for score in report.scores:
        assert score.n == len(fake_easyvqa)
        assert 0.0 <= score.value <= 1.0
        assert sum(g["n"] for g in score.groups.values()) == score.n
    assert report.item_ids["easyvqa"] == [item.qid for item in fake_easyvqa]
    json.dumps(report.to_dict())  # results are plain JSON
    table = format_table(report)
    assert "shuffled" in table and "what_color" in table


def test_controls_change_what_the_model_sees(tiny_models, fake_easyvqa):
    vlm, _ = tiny_models
    backend = TransformersBackend(vlm)
    items = GENERATIVE_TASKS["easyvqa"].items("test", None, 0)
    image_token = backend.model.config.image_token_index
    with_image = backend.encode(condition_requests(items, "image", 0))
    blind = backend.encode(condition_requests(items, "blind", 0))
    shuffled = backend.encode(condition_requests(items, "shuffled", 0))
    per_row = (with_image["input_ids"] == image_token).sum(1)
    assert torch.all(per_row == 4)  # 16x16 image, 8x8 patches, CLS dropped
    assert "pixel_values" not in blind and not torch.any(blind["input_ids"] == image_token)
    assert torch.equal(shuffled["input_ids"], with_image["input_ids"])
    same = [torch.equal(a, b) for a, b in zip(shuffled["pixel_values"], with_image["pixel_values"])]
    assert not any(same)


def test_greedy_results_are_reproducible_and_sampling_is_seeded(tiny_models, fake_easyvqa):
    vlm, _ = tiny_models
    backend = TransformersBackend(vlm)
    requests = [Request(item.question, item.image_path) for item in fake_easyvqa[:6]]
    greedy = Decoding(max_new_tokens=3, batch_size=4)
    assert backend.generate(requests, greedy, progress=False) == backend.generate(requests, greedy, progress=False)
    sampled = Decoding(max_new_tokens=3, batch_size=4, do_sample=True, temperature=1.5, seed=3)
    first = backend.generate(requests, sampled, progress=False)
    assert first == backend.generate(requests, sampled, progress=False)


def test_batching_does_not_change_greedy_answers(tiny_models, fake_easyvqa):
    vlm, _ = tiny_models
    backend = TransformersBackend(vlm)
    requests = [Request(item.question, item.image_path) for item in fake_easyvqa]
    one = backend.generate(requests, Decoding(max_new_tokens=3, batch_size=1), progress=False)
    many = backend.generate(requests, Decoding(max_new_tokens=3, batch_size=7), progress=False)
    assert one == many


def test_arith_and_perplexity_on_a_text_model(tiny_models):
    _, lm = tiny_models
    report = evaluate(_backends(lm), ["arith", "perplexity"], split="val", limit=8, progress=False)
    arith, ppl = report.scores
    assert (arith.task, arith.condition, arith.n) == ("arith", "text", 8)
    assert ppl.metric == "perplexity" and math.isfinite(ppl.value) and ppl.value > 1.0
    assert ppl.n > 100  # tokens scored


def test_text_only_model_refuses_an_image(tiny_models, fake_easyvqa):
    _, lm = tiny_models
    backend = TransformersBackend(lm)
    with pytest.raises(VadasmError, match="text-only"):
        backend.render(Request("what color is the shape?", fake_easyvqa[0].image_path))


def test_unknown_task_is_a_user_error(tiny_models):
    _, lm = tiny_models
    with pytest.raises(VadasmError, match="unknown task"):
        evaluate(_backends(lm), ["mmlu"])


def test_derangement_never_keeps_an_items_own_image(fake_easyvqa):
    items = GENERATIVE_TASKS["easyvqa"].items("test", None, 0)
    for seed in range(5):
        shuffled = derange_images(items, seed)
        assert all(new != item.image for new, item in zip(shuffled, items))
        assert sorted(map(str, shuffled)) == sorted(str(item.image) for item in items)
