"""mergekit's rule for embedding rows of tokens a model lacks, on hand-checked small tensors."""

import torch

from vadasm.merge.tokenizer import Vocabulary, vocabulary_rows
from vadasm.merge.tokenizer_config import TokenEmbeddingConfig


def _vocabulary(model_vocabs, out_tokens, base=None, tokens=None, rows=None):
    vocab = {t: i for i, t in enumerate(out_tokens)}
    perms = {m: torch.tensor([v.get(t, -1) for t in out_tokens]) for m, v in model_vocabs.items()}
    return Vocabulary(None, vocab, rows or len(vocab), perms, model_vocabs, tokens or {}, base)


def _rows(values):
    """One row per value, [v, 10 v]: easy to read back."""
    return torch.tensor([[v, 10 * v] for v in values], dtype=torch.float32)


A = {"a": 0, "b": 1, "c": 2}
B = {"c": 0, "a": 1, "d": 2}
C = {"d": 0, "a": 1}


def test_present_rows_are_reindexed_and_a_single_holder_gives_its_row():
    vocabulary = _vocabulary({"A": A, "B": B}, ["a", "b", "c", "d"], base="A")
    out = vocabulary_rows({"A": _rows([1, 2, 3]), "B": _rows([4, 5, 6])}, vocabulary)
    assert torch.equal(out["A"], _rows([1, 2, 3, 6]))  # d: only B has it (B's row 2)
    assert torch.equal(out["B"], _rows([5, 2, 4, 6]))  # b: only A has it (A's row 1)


def test_a_token_several_models_share_comes_from_the_base_else_their_mean():
    models = {"A": _rows([1, 2, 3]), "B": _rows([4, 5, 6]), "C": _rows([7, 8])}
    with_base = vocabulary_rows(models, _vocabulary({"A": A, "B": B, "C": C}, ["a", "d"], base="B"))
    assert torch.equal(with_base["A"][1], _rows([6])[0])  # d: B (the base) has it
    no_base = vocabulary_rows(models, _vocabulary({"A": A, "B": B, "C": C}, ["a", "d"], base="A"))
    assert torch.equal(no_base["A"][1], _rows([(6 + 7) / 2])[0])  # the base lacks d: mean of B's and C's rows
    assert torch.equal(no_base["B"][1], _rows([6])[0]) and torch.equal(no_base["C"][1], _rows([7])[0])


def test_configured_forced_zero_and_padding_rows():
    tokens = {"a": TokenEmbeddingConfig.model_validate({"source": "B", "force": True}),
              "new": TokenEmbeddingConfig.model_validate({"source": {"kind": "zero"}}),
              "c": TokenEmbeddingConfig.model_validate(
                  {"source": {"kind": "model_token", "model": "A", "token_id": 0}})}
    vocabulary = _vocabulary({"A": A, "B": B}, ["a", "c", "new"], base="A", tokens=tokens, rows=4)
    out = vocabulary_rows({"A": _rows([1, 2, 3]), "B": _rows([4, 5, 6])}, vocabulary)
    assert torch.equal(out["A"][0], _rows([5])[0]) and torch.equal(out["B"][0], _rows([5])[0])  # forced: B's a
    assert torch.equal(out["A"][1], _rows([3])[0]) and torch.equal(out["B"][1], _rows([4])[0])  # not forced
    assert torch.equal(out["A"][2], torch.zeros(2))
    assert torch.allclose(out["A"][3], out["A"][:3].mean(0))  # padding row: the mean of the real rows
