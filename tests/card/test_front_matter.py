"""Hugging Face front matter from a vadasm_config.json: repo ids only, relation, tags, shared licence."""

from vadasm.card.render import front_matter


def test_repo_ids_come_from_references_or_name_or_path_and_local_paths_never(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models/local").mkdir(parents=True)  # looks like org/name but is a folder here
    config = {"kind": "merge", "inputs": [
        {"ref": "org/hub-model", "path": "/cache/snapshots/abc", "license": "mit"},
        {"ref": "models/local", "path": str(tmp_path / "models/local"), "license": "mit"},
        {"ref": "./ft", "path": "/data/ft", "name_or_path": "org/ft-source", "license": "mit"},
        {"ref": "/abs/folder", "path": "/abs/folder", "name_or_path": "/abs/folder", "license": "mit"},
        {"ref": "org/base+org/adapter", "path": "/cache/base", "license": "mit"}]}
    front = front_matter(config, "llama")
    assert front["base_model"] == ["org/hub-model", "org/ft-source", "org/base", "org/adapter"]
    assert front["base_model_relation"] == "merge" and front["license"] == "mit"
    assert front["tags"] == ["merge", "vadasm"] and front["pipeline_tag"] == "text-generation"


def test_grafts_keep_their_kind_tag_and_no_merge_relation():
    config = {"kind": "graft", "inputs": {"recipient": {"path": "org/recipient"}, "donor": {"path": "/x/donor"}}}
    front = front_matter(config, "llava")
    assert front["base_model"] == ["org/recipient"] and "base_model_relation" not in front
    assert front["tags"] == ["vadasm", "graft"] and "license" not in front
    assert front["pipeline_tag"] == "image-text-to-text"
