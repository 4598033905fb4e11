"""Steps 2-3 of the donor: a stock LLaVA on a converted LM, taught to answer easy-vqa.

How it gets there in a few hundred CPU steps (SPEC §8: a plainly trained projector left yes/no
questions at their question-only prior):
1. the tower already knows colour and shape (`vision.py`);
2. the projector is fitted first, without the LM, so that every image token lands on the LM's own
   embedding of the word its patch names (colour on even patches, shape on odd ones). The LM then
   starts from image tokens that read like " red circle red circle ...", and only has to learn to
   compare them with the question;
3. a LoRA on the LM's top layers is trained on answer tokens only (logits only at answer
   positions), on questions sampled so that each yes/no type is half "yes" (`balanced_order`),
   and merged back, so the donor LM really differs from its base, as in a real LLaVA.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerBase,
)

from vadasm.errors import MissingExtraError
from vadasm.eval.easyvqa import VqaItem
from vadasm.testbed.donor_checks import donor_criterion, val_check
from vadasm.testbed.donor_recipe import DonorRecipe, encode_item
from vadasm.testbed.rounds import Criterion, stage_record, timed_rounds
from vadasm.testbed.sft import (
    Encoded,
    answer_loss,
    collate,
    linear_warmup_decay,
)
from vadasm.testbed.vision import WORDS, labelled_images, patch_word_targets

# A reserved token of each base vocabulary becomes the image token, so no embedding is resized.
IMAGE_TOKENS = {"smollm2": "<empty_output>", "gemma3-270m": "<unused0>"}

_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '@IMG@' }}\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)
# SmolLM2-Instruct's ChatML turns, taught to render images. Its default system prompt is left out:
# it would be ~40% of every training sequence, and LLaVA chat templates commonly omit one.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}" + _CONTENT + "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Gemma 3 270M is a base model whose turn tokens are untrained: plain "Question:/Answer:" turns.
QA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'Question: ' }}" + _CONTENT + "{{ '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Answer: ' + message['content'] + eos_token + '\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Answer:' }}{% endif %}"
)
TEMPLATES = {"smollm2": CHATML_TEMPLATE, "gemma3-270m": QA_TEMPLATE}


def build_processor(
    tokenizer: PreTrainedTokenizerBase, image_processor, image_token: str, template: str, patch_size: int
) -> LlavaProcessor:
    """A stock LlavaProcessor; `template` may contain @IMG@ where the image token goes."""
    template = template.replace("@IMG@", image_token)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=template,
        image_token=image_token,
        num_additional_image_tokens=1,  # the CLS token, dropped again by the "default" strategy
    )


def assemble_llava(lm_dir: Path, tower: CLIPVisionModel, image_token: str) -> LlavaForConditionalGeneration:
    """A LlavaForConditionalGeneration holding `tower`, a fresh projector and the LM from `lm_dir`."""
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    n_patches = (tower.config.image_size // tower.config.patch_size) ** 2
    config = LlavaConfig(
        vision_config=tower.config.to_dict(),
        text_config=lm.config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(image_token),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=n_patches,
        projector_hidden_act="gelu",
        tie_word_embeddings=lm.config.tie_word_embeddings,
    )
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(tower.state_dict())
    model.model.language_model.load_state_dict(lm.model.state_dict())
    if lm.config.tie_word_embeddings:
        model.tie_weights()
    else:
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
    return model.eval()


def word_embeddings(model: LlavaForConditionalGeneration, tokenizer) -> torch.Tensor:
    """Input embeddings (as the LM sees them, scale included) of the first token of each of WORDS."""
    ids = torch.tensor([tokenizer(" " + w, add_special_tokens=False).input_ids[0] for w in WORDS])
    with torch.no_grad():
        return model.get_input_embeddings()(ids)


def _tower_features(model: LlavaForConditionalGeneration, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        hidden = model.model.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states
        return hidden[model.config.vision_feature_layer][:, 1:]


def align_projector(
    model: LlavaForConditionalGeneration,
    tokenizer,
    train: tuple[VqaItem, ...],
    pixels: dict[Path, torch.Tensor],
    recipe: DonorRecipe,
) -> dict:
    """Fit the projector alone so that every patch token lands on the embedding of the word it names.

    The tower names the colour on even patches and the shape on odd ones (`vision.patch_roles`), so
    after this fit the LM reads an image as " red circle red circle ..." in its own embedding space.
    """
    words = word_embeddings(model, tokenizer)
    x, color, shape = labelled_images(train, pixels)
    n_patches = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
    targets = patch_word_targets(color, shape, n_patches)
    projector = model.model.multi_modal_projector
    optimizer = torch.optim.AdamW(projector.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(recipe.seed)
    scale = words[targets[:512]].pow(2).sum(-1).mean()
    start = time.time()
    for _ in tqdm(range(recipe.align_steps), desc="align projector", unit="step"):
        idx = torch.randint(len(x), (64,), generator=generator)
        out = projector(_tower_features(model, x[idx]))
        loss = (out - words[targets[idx]]).pow(2).sum(-1).mean() / scale
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    # How often a patch's nearest word (by dot product, among WORDS) is the word it should name.
    with torch.no_grad():
        out = projector(_tower_features(model, x[:512]))
        hit = ((out @ words.T).argmax(-1) == targets[:512]).float().mean().item()
    return {
        "align_seconds": round(time.time() - start, 1),
        "align_relative_mse": round(loss.item(), 4),
        "align_nearest_word_accuracy": round(hit, 4),
    }


def balanced_order(items: tuple[VqaItem, ...], n: int, seed: int) -> list[int]:
    """`n` item indices where every yes/no question type is half "yes", half "no".

    easy-vqa's yes/no colour questions are 88% "no": a model can score that from the wording and
    the loss barely rewards looking at the image (the first donor did exactly that). Balancing the
    answers within each yes/no type removes the shortcut; the mix of question types is kept.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for i, item in enumerate(items):
        key = (item.qtype, item.answers[0] if item.qtype.startswith("yesno") else "")
        groups.setdefault(key, []).append(i)
    type_size: dict[str, int] = {}
    for (qtype, _), members in groups.items():
        type_size[qtype] = type_size.get(qtype, 0) + len(members)
    answers_per_type = {qtype: sum(1 for q, _ in groups if q == qtype) for qtype in type_size}
    weights = torch.zeros(len(items), dtype=torch.float64)
    for (qtype, _), members in groups.items():
        weights[members] = type_size[qtype] / answers_per_type[qtype] / len(members)
    generator = torch.Generator().manual_seed(seed)
    return torch.multinomial(weights, n, replacement=True, generator=generator).tolist()


def _lora(model: LlavaForConditionalGeneration, recipe: DonorRecipe):
    try:
        from peft import LoraConfig, LoraModel
    except ImportError as err:
        raise MissingExtraError("peft", "testbed", "Training the LLaVA donor") from err
    n_layers = model.config.text_config.num_hidden_layers
    first = n_layers - max(1, round(recipe.lora_top_fraction * n_layers))
    config = LoraConfig(
        r=recipe.lora_rank,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=0.0,
        target_modules=[
            f"layers.{i}.{block}.{proj}"
            for i in range(first, n_layers)
            for block, projs in (("self_attn", "qkvo"), ("mlp", ("gate", "up", "down")))
            for proj in (f"{p}_proj" for p in projs)
        ],
    )
    return LoraModel(model.model.language_model, config, "default")


def train_donor(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    train: tuple[VqaItem, ...],
    pixels: dict[Path, torch.Tensor],
    recipe: DonorRecipe,
    val: tuple[VqaItem, ...] = (),
) -> dict:
    """Train a LoRA on the LM's top layers on answer tokens only, until `donor_criterion` holds on a
    seeded sample of `val` (none given: the whole budget is trained), then merge it into the LM."""
    torch.manual_seed(recipe.seed)
    for param in model.parameters():
        param.requires_grad_(False)
    lora = _lora(model, recipe)
    model.model.language_model = lora.model
    lora_params = [p for n, p in lora.named_parameters() if "lora_" in n]
    for param in lora_params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(lora_params, lr=recipe.lr_lora, weight_decay=0.0)
    encoded: dict[int, Encoded] = {}
    pad = processor.tokenizer.pad_token_id or 0
    state: dict = {}

    def start_round(index: int, length: int) -> None:
        state["schedule"] = linear_warmup_decay(optimizer, length)
        order = balanced_order(train, length * recipe.batch_size, recipe.seed + index)
        state["batches"] = iter([order[k : k + recipe.batch_size] for k in range(0, len(order), recipe.batch_size)])

    def step(_: int) -> float:
        batch_idx = next(state["batches"])
        for i in batch_idx:
            if i not in encoded:
                encoded[i] = encode_item(processor, train[i].question, train[i].answers[0])
        batch = collate([encoded[i] for i in batch_idx], pad)
        pixel_values = torch.stack([pixels[train[i].image_path] for i in batch_idx])
        hidden = model.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=pixel_values
        ).last_hidden_state
        loss = answer_loss(hidden, model.lm_head, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["schedule"].step()
        return loss.item()

    criterion = donor_criterion(recipe) if val else Criterion("no val questions given", {"all": 0.0})
    model.train()
    rounds, budget, start = timed_rounds(recipe, start_round, step, val_check(model, processor, val, pixels, recipe),
                                         criterion, f"llava-{recipe.base}")
    model.model.language_model = lora.merge_and_unload()
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return stage_record(recipe, start, "questions_seen", rounds, criterion, budget)
