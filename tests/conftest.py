import pytest

from pico_models import make_text_model, perturbed_copy


@pytest.fixture
def llama_trio(tmp_path):
    """A tiny base model and two 'fine-tunes' of it."""
    base = make_text_model(tmp_path / "base", "llama")
    ft1 = perturbed_copy(base, tmp_path / "ft1", seed=1)
    ft2 = perturbed_copy(base, tmp_path / "ft2", seed=2)
    return base, ft1, ft2
