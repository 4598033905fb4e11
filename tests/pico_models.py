"""Tiny random models of every supported architecture, saved as real HF folders.

Shared by the tests of every package: each builder writes `config.json` + safetensors with the
stock transformers class, so anything that loads them also loads real checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 96
COMMON = dict(vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
LLAMA_LIKE = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, **COMMON)

TEXT_CONFIGS: dict[str, dict] = {
    "llama": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE,
    "qwen3": dict(LLAMA_LIKE, head_dim=8),
    "gemma": dict(LLAMA_LIKE, head_dim=8),
    "gemma2": dict(LLAMA_LIKE, head_dim=8),
    "gemma3_text": dict(LLAMA_LIKE, head_dim=8, sliding_window=16),
    "phi3": LLAMA_LIKE,
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2),
    "gpt_neox": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, **COMMON),
    "gptj": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, rotary_dim=4, vocab_size=VOCAB,
                 bos_token_id=1, eos_token_id=2),
    "mixtral": dict(LLAMA_LIKE, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(LLAMA_LIKE, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24,
                      shared_expert_intermediate_size=40),
    "qwen3_moe": dict(LLAMA_LIKE, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24),
    "deepseek_v3": dict(LLAMA_LIKE, moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2,
                        n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=8,
                        qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, n_group=1, topk_group=1),
    "gpt_oss": dict(LLAMA_LIKE, num_local_experts=4, num_experts_per_tok=2, head_dim=8, sliding_window=16,
                    layer_types=["sliding_attention", "full_attention"]),
    "llama4_text": dict(LLAMA_LIKE, intermediate_size_mlp=48, num_local_experts=4, num_experts_per_tok=1,
                        head_dim=8, interleave_moe_layer_step=2),
    "granite": LLAMA_LIKE,
    "arcee": LLAMA_LIKE,
    "apertus": LLAMA_LIKE,
    "olmo2": LLAMA_LIKE,
    "glm4": dict(LLAMA_LIKE, head_dim=8),
    "cohere": dict(LLAMA_LIKE, use_qk_norm=True),
    "cohere2": dict(LLAMA_LIKE, sliding_window=16),
    "starcoder2": LLAMA_LIKE,
    "stablelm": LLAMA_LIKE,
    "phi": LLAMA_LIKE,
    "gpt_bigcode": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=VOCAB, bos_token_id=1,
                        eos_token_id=2),
    "exaone": LLAMA_LIKE,
    "falcon": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, **COMMON),
    "lfm2": dict(LLAMA_LIKE, layer_types=["conv", "full_attention"], block_ff_dim=48, block_auto_adjust_ff_dim=False),
    "mamba": dict(hidden_size=32, num_hidden_layers=2, state_size=4, **COMMON),
    "glm4_moe": dict(LLAMA_LIKE, head_dim=8, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                     n_shared_experts=1, first_k_dense_replace=1, n_group=1, topk_group=1),
    "granitemoe": dict(LLAMA_LIKE, num_local_experts=4, num_experts_per_tok=2),
    "afmoe": dict(LLAMA_LIKE, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                  num_shared_experts=1, num_dense_layers=1),
    "granitemoeshared": dict(LLAMA_LIKE, num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=40),
    "lfm2_moe": dict(LLAMA_LIKE, layer_types=["conv", "full_attention"], num_experts=4, num_experts_per_tok=2,
                     moe_intermediate_size=16, num_dense_layers=1),
    "granitemoehybrid": dict(LLAMA_LIKE, num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=40,
                             mamba_n_heads=4, mamba_d_head=16, mamba_d_state=8, layer_types=["mamba", "attention"]),
}
MOE_TYPES = {"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "gpt_oss", "llama4_text", "glm4_moe", "granitemoe",
             "granitemoehybrid", "afmoe", "granitemoeshared", "lfm2_moe"}


def text_config(model_type: str, **overrides):
    return AutoConfig.for_model(model_type, **{**TEXT_CONFIGS[model_type], **overrides})


def make_text_model(folder: Path, model_type: str = "llama", seed: int = 0, dtype=torch.float32, **overrides) -> Path:
    """Save a tiny random causal LM of `model_type` in `folder` and return the folder."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(text_config(model_type, **overrides))
    with torch.no_grad():  # random norms too, so merges of norms are visible
        for name, param in model.named_parameters():
            if "norm" in name or "ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
    model.to(dtype).save_pretrained(folder)
    return Path(folder)


def perturbed_copy(src: Path, dst: Path, scale: float = 0.01, seed: int = 1) -> Path:
    """A 'fine-tune' of `src`: same config, weights plus small seeded noise."""
    model = AutoModelForCausalLM.from_pretrained(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn(param.shape, generator=gen, dtype=param.dtype))
    model.save_pretrained(dst)
    return Path(dst)


def make_llava(folder: Path, text_type: str = "llama", seed: int = 0, image_token_index: int = VOCAB - 1,
               **text_overrides) -> Path:
    """A tiny random LlavaForConditionalGeneration (CLIP tower, 2-layer projector) saved on disk."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=24)
    config = LlavaConfig(vision_config=vision, text_config=text_config(text_type, **text_overrides),
                         image_token_index=image_token_index, vision_feature_layer=-1)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    return Path(folder)


def relayout_llava_to_new_names(folder: Path) -> None:
    """Rename a LLaVA checkpoint's tensors to the transformers>=4.52 layout (model.language_model.*)."""
    from safetensors.torch import load_file, save_file

    file = Path(folder) / "model.safetensors"
    renamed = {}
    for name, tensor in load_file(file).items():
        if name.startswith("language_model.model."):
            name = "model.language_model." + name.removeprefix("language_model.model.")
        elif name.startswith("language_model.lm_head."):
            name = name.removeprefix("language_model.")
        else:
            name = "model." + name
        renamed[name] = tensor
    save_file(renamed, file, metadata={"format": "pt"})


SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def make_word_tokenizer(folder: Path, words: list[str], chat_template: str | None = None) -> Path:
    """A real (fast) tokenizer over `words` (ids 0-3 are pad/bos/eos/unk), saved in `folder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + list(words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([t for t in vocab if t.startswith("<") and t.endswith(">")])  # never split
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return Path(folder)


def make_llava_donor(folder: Path, text_type: str = "llama", seed: int = 0, words: list[str] | None = None,
                     text_folder: Path | None = None, lm_noise: float = 0.0, **text_overrides) -> Path:
    """A tiny LLaVA donor with tokenizer and processor: words + '<image>' fill its vocabulary.

    With `text_folder`, its language model starts from that text model's weights (plus seeded noise
    of scale `lm_noise`: a 'fine-tuned' donor LM over a shared base, class A)."""
    import shutil

    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        CLIPImageProcessor,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    words = list(words if words is not None else [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS) - 1)])
    image_index = len(SPECIAL_TOKENS) + len(words)
    vocab = image_index + 1
    if text_folder is not None:
        lm = AutoModelForCausalLM.from_pretrained(text_folder)
        vocab = lm.config.vocab_size
        image_index = vocab - 1
        words = words[: image_index - len(SPECIAL_TOKENS)]
        text_overrides = {k: getattr(lm.config, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers")}
    make_llava(folder, text_type, seed, image_token_index=image_index, vocab_size=vocab, **text_overrides)
    if text_folder is not None:
        model = LlavaForConditionalGeneration.from_pretrained(folder)
        model.model.language_model.load_state_dict(lm.model.state_dict())
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
        gen = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for param in model.model.language_model.parameters():
                param.add_(lm_noise * torch.randn(param.shape, generator=gen))
        model.save_pretrained(folder)
    tokenizer_dir = make_word_tokenizer(Path(folder) / "_tok", words + ["<image>"])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    template = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
                "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}")
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                   vision_feature_select_strategy="default", chat_template=template, image_token="<image>",
                   num_additional_image_tokens=1).save_pretrained(folder)
    shutil.rmtree(tokenizer_dir)
    return Path(folder)


def make_text_recipient(folder: Path, model_type: str = "llama", seed: int = 0, words: list[str] | None = None,
                        chat_template: str | None = None, **overrides) -> Path:
    """A tiny text model with a word tokenizer over `words` (default: the donor's words)."""
    words = list(words if words is not None else [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS) - 1)])
    make_text_model(folder, model_type, seed, **overrides)
    make_word_tokenizer(folder, words, chat_template)
    return Path(folder)


def make_png_images(folder: Path, count: int = 6, size: int = 16, seed: int = 0) -> Path:
    """`count` small random RGB images, for calibration and generation tests."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    for i in range(count):
        pixels = (torch.rand(size, size, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


def make_llava_next_donor(folder: Path, text_type: str = "llama", seed: int = 0, words: list[str] | None = None,
                          **text_overrides) -> Path:
    """A tiny LlavaNextForConditionalGeneration donor (any-resolution tiles, image_newline) with processor."""
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    words = list(words if words is not None else [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS) - 1)])
    image_index = len(SPECIAL_TOKENS) + len(words)
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=24)
    pinpoints = [[16, 16], [16, 32], [32, 16]]
    config = LlavaNextConfig(vision_config=vision, image_grid_pinpoints=pinpoints, image_token_index=image_index,
                             vision_feature_layer=-1,
                             text_config=text_config(text_type, vocab_size=image_index + 1, **text_overrides))
    model = LlavaNextForConditionalGeneration(config)
    with torch.no_grad():
        model.model.image_newline.normal_()
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(make_word_tokenizer(Path(folder), words + ["<image>"]))
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                              image_grid_pinpoints=pinpoints)
    template = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
                "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}")
    LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                       vision_feature_select_strategy="default", chat_template=template, image_token="<image>",
                       num_additional_image_tokens=1).save_pretrained(folder)
    return Path(folder)
