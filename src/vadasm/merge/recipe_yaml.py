"""Read a recipe's YAML without trusting it: bounded size, aliases, nesting; no duplicate keys.

mergekit recipes are a few hundred bytes and rarely use anchors (`&name`) and aliases (`*name`),
so the limits below refuse only hostile or mistaken files, and refuse them fast:
- at most `MAX_BYTES` (1 MB); a longer file is refused before it is parsed;
- UTF-8 text only (a byte-order mark is allowed);
- at most `MAX_ALIASES` alias uses, nesting at most `MAX_DEPTH` deep, and at most `MAX_NODES`
  values, counted once every alias is expanded: a "billion laughs" file fails while it is
  composed, before any Python object exists, and an alias that contains itself is refused;
- a key written twice in one mapping is refused with both lines (PyYAML keeps the last silently).
Aliases within these limits keep working, so do merge keys (`<<: *defaults`).
A file of several `---`-separated documents (mergekit-multi) is read whole by `load_yaml_file_documents`
with the same limits over the whole file (alias expansion per document), and at most `MAX_DOCUMENTS`
documents.
Every problem becomes one short line (`RecipeYamlError`); no echoed value is longer than ~40 chars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vadasm.errors import VadasmError, one_line

MAX_BYTES = 1_000_000
MAX_ALIASES = 64
MAX_DEPTH = 64
MAX_NODES = 20_000
MAX_DOCUMENTS = 32  # `---`-separated recipes in one file (mergekit-multi)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class RecipeYamlError(Exception):
    """One line saying what is wrong with the file (the caller adds the file name)."""


def short(value: Any, limit: int = 40) -> str:
    """repr() of a value cut to `limit` characters, so an error never echoes a huge input."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's 4300-digit repr limit
        return f"<a {type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_yaml_file(path: Path) -> Any:
    """The file's single YAML document as Python data, within the limits above."""
    return load_yaml_text(_read_text(path))


def load_yaml_file_documents(path: Path) -> list[Any]:
    """Every `---`-separated document of the file (mergekit-multi's staged recipes), within the limits above."""
    return load_yaml_text(_read_text(path), all_documents=True)


def _read_text(path: Path) -> str:
    """The file's text: at most MAX_BYTES, UTF-8 (a byte-order mark allowed)."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise RecipeYamlError(f"{size:,} bytes; a recipe may be at most {MAX_BYTES // 1_000_000} MB")
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as err:
        raise RecipeYamlError(f"cannot read it ({err.strerror or err})") from None
    if len(data) > MAX_BYTES:  # grew since stat, or not a regular size (e.g. a pipe)
        raise RecipeYamlError(f"more than {MAX_BYTES:,} bytes; a recipe may be at most {MAX_BYTES // 1_000_000} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RecipeYamlError(f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                              "save the recipe as UTF-8") from None
    return text


def load_yaml_text(text: str, all_documents: bool = False) -> Any:
    """`text`'s single YAML document as Python data (safe types only), within the limits above;
    with `all_documents`, the list of its documents (aliases and values counted over all of them,
    each document's alias expansion within MAX_NODES)."""
    loader = None
    try:
        loader = _BoundedLoader(text)  # checks the characters
        return loader.get_all_data() if all_documents else loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = err.problem or err.context or "malformed"
        raise RecipeYamlError(f"not valid YAML at {where}{one_line(problem, 120)}") from None
    except yaml.reader.ReaderError as err:
        raise RecipeYamlError(f"not valid YAML: character {short(chr(err.character))} at offset {err.position} "
                              "is not allowed") from None
    except yaml.YAMLError as err:
        raise RecipeYamlError(f"not valid YAML: {one_line(str(err), 120)}") from None
    except (ValueError, TypeError, OverflowError) as err:  # a constructor refusing a value: !!int x, 2024-13-45
        where = f"line {loader.current_line}: " if loader is not None and loader.current_line else ""
        raise RecipeYamlError(f"{where}cannot read a value: {one_line(str(err), 100)}") from None
    finally:
        if loader is not None:
            loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting aliases, depth and nodes while it composes the node graph."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0
        self._nodes = 0
        self.current_line = 0  # of the value being constructed, for errors raised by constructors

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        self.current_line = node.start_mark.line + 1
        return super().construct_object(node, deep)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                line = self.peek_event().start_mark.line + 1
                raise RecipeYamlError(f"line {line}: more than {MAX_ALIASES} aliases (*name); "
                                      "write the values out instead")
            return super().compose_node(parent, index)
        self._nodes += 1
        self._depth += 1
        if self._nodes > MAX_NODES or self._depth > MAX_DEPTH:
            line = self.peek_event().start_mark.line + 1
            limit = f"more than {MAX_NODES:,} values" if self._nodes > MAX_NODES else f"nested deeper than {MAX_DEPTH}"
            raise RecipeYamlError(f"line {line}: {limit}; a recipe is much smaller")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first_line: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first_line:
                raise RecipeYamlError(f"line {line}: key {short(key.value)} appears twice in one mapping "
                                      f"(first on line {first_line[key.tag, key.value]}); keep one")
            first_line[key.tag, key.value] = line
        return node

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        check_expanded_size(node)
        return self.construct_document(node)

    def get_all_data(self) -> list[Any]:
        """Every document, each composed and size-checked before any is constructed."""
        nodes = []
        while self.check_node():
            if len(nodes) == MAX_DOCUMENTS:
                line = self.peek_event().start_mark.line + 1
                raise RecipeYamlError(f"line {line}: more than {MAX_DOCUMENTS} documents; a staged recipe "
                                      "is much smaller")
            nodes.append(self.get_node())
        for node in nodes:
            check_expanded_size(node)
        return [self.construct_document(node) for node in nodes]


def check_expanded_size(root: yaml.Node, limit: int = MAX_NODES) -> int:
    """Number of values in the document once aliases are expanded; refuses cycles and > `limit`.

    Shared nodes are sized once (memo), so this is linear in the composed graph even when the
    expansion would be astronomically large. Iterative: expanded depth is not bounded by MAX_DEPTH.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > limit:
                line = node.start_mark.line + 1
                raise RecipeYamlError(f"line {line}: aliases expand to more than {limit:,} values; "
                                      "a recipe is much smaller")
            continue
        if key in on_path:
            raise RecipeYamlError(f"line {node.start_mark.line + 1}: an alias refers to the value that contains it")
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise RecipeYamlError(f"line {child.start_mark.line + 1}: an alias refers to the value that "
                                      "contains it")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def read_yaml_mapping(path: str | Path, what: str, expected: str) -> dict:
    """One YAML file read within the limits above, as a mapping; every problem is one `VadasmError`
    line naming the file (`what`: "recipe" ...; `expected`: what the mapping should hold)."""
    path = Path(path)
    if not path.is_file():
        raise VadasmError(f"{path}: {what} file not found")
    try:
        raw = load_yaml_file(path)
    except RecipeYamlError as err:
        raise VadasmError(one_line(f"{path}: {err}")) from None
    if not isinstance(raw, dict):
        raise VadasmError(f"{path}: a {what} is a YAML mapping with {expected}")
    return raw
