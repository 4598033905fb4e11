"""A graft's model folder depends only on its inputs (byte-identical run to run), and an input
changed while the graft runs is refused with nothing written."""

import json

import pytest
from safetensors.torch import load_file, save_file

from pico_models import make_llava_donor, make_text_recipient
from vadasm.errors import VadasmError
from vadasm.graft import GraftOptions, graft
from vadasm.io import writer

WORDS = [f"w{i}" for i in range(91)]
RECIPIENT_WORDS = [f"w{i}" for i in range(15, 91)] + [f"v{i}" for i in range(15)]
FAST = dict(min_anchors=10, heldout=10, omp_k=8, progress=False)


@pytest.fixture
def pair(tmp_path):
    donor = make_llava_donor(tmp_path / "donor", "llama", words=WORDS)
    recipient = make_text_recipient(tmp_path / "recipient", "llama", words=RECIPIENT_WORDS, hidden_size=48)
    return donor, recipient


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_grafts_of_the_same_inputs_are_byte_identical(tmp_path, pair):
    first = graft(*pair, tmp_path / "a", GraftOptions.flat(**FAST))
    graft(*pair, tmp_path / "b", GraftOptions.flat(**FAST))
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert a.keys() == b.keys() and "vadasm_config.json" in a
    assert [name for name in a if a[name] != b[name]] == []
    recorded = json.loads(a["vadasm_config.json"])["result"]
    assert "seconds" not in recorded and "output" not in recorded  # returned only
    assert first.seconds > 0 and first.output == str(tmp_path / "a")


def test_an_input_changed_during_the_graft_is_refused(tmp_path, pair, monkeypatch):
    donor, recipient = pair
    real_header = writer._header

    def rewrite_recipient_then_write(shard):  # another program rewrites the recipient in place
        weights = recipient / "model.safetensors"
        save_file({k: v + 1 for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
        return real_header(shard)

    monkeypatch.setattr(writer, "_header", rewrite_recipient_then_write)
    with pytest.raises(VadasmError, match=f"^{recipient / 'model.safetensors'}: changed .*during the graft; "
                                          "nothing written$"):
        graft(donor, recipient, tmp_path / "out", GraftOptions.flat(**FAST))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
