import pytest

from pico_models import make_text_model
from vadasm.errors import VadasmError
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge

QUIET = MergeOptions(progress=False)


def test_tokenizer_source_with_more_rows_than_the_output_is_refused(tmp_path):
    base = make_text_model(tmp_path / "base", "llama")
    big = make_text_model(tmp_path / "big", "llama", seed=1, vocab_size=100)
    recipe = recipe_from_dict({"merge_method": "linear", "base_model": str(base), "tokenizer_source": str(big),
                               "models": [{"model": str(base)}, {"model": str(big)}]})
    with pytest.raises(VadasmError, match="tokenizer_source has 100 embedding rows but the merged model has 96"):
        run_merge(recipe, tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()
