"""The one reader of user input: YAML (space files and ``--set`` values), and the one-line
error format of the command lines (``one_line``, ``OneLineParser``).

``yaml.safe_load`` is safe against code execution but not against the other ways a file
can go wrong, each of which would end in a traceback or a line of hundreds of megabytes.
This reader:

- decodes the file as UTF-8 itself, so a stray byte is reported with its offset;
- refuses a key given twice in one mapping (YAML 1.1 keeps the last one silently);
- bounds what aliases expand to *before* anything is constructed: PyYAML shares the
  nodes of an alias, so a "billion laughs" file loads in microseconds, and then whatever
  walks it (``repr``, ``asdict``, ``json.dumps``) runs out of memory;
- reads ``1e-3``, ``1E5`` and ``-2e-4`` as floats, as YAML 1.2 and every user does
  (YAML 1.1 wants a dot in the mantissa, so PyYAML returns those as strings); ``.nan`` and
  ``.inf`` stay floats so that a schema can refuse them by name;
- raises ``YamlError`` with one line, at most ``MAX_LINE`` characters, values elided
  (``show``).
"""

from __future__ import annotations

import argparse
import re
import reprlib
import typing
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# A space file is a few kilobytes; a megabyte is a mistake (a data file passed as --space).
MAX_FILE_BYTES = 1 << 20
# Values (nodes) in a document, counted as written and again with every alias expanded:
# the bundled spaces have about 150. The bound also bounds the parse time (the pure-Python
# parser's time per value: docs/benchmarks.md section 7).
MAX_NODES = 10_000
# Nesting of mappings and lists: the schema nests four levels deep.
MAX_DEPTH = 64
MAX_LINE = 300

FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.1's float pattern (yaml/resolver.py) with the dot of the mantissa made optional
# when an exponent follows (YAML 1.2 core schema): 1e-3, 1E5, -2e-4, 6.02e23.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxdict, _SHOW.maxtuple = 2, 4, 4, 4
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlong = 40, 40, 40


class YamlError(ValueError):
    """YAML that cannot be read; the message is one line."""


def show(value: Any) -> str:
    """``repr(value)`` cut to a few dozen characters, whatever its size: error messages
    quote values with this, never with ``repr`` (a nested list can print as megabytes)."""
    return _SHOW.repr(value)


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """``text`` on one line of at most ``limit`` characters (the middle elided)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    keep = limit - 5
    return f"{text[: keep - keep // 3]} ... {text[-(keep // 3) :]}"


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (``error: PROG: what``), exit
    code 2, like every other refusal of the command lines."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, one_line(f"error: {self.prog}: {message}") + "\n")


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` with YAML 1.2 floats and duplicate keys refused."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        # Before SafeConstructor flattens merge keys (``<<: *base``): the keys a merge
        # brings in may be overridden, the keys written in the mapping itself may not.
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeConstructor refuses it below
                continue
            if first is not None:
                raise YamlError(
                    f"line {key_node.start_mark.line + 1}: key {show(key)} is given twice "
                    f"in one mapping (first on line {first + 1}); give each key once"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        # The composer recurses once per level: stop at MAX_DEPTH, long before Python's
        # recursion limit (a RecursionError is slow to unwind); and stop at MAX_NODES values,
        # long before the parse time grows to minutes (docs/benchmarks.md section 7).
        self._depth = getattr(self, "_depth", 0) + 1
        self._nodes = getattr(self, "_nodes", 0) + 1
        try:
            mark = self.peek_event().start_mark
            if self._depth > MAX_DEPTH:
                raise YamlError(f"line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
            if self._nodes > MAX_NODES:
                raise YamlError(
                    f"line {mark.line + 1}: more than {MAX_NODES} values; a space file holds "
                    "a few hundred"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(FLOAT_TAG, _FLOAT, list("-+0123456789."))


def _check_size(root: Node) -> None:
    """Refuse a document whose aliases expand to more than ``MAX_NODES`` nodes, or that
    contains itself; counted on the shared node graph, each node once, so counting costs
    no more than the file's size."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > MAX_NODES:
                raise YamlError(
                    f"line {node.start_mark.line + 1}: more than {MAX_NODES} values once aliases "
                    "are expanded; a space file holds a few hundred"
                )
        elif key not in size:
            if key in on_path:
                raise YamlError(f"line {node.start_mark.line + 1}: an alias refers to itself")
            on_path.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    assert isinstance(node, ScalarNode)
    return []


def _load(text: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YamlError(f"{where}not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise YamlError(f"not valid YAML: {err}") from None
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path) -> Any:
    """Read a YAML file (a space file).

    Args:
        path: the file.

    Returns:
        The document: plain dicts, lists, strings, numbers, booleans and None.

    Raises:
        YamlError: one line starting with ``path``: not readable, larger than
            ``MAX_FILE_BYTES``, not UTF-8 (with the byte offset), not valid YAML (with
            the line), a duplicate key, or aliases that expand past ``MAX_NODES``.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise YamlError(one_line(f"{path}: cannot be read: {err.strerror or err}")) from None
    if len(data) > MAX_FILE_BYTES:
        raise YamlError(
            one_line(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB; is it a space file?")
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise YamlError(
            one_line(f"{path}: not UTF-8 text: byte {err.start} is {data[err.start]:#04x}")
        ) from None
    try:
        return _load(text)
    except YamlError as err:
        raise YamlError(one_line(f"{path}: {err}")) from None


def read_yaml_value(text: str) -> Any:
    """Read one YAML value (``--set FIELD=VALUE``'s VALUE), by the same rules as a file.

    Raises:
        YamlError: one line (no prefix: the caller names the field).
    """
    try:
        return _load(text)
    except YamlError as err:
        raise YamlError(one_line(str(err))) from None
