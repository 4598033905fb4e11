"""The recipe's `tokenizer:` block, mergekit 0.1.5's schema (mergekit/tokenizer/config.py).

```yaml
tokenizer:
  source: union            # union | base | a model of the recipe
  pad_to_multiple_of: 64   # rows added after the vocabulary get the mean embedding
  tokens:
    <|im_start|>:
      source: some/model                    # that model's row for this token
      force: true                           # even where every model has the token
    <|im_end|>:
      source: {kind: model_token, model: some/model, token: "</s>"}   # or token_id: 2
    <|pad|>:
      source: {kind: zero}
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelTokenEmbedding(BaseModel):
    """The embedding row of one token (by text or id) of one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["model_token"]
    model: str
    token_id: int | None = Field(default=None, ge=0)
    token: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ModelTokenEmbedding:
        if (self.token_id is None) == (self.token is None):
            raise ValueError("give exactly one of 'token' or 'token_id'")
        return self


class ZeroEmbedding(BaseModel):
    """An all-zero row."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["zero"]


class TokenEmbeddingConfig(BaseModel):
    """Where one token's embedding row comes from; `force` applies it even where a model has the token."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: ModelTokenEmbedding | ZeroEmbedding | str | None = None
    force: bool = False

    def source_model(self) -> str | None:
        """The model this row is read from, if any."""
        if isinstance(self.source, ModelTokenEmbedding):
            return self.source.model
        return self.source if isinstance(self.source, str) else None


class TokenizerConfig(BaseModel):
    """The output vocabulary: whose tokenizer, which tokens to add, how to pad the rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = "union"  # "union", "base" or a model reference
    tokens: dict[str, TokenEmbeddingConfig] | None = None
    pad_to_multiple_of: int | None = Field(default=None, ge=1)
