"""read_json_file: a JSON file a user named is parsed, or refused in one line naming it."""

import pytest

from vadasm.errors import VadasmError
from vadasm.io.json_file import read_json_file


def test_parses_a_json_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"x": [1, 2]}', encoding="utf-8")
    assert read_json_file(path) == {"x": [1, 2]}


@pytest.mark.parametrize(("content", "missing", "expected"), [
    (None, None, "a.json: not found"),
    (None, "no adapter here", "^no adapter here$"),
    (b'{"x": 1,\n}', None, r"a.json: not valid JSON \(.*, line 2\)"),
    (b'\xff\xfe{}', None, r"a.json: cannot be read \(UnicodeDecodeError\)"),
])
def test_refuses_in_one_line(tmp_path, content, missing, expected):
    path = tmp_path / "a.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VadasmError, match=expected) as caught:
        read_json_file(path, missing)
    assert "\n" not in str(caught.value)


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(VadasmError, match="not found"):
        read_json_file(tmp_path)
