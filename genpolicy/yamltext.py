"""Rewrite YAML text with the smallest edits that turn the old data into the new data.

Users' YAML carries comments, key order, quoting and indentation that a load-and-dump round
trip loses or reflows. So a document is rewritten as text: the data before and after the
transformation are compared, and only what differs is edited, at the positions the parser
reports (a new key is appended to its mapping, a new list item inserted before the item it
precedes, a changed scalar replaced in place). Untouched bytes stay untouched.

Every rewrite is checked: the edited text is parsed again and must give exactly the new
data. Where the text cannot be edited this way (flow collections like ``{a: 1}`` that need
a change inside, anchors and aliases, unusual layouts) the document goes through
ruamel.yaml's round-trip mode instead, which keeps comments but may normalize spacing; that
result is checked the same way.

Documents are split on ``---`` lines so that a document that does not change is copied
byte for byte, whatever it contains.
"""

from __future__ import annotations

import difflib
import functools
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

_SEPARATOR = re.compile(r"---(?:[ \t].*)?")
_DOCUMENT_END = re.compile(r"\.\.\.(?:[ \t].*)?")
_PLAIN_SAFE = re.compile(r"[A-Za-z0-9/][A-Za-z0-9_./@+=:-]*(?:[ ][A-Za-z0-9_./@+=-]+)*")
# Numbers as YAML 1.2 resolves them (Go's yaml.v3 does): these must be quoted to stay strings.
_YAML12_NUMBER = re.compile(
    r"[-+]?(?:0o[0-7]+|0x[0-9a-f]+|[0-9][0-9_]*(?:\.[0-9_]*)?(?:e[-+]?[0-9]+)?|\.[0-9]+)",
    re.IGNORECASE,
)
_RESOLVER = yaml.resolver.Resolver()


class YamlSyntaxError(Exception):
    """Malformed YAML, with the 1-based line of the problem within the stream."""

    def __init__(self, line: int | None, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(problem)


class RewriteError(Exception):
    """The document could not be rewritten faithfully (a bug: the output would be wrong)."""


@dataclass(frozen=True)
class Document:
    """One document of a stream: its exact text, its first line, and its parse."""

    text: str
    first_line: int  # 0-based line of ``text`` in the stream
    node: yaml.Node | None
    data: Any
    parsed_text: str = ""  # ``text`` with long policy values stashed (see ``_stash``)
    stash: dict[str, str] = field(default_factory=dict)

    def line_of(self, path: tuple[str | int, ...]) -> int | None:
        """The 1-based stream line of the node at ``path``, or of its nearest ancestor."""
        node = self.node
        if node is None:
            return None
        line = node.start_mark.line
        for key in path:
            child = _child(node, key)
            if child is None:
                break
            node = child
            line = node.start_mark.line
        return self.first_line + line + 1


def _child(node: yaml.Node, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(key, str):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return value_node  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return node.value[key]  # type: ignore[no-any-return]
    return None


def split_documents(text: str) -> Iterator[tuple[str, int]]:
    """Yield ``(document text, first line)``; joined back they give ``text`` exactly.

    A chunk starts at a ``---`` line (directives such as ``%YAML`` just before it belong to
    it); the first chunk holds whatever precedes the first separator.
    """
    lines = text.splitlines(keepends=True)
    start = 0
    for index, line in enumerate(lines):
        if index > start and _SEPARATOR.fullmatch(line.rstrip("\r\n")):
            begin = index
            while begin - 1 > start and lines[begin - 1].startswith("%"):
                begin -= 1
            if begin > start:
                yield "".join(lines[start:begin]), start
                start = begin
    yield "".join(lines[start:]), start


class _Loader(yaml.CSafeLoader):
    """libyaml's parser with SafeLoader's tags, minus per-node resolver bookkeeping.

    PyYAML resolves every scalar's tag in Python, and for safe loading that is only the
    implicit-resolver table lookup below (no path resolvers exist), so this gives the same
    tags as ``SafeLoader`` at a fraction of the cost.
    """

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, regexp in self.yaml_implicit_resolvers.get(value[:1], ()):
                    if regexp.match(value):
                        return str(tag)
            return str(self.DEFAULT_SCALAR_TAG)
        if kind is yaml.SequenceNode:
            return str(self.DEFAULT_SEQUENCE_TAG)
        return str(self.DEFAULT_MAPPING_TAG)


# A policy annotation value is ~15 KB of base64 that libyaml would scan character by
# character on every run; such values are swapped for short tokens before parsing and
# swapped back in the data and the output. Only whole-line values are swapped, so line
# numbers and every other position on other lines stay as they were.
_POLICY_LINE = re.compile(
    r"^([ \t]*io\.katacontainers\.config\.agent\.policy:[ \t]+)([A-Za-z0-9+/]{256,}={0,2})"
    r"([ \t]*)$",
    re.MULTILINE,
)
_STASH_PREFIX = "contrast-stashed-policy-"


def _stash(text: str, stash: dict[str, str], has_own_tokens: bool = False) -> str:
    """``text`` with long policy values replaced by tokens recorded in ``stash``.

    A user's text that happens to contain the token prefix is left as it is (and simply
    parsed in full); ``has_own_tokens`` says the tokens in ``text`` are ours.
    """
    if "io.katacontainers.config.agent.policy" not in text:
        return text
    if not has_own_tokens and _STASH_PREFIX in text:
        return text

    def swap(match: re.Match[str]) -> str:
        token = f"{_STASH_PREFIX}{len(stash)}"
        stash[token] = match.group(2)
        return match.group(1) + token + match.group(3)

    return _POLICY_LINE.sub(swap, text)


def _unstash(text: str, stash: dict[str, str]) -> str:
    # Longest tokens first, so that "...-1" never replaces inside "...-10".
    for token in sorted(stash, key=len, reverse=True):
        text = text.replace(token, stash[token])
    return text


def _restore(data: Any, stash: dict[str, str]) -> Any:
    if isinstance(data, dict):
        return {k: _restore(v, stash) for k, v in data.items()}
    if isinstance(data, list):
        return [_restore(v, stash) for v in data]
    if isinstance(data, str):
        return stash.get(data, data)
    return data


_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _NotPlain(Exception):
    """The node tree needs PyYAML's full constructor (merge keys, unhashable keys)."""


def _plain(
    node: yaml.Node, scalars: yaml.constructor.SafeConstructor, stash: dict[str, str]
) -> Any:
    """Node tree to data, as SafeLoader would build it, without its per-node overhead."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR_TAG:
            return stash.get(node.value, node.value) if stash else node.value
        if node.tag == _NULL_TAG:
            return None
        return scalars.construct_object(node)
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, scalars, stash) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                raise _NotPlain
            result[_plain(key_node, scalars, stash)] = _plain(value_node, scalars, stash)
        return result
    raise _NotPlain


def _construct(loader: _Loader, node: yaml.Node, stash: dict[str, str]) -> Any:
    scalars = yaml.constructor.SafeConstructor()
    try:
        return _plain(node, scalars, stash)
    except (_NotPlain, RecursionError, TypeError):
        return _restore(loader.construct_document(node), stash)


def _refuse_duplicate_keys(node: yaml.Node, first_line: int) -> None:
    """A mapping that names a key twice is refused: YAML loaders keep the last one silently,
    so ``runtimeClassName`` or an annotation written twice would change what the pod gets
    without anyone seeing it."""
    stack, visited = [node], set()
    while stack:
        current = stack.pop()
        if id(current) in visited:  # an alias, possibly of an enclosing node
            continue
        visited.add(id(current))
        if isinstance(current, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key_node, value_node in current.value:
                # "<<" merge keys may repeat: each merges its mapping in.
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                    key = (key_node.tag, key_node.value)
                    line = first_line + key_node.start_mark.line + 1
                    if key in seen:
                        raise YamlSyntaxError(
                            line,
                            f"duplicate key {key_node.value!r} (first on line {seen[key]}); "
                            "a mapping may name each key once: remove one of them",
                        )
                    seen[key] = line
                stack += [key_node, value_node]
        elif isinstance(current, yaml.SequenceNode):
            stack += current.value


def parse_document(text: str, first_line: int) -> Document:
    stash: dict[str, str] = {}
    parsed_text = _stash(text, stash)
    loader = _Loader(parsed_text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _refuse_duplicate_keys(node, first_line)
        data = _construct(loader, node, stash) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = first_line + mark.line + 1 if mark is not None else None
        problem = exc.problem or "cannot be parsed"
        if exc.context and exc.context_mark is not None:
            started = first_line + exc.context_mark.line + 1
            problem += f" ({exc.context} that starts on line {started})"
        raise YamlSyntaxError(line, f"malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, f"malformed YAML: {exc}") from None
    finally:
        loader.dispose()
    return Document(text, first_line, node, data, parsed_text, stash)


def load_data(text: str, stash: dict[str, str] | None = None) -> Any:
    """The data of a one-document ``text`` (tokens from ``stash`` read as their values)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return _construct(loader, node, stash or {}) if node is not None else None
    finally:
        loader.dispose()


# ---------------------------------------------------------------------------------------
# Rendering new values in the document's own style.


@dataclass(frozen=True)
class Style:
    indent: int = 2  # columns from a key to its child mapping's keys
    sequence_offset: int = 2  # columns from a key to the dash of its block sequence


def guess_style(node: yaml.Node | None) -> Style:
    """The indentation the document already uses (first nested mapping and sequence)."""
    indent: int | None = None
    offset: int | None = None
    stack = [node] if node is not None else []
    while stack and (indent is None or offset is None):
        current = stack.pop(0)
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if _is_block(value_node) and value_node.start_mark.line > key_node.end_mark.line:
                    delta = value_node.start_mark.column - key_node.start_mark.column
                    if isinstance(value_node, yaml.MappingNode) and indent is None and delta > 0:
                        indent = delta
                    if isinstance(value_node, yaml.SequenceNode) and offset is None:
                        offset = max(delta, 0)
                stack.append(value_node)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return Style(indent=indent or 2, sequence_offset=2 if offset is None else offset)


def _is_block(node: yaml.Node) -> bool:
    return isinstance(node, yaml.CollectionNode) and not node.flow_style


@functools.lru_cache(maxsize=4096, typed=True)
def render_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if (
        _PLAIN_SAFE.fullmatch(text)
        and not text.endswith(":")
        and ": " not in text
        and not _YAML12_NUMBER.fullmatch(text)
        and _resolve_plain(text) == "tag:yaml.org,2002:str"
        and text.lower() not in ("y", "n", "yes", "no", "on", "off", "true", "false", "null")
    ):
        return text
    return json.dumps(text, ensure_ascii=False)


def _resolve_plain(text: str) -> str:
    """The tag a YAML 1.1 loader gives ``text`` as a plain scalar."""
    tag: str = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return tag


def _inline(value: Any) -> str | None:
    """The one-line form of a scalar or an empty collection; None for a block collection."""
    if isinstance(value, dict):
        return "{}" if not value else None
    if isinstance(value, list):
        return "[]" if not value else None
    return render_scalar(value)


def render_mapping(value: dict[str, Any], column: int, style: Style) -> list[str]:
    lines: list[str] = []
    pad = " " * column
    for key, item in value.items():
        inline = _inline(item)
        if inline is not None:
            lines.append(f"{pad}{render_scalar(key)}: {inline}")
        elif isinstance(item, dict):
            lines.append(f"{pad}{render_scalar(key)}:")
            lines.extend(render_mapping(item, column + style.indent, style))
        else:
            lines.append(f"{pad}{render_scalar(key)}:")
            lines.extend(render_sequence(item, column + style.sequence_offset, style))
    return lines


def render_sequence(value: list[Any], column: int, style: Style) -> list[str]:
    lines: list[str] = []
    for item in value:
        lines.extend(render_item(item, column, style))
    return lines


def render_item(item: Any, column: int, style: Style) -> list[str]:
    """One sequence item with its dash at ``column``."""
    pad = " " * column
    inline = _inline(item)
    if inline is not None:
        return [f"{pad}- {inline}"]
    if isinstance(item, dict):
        body = render_mapping(item, column + 2, style)
    else:
        body = render_sequence(item, column + 2, style)
    return [pad + "- " + body[0][column + 2 :], *body[1:]]


def render_block_value(value: Any, key_column: int, style: Style) -> list[str]:
    if isinstance(value, dict):
        return render_mapping(value, key_column + style.indent, style)
    return render_sequence(value, key_column + style.sequence_offset, style)


# ---------------------------------------------------------------------------------------
# Text edits from the difference of old and new data.


class _Unsupported(Exception):
    """This change cannot be made as a text edit; use the round-trip fallback."""


@dataclass
class _Editor:
    text: str
    style: Style
    edits: list[tuple[int, int, str]]

    def line_end(self, index: int) -> int:
        """The index just after the newline of the line containing ``index``."""
        newline = self.text.find("\n", index)
        return len(self.text) if newline < 0 else newline + 1

    def line_start(self, index: int) -> int:
        return self.text.rfind("\n", 0, index) + 1

    def content_end(self, node: yaml.Node) -> int:
        """Where the node's own text ends: after the line of its last scalar."""
        while isinstance(node, yaml.CollectionNode) and not node.flow_style and node.value:
            last = node.value[-1]
            node = last[1] if isinstance(node, yaml.MappingNode) else last
        mark = node.end_mark
        if mark.column == 0 and isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
            return int(mark.index)
        return self.line_end(mark.index)

    def ends_with_newline(self, index: int) -> bool:
        return index > 0 and self.text[index - 1] == "\n"

    def insert_lines(self, index: int, lines: list[str]) -> None:
        prefix = "" if index == 0 or self.ends_with_newline(index) else "\n"
        self.edits.append((index, index, prefix + "\n".join(lines) + "\n"))

    def diff(self, node: yaml.Node, old: Any, new: Any) -> None:
        if old == new and type(old) is type(new):
            return
        if isinstance(old, dict) and isinstance(new, dict):
            self.diff_mapping(node, old, new)
        elif isinstance(old, list) and isinstance(new, list):
            self.diff_sequence(node, old, new)
        elif isinstance(node, yaml.ScalarNode) and _inline(new) is not None:
            self.replace_scalar(node, new)
        else:
            raise _Unsupported("a value changes type")

    def replace_scalar(self, node: yaml.ScalarNode, new: Any) -> None:
        if node.style in ("|", ">"):
            raise _Unsupported("block scalar")
        text = _inline(new)
        assert text is not None
        if isinstance(new, str) and node.style == "'" and "'" not in new and "\n" not in new:
            text = f"'{new}'"
        elif isinstance(new, str) and node.style == '"':
            text = json.dumps(new, ensure_ascii=False)
        start, end = node.start_mark.index, node.end_mark.index
        if start == end:
            text = " " + text  # an empty (null) value right after its colon
        self.edits.append((start, end, text))

    def diff_mapping(self, node: yaml.Node, old: dict[Any, Any], new: dict[Any, Any]) -> None:
        if not isinstance(node, yaml.MappingNode) or node.flow_style or not node.value:
            raise _Unsupported("flow or empty mapping")
        children: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Unsupported("complex key")
            children[key_node.value] = (key_node, value_node)
        for key in old:
            if key not in new:
                self.delete_entry(children.get(str(key)))
        column = node.start_mark.column
        appended: list[str] = []
        for key, value in new.items():
            if key not in old:
                inline = _inline(value)
                if inline is not None:
                    appended.append(f"{' ' * column}{render_scalar(key)}: {inline}")
                else:
                    appended.append(f"{' ' * column}{render_scalar(key)}:")
                    appended.extend(render_block_value(value, column, self.style))
                continue
            if old[key] == value:
                continue
            found = children.get(str(key))
            if found is None:
                raise _Unsupported("key spelled differently in the text")
            key_node, value_node = found
            if _inline(value) is None and not _is_block(value_node):
                self.replace_with_block(key_node, value_node, value)
            else:
                self.diff(value_node, old[key], value)
        if appended:
            self.insert_lines(self.content_end(node), appended)

    def delete_entry(self, entry: tuple[yaml.Node, yaml.Node] | None) -> None:
        """Remove ``key: value`` lines; only where the key starts its own line."""
        if entry is None:
            raise _Unsupported("key spelled differently in the text")
        key_node, value_node = entry
        start = self.line_start(key_node.start_mark.index)
        if self.text[start : key_node.start_mark.index].strip():
            raise _Unsupported("key shares its line (a list item's first key)")
        self.edits.append((start, self.content_end(value_node), ""))

    def replace_with_block(self, key_node: yaml.Node, value_node: yaml.Node, value: Any) -> None:
        """``key: null`` or ``key: []`` becomes ``key:`` and a block collection below it."""
        if value_node.end_mark.line != key_node.start_mark.line:
            raise _Unsupported("multi-line flow value")
        colon = self.text.find(":", key_node.end_mark.index)
        if colon < 0 or colon > value_node.start_mark.index:
            raise _Unsupported("no colon after key")
        lines = render_block_value(value, key_node.start_mark.column, self.style)
        self.edits.append((colon + 1, value_node.end_mark.index, "\n" + "\n".join(lines)))

    def diff_sequence(self, node: yaml.Node, old: list[Any], new: list[Any]) -> None:
        if not isinstance(node, yaml.SequenceNode) or node.flow_style or not node.value:
            raise _Unsupported("flow or empty sequence")
        items: list[yaml.Node] = node.value
        dash_column = node.start_mark.column
        old_keys = [_item_key(v) for v in old]
        new_keys = [_item_key(v) for v in new]
        matcher = difflib.SequenceMatcher(a=old_keys, b=new_keys, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                for offset in range(i2 - i1):
                    before, after = old[i1 + offset], new[j1 + offset]
                    if _loses_first_key(before, after):
                        # The item's first key sits on its dash's line: replace the item.
                        self.delete_item(items, i1 + offset)
                        self.insert_lines(
                            self.item_start(items[i1 + offset]),
                            render_item(after, dash_column, self.style),
                        )
                    else:
                        self.diff(items[i1 + offset], before, after)
                continue
            if tag == "replace" and i2 - i1 == j2 - j1:
                pairs = list(zip(old[i1:i2], new[j1:j2], strict=True))
                if all(isinstance(a, dict) and isinstance(b, dict) for a, b in pairs):
                    for offset, (before, after) in enumerate(pairs):
                        self.diff(items[i1 + offset], before, after)
                    continue
            if tag in ("replace", "delete"):
                for index in range(i1, i2):
                    self.delete_item(items, index)
            if tag in ("replace", "insert"):
                lines = [
                    line
                    for value in new[j1:j2]
                    for line in render_item(value, dash_column, self.style)
                ]
                where = self.item_start(items[i1]) if i1 < len(items) else None
                if where is None:
                    where = self.content_end(items[-1])
                self.insert_lines(where, lines)

    def item_start(self, item: yaml.Node) -> int:
        """The start of the line that holds the item's dash (the dash must be on it)."""
        start = self.line_start(item.start_mark.index)
        if self.text[start : item.start_mark.index].strip() != "-":
            raise _Unsupported("item not on its dash's line")
        return start

    def delete_item(self, items: list[yaml.Node], index: int) -> None:
        start = self.item_start(items[index])
        end = (
            self.item_start(items[index + 1])
            if index + 1 < len(items)
            else self.content_end(items[index])
        )
        self.edits.append((start, end, ""))

    def apply(self) -> str:
        result = self.text
        # Applied back to front. At one position a deletion goes before an insertion, and
        # insertions keep the order they were made in.
        ordered = sorted(
            enumerate(self.edits), key=lambda e: (e[1][0], e[1][1], e[0]), reverse=True
        )
        for _, (start, end, replacement) in ordered:
            result = result[:start] + replacement + result[end:]
        return result


def _loses_first_key(before: Any, after: Any) -> bool:
    return (
        isinstance(before, dict)
        and isinstance(after, dict)
        and any(key not in after for key in list(before)[:1])
    )


def _item_key(value: Any) -> str:
    """What identifies a list item for alignment: its name, or the whole value."""
    if isinstance(value, dict) and "name" in value:
        return "name:" + json.dumps(value["name"], sort_keys=True, default=str)
    metadata = value.get("metadata") if isinstance(value, dict) else None
    if isinstance(metadata, dict) and "name" in metadata:
        identity = [value.get("kind"), metadata.get("namespace"), metadata["name"]]
        return "resource:" + json.dumps(identity, default=str)
    return json.dumps(value, sort_keys=True, default=str)


# An anchor (&a) or alias (*a) token, or a merge key. Text that merely looks like one (a
# glob such as "- *.log") only sends the document to the round-trip fallback.
_ALIAS_OR_ANCHOR = re.compile(r"(?:^|[\s\[{,])[&*][^\s,\[\]{}\"']|<<\s*:")


def _may_have_aliases(text: str) -> bool:
    """Aliases share one node between places, which text edits cannot express."""
    return _ALIAS_OR_ANCHOR.search(text) is not None


def rewrite(document: Document, new: Any) -> str:
    """The document's text changed to hold ``new``, as little as possible."""
    assert document.node is not None
    style = guess_style(document.node)
    if not _may_have_aliases(document.parsed_text):
        editor = _Editor(text=document.parsed_text, style=style, edits=[])
        try:
            editor.diff(document.node, document.data, new)
        except _Unsupported:
            pass
        else:
            stash = dict(document.stash)
            candidate = _stash(editor.apply(), stash, has_own_tokens=True)
            if _same(candidate, new, stash):
                return _keep_line_endings(document.text, _unstash(candidate, stash))
    candidate = _round_trip(document.text, document.data, new, style)
    if not _same(candidate, new):
        raise RewriteError(
            "the rewritten document does not parse back to the intended data; this is a bug "
            "in contrast generate, please report it with the input document"
        )
    return candidate


def _keep_line_endings(original: str, rewritten: str) -> str:
    """Inserted lines end in "\n"; in a file of CRLF lines, make them CRLF too."""
    crlf = original.count("\r\n")
    if crlf and crlf == original.count("\n"):
        return rewritten.replace("\r\n", "\n").replace("\n", "\r\n")
    return rewritten


def _same(text: str, new: Any, stash: dict[str, str] | None = None) -> bool:
    try:
        return bool(load_data(text, stash) == new)
    except yaml.YAMLError:
        return False


# ---------------------------------------------------------------------------------------
# The fallback: ruamel.yaml round trip, changing only the paths that differ.


def _round_trip(text: str, old: Any, new: Any, style: Style) -> str:
    lines = text.splitlines(keepends=True)
    prefix_end = 0
    for index, line in enumerate(lines):
        stripped = line.strip()
        if _SEPARATOR.fullmatch(line.rstrip("\r\n")) and stripped.split("#")[0].strip() == "---":
            prefix_end = index + 1
            break
        if stripped and not stripped.startswith("#") and not stripped.startswith("%"):
            break
    prefix = "".join(lines[:prefix_end])
    body = "".join(lines[prefix_end:])
    suffix = ""
    body_lines = body.splitlines(keepends=True)
    while body_lines and _DOCUMENT_END.fullmatch(body_lines[-1].rstrip("\r\n")):
        suffix = body_lines.pop() + suffix
    body = "".join(body_lines)
    loader = YAML(typ="rt")
    loader.preserve_quotes = True
    loader.width = 1 << 30
    loader.indent(
        mapping=style.indent,
        sequence=style.sequence_offset + 2,
        offset=style.sequence_offset,
    )
    tree = loader.load(body)
    tree = _merge(tree, old, new)
    out = io.StringIO()
    loader.dump(tree, out)
    return prefix + out.getvalue() + suffix


def _merge(tree: Any, old: Any, new: Any) -> Any:
    if isinstance(tree, CommentedMap) and isinstance(old, dict) and isinstance(new, dict):
        for key in [k for k in tree if k not in new]:
            del tree[key]
        for key, value in new.items():
            if key not in old:
                tree[key] = value
            elif old[key] != value:
                tree[key] = _merge(tree.get(key), old[key], value)
        return tree
    if isinstance(tree, CommentedSeq) and isinstance(old, list) and isinstance(new, list):
        matcher = difflib.SequenceMatcher(
            a=[_item_key(v) for v in old], b=[_item_key(v) for v in new], autojunk=False
        )
        merged: list[Any] = []
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
                merged.extend(
                    _merge(tree[i1 + k], old[i1 + k], new[j1 + k]) for k in range(i2 - i1)
                )
            elif tag in ("replace", "insert"):
                merged.extend(new[j1:j2])
        for index in range(len(tree) - 1, -1, -1):
            del tree[index]
        tree.extend(merged)
        return tree
    return new
