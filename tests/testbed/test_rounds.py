"""Training in rounds until a validation criterion holds: early stop, budget failure, what is recorded."""

import pytest
import torch
from tiny_vlm import fake_vqa_items, write_images

from vadasm.errors import VadasmError
from vadasm.testbed.rounds import Budget, Criterion, CriterionNotMet, RoundsResult, require_met, train_in_rounds
from vadasm.testbed.sft import Encoded, answer_hits, collate, exact_answer_accuracy
from vadasm.testbed.vision import TowerRecipe, image_processor, load_pixels, pretrain_tower


class Counter:
    """A fake stage whose validation value is steps taken / 100; logs the rounds it was asked for."""

    def __init__(self):
        self.steps, self.rounds, self.measured = 0, [], 0

    def start_round(self, index: int, length: int) -> None:
        self.rounds.append((index, length))

    def step(self, global_step: int) -> float:
        assert global_step == self.steps
        self.steps += 1
        return 1.0 / self.steps

    def measure(self) -> dict[str, float]:
        self.measured += 1
        return {"acc": self.steps / 100, "other": 0.0}


def test_training_stops_at_the_first_check_that_meets_the_criterion():
    stage = Counter()
    result = train_in_rounds(stage.start_round, stage.step, stage.measure, Criterion("acc >= 30%", {"acc": 0.3}),
                             Budget(steps=100, round_steps=40, eval_every=10), "fake")
    assert result.met and result.steps_used == stage.steps == 30
    assert [point["step"] for point in result.curve] == [10, 20, 30]
    assert result.curve[-1] == {"step": 30, "acc": 0.3, "other": 0.0}
    assert stage.rounds == [(0, 40)]


def test_rounds_restart_the_schedule_until_the_budget_is_spent():
    stage = Counter()
    result = train_in_rounds(stage.start_round, stage.step, stage.measure, Criterion("acc >= 200%", {"acc": 2.0}),
                             Budget(steps=100, round_steps=40, eval_every=15), "fake")
    assert not result.met and result.steps_used == 100
    assert stage.rounds == [(0, 40), (1, 40), (2, 20)]  # the last round is cut to the budget
    # every 15 steps within a round, and at the end of each round
    assert [p["step"] for p in result.curve] == [15, 30, 40, 55, 70, 80, 95, 100]


def test_a_disabled_criterion_trains_the_whole_budget_without_measuring():
    stage = Counter()
    result = train_in_rounds(stage.start_round, stage.step, stage.measure, Criterion("smoke build", {"acc": 0.0}),
                             Budget(steps=7, round_steps=5, eval_every=2), "fake")
    assert result.met and result.steps_used == 7 and stage.measured == 0 and result.curve == []
    assert result.record(Criterion("smoke build", {"acc": 0.0}), Budget(7, 5, 2))["criterion"] == "none (smoke build)"


def test_an_unmet_criterion_is_one_line_naming_stage_criterion_values_and_budget():
    criterion = Criterion("val patch accuracy >= 95% on colour and on shape patches", {"color": 0.95, "shape": 0.95})
    result = RoundsResult(6000, False, [{"step": 6000, "color": 0.991, "shape": 0.562}])
    with pytest.raises(CriterionNotMet) as err:
        require_met("vision-tower", result, criterion, Budget(6000, 2000, 250), "--tower-steps")
    message = str(err.value)
    assert isinstance(err.value, VadasmError) and "\n" not in message
    for part in ("vision-tower", ">= 95% on colour and on shape", "color 99.1%", "shape 56.2%", "6000 steps",
                 "--tower-steps", "nothing was written"):
        assert part in message
    require_met("vision-tower", RoundsResult(250, True), criterion, Budget(6000, 2000, 250), "--tower-steps")


def test_a_budget_below_one_step_is_refused():
    with pytest.raises(VadasmError, match="at least 1 step"):
        Budget(steps=0, round_steps=10, eval_every=5)


def test_answer_hits_need_every_answer_token_to_be_the_argmax():
    # vocabulary of 3; the "LM head" is the identity, so hidden states are the logits
    head = torch.nn.Identity()
    batch = collate([Encoded([0, 1, 2], 1), Encoded([0, 2, 1], 1), Encoded([1, 1], 1)], pad_id=0)
    hidden = torch.zeros(3, 3, 3)
    hidden[0, 0, 1] = hidden[0, 1, 2] = 1  # row 0 predicts 1 then 2: right
    hidden[1, 0, 2] = hidden[1, 1, 0] = 1  # row 1 predicts 2 then 0 (should be 1): wrong
    hidden[2, 0, 1] = 1  # row 2 predicts 1: right
    assert answer_hits(hidden, head, batch).tolist() == [True, False, True]
    # with 1 as the end token, row 1's miss on its last token (predicted 0, should end with 1) is not checked
    assert answer_hits(hidden, head, batch, end_id=1).tolist() == [True, True, True]

    def forward(b, idx):
        return hidden[idx][:, : b.input_ids.shape[1]]

    values = exact_answer_accuracy(forward, head, [Encoded([0, 1, 2], 1), Encoded([0, 2, 1], 1), Encoded([1, 1], 1)],
                                   ["a", "a", "b"], pad_id=0, batch_size=2)
    assert values == pytest.approx({"all": 2 / 3, "a": 0.5, "b": 1.0})


TINY_TOWER = dict(image_size=16, patch_size=8, hidden_size=16, layers=1, heads=2, batch_size=8)


def _tiny_data(tmp_path):
    items = fake_vqa_items(write_images(tmp_path / "images"))
    return items, load_pixels(items, image_processor(16))


def test_tower_stops_as_soon_as_val_patches_meet_the_floor(tmp_path):
    items, pixels = _tiny_data(tmp_path)
    recipe = TowerRecipe(**TINY_TOWER, steps=40, round_steps=20, eval_every=5, min_patch_accuracy=1e-6)
    _, metrics = pretrain_tower(recipe, items, items, pixels)
    rounds = metrics["rounds"]
    assert rounds.met and rounds.steps_used < recipe.steps
    *before, last = rounds.curve  # colour patches start at 0%: the first checks fail, the last one passes
    assert last["step"] == rounds.steps_used and min(last["color"], last["shape"]) > 0
    assert all(min(p["color"], p["shape"]) == 0 for p in before)
    assert metrics["val_patch_accuracy"] == pytest.approx({k: last[k] for k in ("color", "shape")}, abs=1e-4)


def test_tower_that_cannot_meet_the_floor_uses_its_whole_budget(tmp_path):
    items, pixels = _tiny_data(tmp_path)
    recipe = TowerRecipe(**TINY_TOWER, steps=12, round_steps=5, eval_every=5, min_patch_accuracy=1.01)
    _, metrics = pretrain_tower(recipe, items, items, pixels)
    rounds = metrics["rounds"]
    assert not rounds.met and rounds.steps_used == 12 and [p["step"] for p in rounds.curve] == [5, 10, 12]
    with pytest.raises(CriterionNotMet, match="--tower-steps"):
        require_met("vision-tower", rounds, metrics["criterion"], metrics["budget"], "--tower-steps")
