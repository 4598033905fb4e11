"""Fixtures for the eval tests; the builders live in `tiny_vlm.py` (the testbed tests reuse them)."""

import pytest
from tiny_vlm import fake_vqa_items, make_text_lm, make_tiny_llava, write_images

from vadasm.eval import easyvqa


@pytest.fixture
def tiny_models(tmp_path):
    lm = make_text_lm(tmp_path / "lm")
    vlm, _, _ = make_tiny_llava(tmp_path / "vlm", lm)
    return vlm, lm


@pytest.fixture
def fake_easyvqa(tmp_path, monkeypatch):
    """Replace the easy-vqa package data with 16 synthetic questions (CI has no easy-vqa)."""
    items = fake_vqa_items(write_images(tmp_path / "images"))
    monkeypatch.setattr(easyvqa, "load_split", lambda split: items)
    return items
