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


def test_jsonl_records_skip_blank_lines_and_name_the_bad_line(tmp_path):
    from vadasm.io.json_file import jsonl_records

    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a", "image": "x.png"}\n\n{"text": "b"}\n')
    assert list(jsonl_records(good, ("text",))) == [(1, {"text": "a", "image": "x.png"}), (3, {"text": "b"})]
    for line, fields, message in (('{"text": "a"}', ("image", "text"), 'with "image" and "text" fields'),
                                  ("[1, 2]", ("text",), 'with a "text" field'),
                                  ("{not json", ("text",), 'with a "text" field')):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": "ok", "image": "y"}\n' + line + "\n")
        with pytest.raises(VadasmError, match=f"^{bad}:2: expected a JSON object {message}$"):
            list(jsonl_records(bad, fields))
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "\xe9"}\n')
    with pytest.raises(VadasmError, match="cannot be read"):
        list(jsonl_records(tmp_path / "latin1.jsonl", ("text",)))
