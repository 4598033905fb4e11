from vadasm.tokensurgeon import TokenizerView, plan_tokens


def test_plan_copies_shared_strings_and_special_roles_and_predicts_the_rest():
    donor = TokenizerView(["", "a", "b", "c", "x", "b"], {"eos_token": 0})  # "b" is ambiguous in the donor
    model = TokenizerView(["", "c", "a", "z"], {"eos_token": 0})
    plan = plan_tokens(donor, model, donor_rows=8, model_rows=4)
    assert plan.rows == 8
    assert dict(zip(plan.copy_out.tolist(), plan.copy_model.tolist(), strict=True)) == {0: 0, 1: 2, 3: 1}
    assert plan.new_out.tolist() == [2, 4, 5]
    assert plan.zero_rows == 2  # ids 6 and 7 have no token


def test_donor_tokens_past_the_donor_rows_get_no_prediction():
    donor = TokenizerView(["a", "b", "c", "d"], {})
    model = TokenizerView(["d", "a"], {})
    plan = plan_tokens(donor, model, donor_rows=2, model_rows=2)
    assert plan.rows == 4
    assert plan.copy_out.tolist() == [0, 3] and plan.copy_model.tolist() == [1, 0]
    assert plan.new_out.tolist() == [1]  # "c" (id 2) has no donor row: stays zero
    assert plan.zero_rows == 1


def test_byte_fallback_tokens_do_not_make_their_character_ambiguous(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from vadasm.tokensurgeon import read_tokenizer

    backend = Tokenizer(models.WordLevel({"<unk>": 0, "!": 1, "<0x21>": 2, "a": 3}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.ByteFallback()  # '<0x21>' decodes to '!' as in Gemma's tokenizer
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>").save_pretrained(tmp_path)
    view = read_tokenizer(tmp_path)
    assert view.strings == ["", "!", "", "a"] and view.special_ids == {"unk_token": 0}
    plan = plan_tokens(TokenizerView(["!", "b"], {}), view, donor_rows=2, model_rows=4)
    assert plan.copy_out.tolist() == [0] and plan.copy_model.tolist() == [1]
