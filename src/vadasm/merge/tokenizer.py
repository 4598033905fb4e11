"""The output vocabulary (`tokenizer_source`, `tokenizer:`) and the embedding rows that follow it.

Built as mergekit 0.1.5 builds them (tokenizer/build.py, tokenizer/embed.py):
- `base`: the base model's tokenizer; `MODEL`: that model's; `union`: the base tokenizer plus
  every other model's tokens it lacks (added as tokens), then `tokenizer.tokens` not yet present;
- every input's vocabulary tensors (embeddings, LM head) are re-indexed to the output
  vocabulary before merging. A token a model lacks gets a row by mergekit's default rule: the
  only model that has it gives its row; else the base's row if the base has it; else the mean of
  the rows of the models that have it; a token nobody has gets zeros. `tokens:` entries name the
  row instead (`force` applies it even where a model has the token);
- rows added by `pad_to_multiple_of` get the mean of the real rows.
The remapped tensors are whole vocabulary matrices (one per input), as in mergekit.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vadasm.errors import VadasmError
from vadasm.merge.tokenizer_config import ModelTokenEmbedding, TokenEmbeddingConfig, ZeroEmbedding


@dataclass
class Vocabulary:
    """The output tokenizer and, per model, the row of each output token in that model (-1: absent)."""

    tokenizer: object  # a transformers tokenizer
    vocab: dict[str, int]
    rows: int  # output rows, padded to `pad_to_multiple_of`
    permutations: dict[str, torch.Tensor]  # model -> LongTensor over output ids
    original_vocabs: dict[str, dict[str, int]]
    tokens: dict[str, TokenEmbeddingConfig] = field(default_factory=dict)
    base: str | None = None
    notes: list[str] = field(default_factory=list)


def load_tokenizer(path: Path):
    """A model folder's tokenizer (fast where possible)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True)
    except Exception as err:  # transformers raises many types for missing or broken files
        raise VadasmError(f"{path}: no usable tokenizer ({str(err).splitlines()[0][:160]})") from None


def copy_tokenizer(tokenizer):
    """An independent copy, so tokens added to the output never show up in an input's vocabulary."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return AutoTokenizer.from_pretrained(tmp, use_fast=True)


def union_tokenizer(base_tokenizer, tokenizers: dict[str, object], rows: dict[str, int]):
    """The base tokenizer plus every token of the others that it lacks (mergekit's build_union_tokenizer)."""
    vocab_tokens: dict[str, None] = {}
    added: dict[str, object] = {}
    for model, tokenizer in tokenizers.items():
        decoder = tokenizer.added_tokens_decoder
        added_texts = {info.content for info in decoder.values()}
        # in id order: get_vocab()'s order is a hash map's, so mergekit's union order varies from run to run
        for token, index in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
            if index < rows[model] and token not in added_texts:
                vocab_tokens.setdefault(token)
        for index, info in sorted(decoder.items()):
            if index < rows[model]:
                added.setdefault(info.content, info)
    result = copy_tokenizer(base_tokenizer)
    base_vocab = base_tokenizer.get_vocab()
    for token in vocab_tokens:
        if token not in added and token not in base_vocab:
            result.add_tokens(token)
    for info in added.values():
        result.add_tokens(info)
    return result


def build_vocabulary(source: str, base: str, models: list[str], paths: dict[str, Path], rows: dict[str, int],
                     tokens: dict[str, TokenEmbeddingConfig] | None = None,
                     pad_to_multiple_of: int | None = None) -> Vocabulary:
    """The output tokenizer for `source` ("union", "base" or a model) and each model's permutation.

    `base` is the recipe's base model (else its first model); `rows` each model's embedding rows.
    A model without a tokenizer is taken to share the base's vocabulary, as mergekit does.
    """
    tokens = dict(tokens or {})
    base_tokenizer = load_tokenizer(paths[base])
    tokenizers, notes = {base: base_tokenizer}, []
    for model in models:
        if model != base:
            try:
                tokenizers[model] = load_tokenizer(paths[model])
            except VadasmError:
                notes.append(f"{model}: no tokenizer found; taken to share the base's vocabulary (as mergekit)")
    if source == "base":
        # a copy: mergekit adds `tokens:` to the base tokenizer itself, so an added token's id there
        # points at whatever (padding) row the base has at that index; here it counts as absent
        out = copy_tokenizer(base_tokenizer)
    elif source == "union":
        out = union_tokenizer(base_tokenizer, tokenizers, rows)
    else:
        out = copy_tokenizer(tokenizers[source] if source in tokenizers else load_tokenizer(paths[source]))
    existing = set(out.get_vocab())
    for token in tokens:
        if token not in existing:
            out.add_tokens(token)
            existing.add(token)
    vocab = out.get_vocab()
    size = max(vocab.values()) + 1
    padded = size if not pad_to_multiple_of else -(-size // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.tensor(list(vocab.values()), dtype=torch.long)
    permutations, originals = {}, {}
    for model in models:
        model_vocab = (tokenizers.get(model) or base_tokenizer).get_vocab()
        originals[model] = model_vocab
        rows_of = [model_vocab.get(token, -1) for token in vocab]
        perm = torch.full((size,), -1, dtype=torch.long)
        perm[ids] = torch.tensor([r if r < rows[model] else -1 for r in rows_of], dtype=torch.long)
        permutations[model] = perm
    new_tokens = int((permutations[base] < 0).sum()) if base in permutations else 0
    notes.append(f"output vocabulary: {len(vocab)} tokens in {padded} rows, {new_tokens} of them new to the base")
    result = Vocabulary(out, vocab, padded, permutations, originals, tokens, base, notes)
    _check_token_sources(result, rows)
    return result


def _check_token_sources(vocabulary: Vocabulary, rows: dict[str, int]) -> None:
    """Refuse, before anything is written, a `tokens:` entry whose row cannot be found."""
    for token, spec in vocabulary.tokens.items():
        where = f"recipe: tokenizer.tokens[{token!r}]"
        token_id = vocabulary.vocab[token]
        source = spec.source
        if source is None:
            if spec.force or any(int(p[token_id]) < 0 for p in vocabulary.permutations.values()):
                raise VadasmError(f"{where}: some model lacks this token; give a source (a model, "
                                  "{kind: model_token, ...} or {kind: zero})")
        elif isinstance(source, ModelTokenEmbedding):
            if source.token is not None and source.token not in vocabulary.original_vocabs[source.model]:
                raise VadasmError(f"{where}: token {source.token!r} is not in {source.model}'s vocabulary")
            index = source.token_id if source.token_id is not None else vocabulary.original_vocabs[
                source.model][source.token]
            if index >= rows[source.model]:
                raise VadasmError(f"{where}: token id {index} is outside {source.model} "
                                  f"({rows[source.model]} rows)")
        elif isinstance(source, str) and int(vocabulary.permutations[source][token_id]) < 0:
            raise VadasmError(f"{where}: {source} has no row for this token")


def vocabulary_rows(tensors: dict[str, torch.Tensor], vocabulary: Vocabulary) -> dict[str, torch.Tensor]:
    """Each model's vocabulary tensor (tokens on dim 0) re-indexed to the output vocabulary,
    missing rows filled by mergekit's default rule (module docstring)."""
    models = list(tensors)
    perms = {m: vocabulary.permutations[m] for m in models}
    sample = tensors[models[0]]
    shape = tuple(sample.shape[1:])
    configs = dict(vocabulary.tokens)
    averaged = _assign_sources(perms, models, vocabulary, configs)

    defaults: dict[int, torch.Tensor] = {}
    for token, token_id in vocabulary.vocab.items():
        spec = configs.get(token)
        present = [m for m in models if int(perms[m][token_id]) >= 0]
        if not (spec and spec.force) and len(present) == len(models):
            continue
        if token in averaged:
            total = torch.zeros(shape, dtype=sample.dtype, device=sample.device)
            for m in present:  # in model order, as mergekit sums
                total = total + tensors[m][int(perms[m][token_id])]
            defaults[token_id] = total / len(present)
        elif spec is not None:
            defaults[token_id] = _configured_row(spec, token_id, tensors, vocabulary, shape, sample)

    forced = torch.zeros(vocabulary.rows, dtype=torch.bool, device=sample.device)
    for token, spec in configs.items():
        if spec.force:
            forced[vocabulary.vocab[token]] = True
    size = vocabulary.permutations[models[0]].numel()
    result = {}
    for model in models:
        perm = perms[model].to(sample.device)
        new = torch.zeros((vocabulary.rows, *shape), dtype=sample.dtype, device=sample.device)
        keep = (perm >= 0) & ~forced[:size]
        new[:size][keep] = tensors[model][perm[keep]]
        for token_id, row in defaults.items():
            if not keep[token_id]:
                new[token_id] = row
        if vocabulary.rows > size:  # padding rows: the mean of the real ones (mergekit, after Hewitt)
            new[size:] = new[:size].mean(dim=0)
        result[model] = new
    return result


def _assign_sources(perms: dict[str, torch.Tensor], models: list[str], vocabulary: Vocabulary,
                    configs: dict[str, TokenEmbeddingConfig]) -> set[str]:
    """mergekit's default rule: one holder gives its row, else the base, else an average (returned)."""
    averaged = set()
    for token, token_id in vocabulary.vocab.items():
        if token in configs:
            continue
        holders = [m for m in models if int(perms[m][token_id]) >= 0]
        if len(holders) == 1:
            configs[token] = TokenEmbeddingConfig(source=holders[0])
        elif not holders:
            configs[token] = TokenEmbeddingConfig(source=ZeroEmbedding(kind="zero"))
        elif vocabulary.base in models and int(perms[vocabulary.base][token_id]) >= 0:
            configs[token] = TokenEmbeddingConfig(source=vocabulary.base)
        else:
            averaged.add(token)
    return averaged


def _configured_row(spec: TokenEmbeddingConfig, token_id: int, tensors: dict[str, torch.Tensor],
                    vocabulary: Vocabulary, shape: tuple[int, ...], sample: torch.Tensor) -> torch.Tensor:
    if isinstance(spec.source, ZeroEmbedding):
        return sample.new_zeros(shape)
    model = spec.source_model()
    if model not in tensors:
        raise VadasmError(f"recipe: tokenizer.tokens: a row comes from {model}, which is not merged into "
                          "this tensor (name it among the models of the first and last slices)")
    if isinstance(spec.source, ModelTokenEmbedding):
        index = spec.source.token_id
        if index is None:
            index = vocabulary.original_vocabs[model][spec.source.token]
        return tensors[model][index]
    return tensors[model][int(vocabulary.permutations[model][token_id])]
