"""PATCH by section on the stored YAML text, keeping the operator's comments and layout.

Only the lines of the sections a PATCH names change: every other line (comments between
sections, the header, untouched sections) stays byte for byte, so a line number in the
stored text still points at the same line afterwards. Inside a changed section the
`ruamel.yaml` round-trip keeps the comments of what did not change (a list item matched by
its `name`, a key whose value stayed). The result is checked against the plain document the
PATCH means; if the splice ever reads back differently, the whole document is re-emitted
(ruamel first, then plain YAML) rather than storing something that means another thing.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import SingleQuotedScalarString

from edl_api.engine import config as engine_config
from edl_api.engine import document as engine_document

# A top-level block key at column 0 (what a section's first line looks like).
_TOP_KEY = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*:(?:\s|$)")
_SEQ_INDENT = re.compile(r"^(?P<dash> *)- ")
# PyYAML (YAML 1.1) reads `yes`, `on`, `2001:10` as non-strings where ruamel (YAML 1.2)
# emits them plain: the engine loads with PyYAML, so such strings are written quoted.
_RESOLVER = pyyaml.SafeLoader("")


def _plain(value: Any) -> Any:
    """A JSON value ready for ruamel, strings that YAML 1.1 would misread quoted."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        tag = _RESOLVER.resolve(pyyaml.ScalarNode, value, (True, False))
        if tag != "tag:yaml.org,2002:str":
            return SingleQuotedScalarString(value)
    return value


def _same_scalar(old: Any, new: Any) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool) and bool(old) == new
    if isinstance(old, str) or isinstance(new, str):
        return isinstance(old, str) and isinstance(new, str) and str(old) == new
    if old is None or new is None:
        return old is None and new is None
    if isinstance(old, int | float) and isinstance(new, int | float):
        return isinstance(old, float) == isinstance(new, float) and old == new
    return False


def _named(items: list[Any]) -> dict[str, int] | None:
    """`name` -> index when every item is a mapping with a distinct string name."""
    names: dict[str, int] = {}
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or name in names:
            return None
        names[name] = index
    return names


def _merge(old: Any, new: Any) -> Any:
    """`new` in place of `old`, reusing the parts of `old` (and their comments) that stay."""
    if isinstance(old, CommentedMap) and isinstance(new, Mapping):
        for key in [k for k in old if k not in new]:
            del old[key]
        for key, value in new.items():
            old[key] = _merge(old[key], value) if key in old else _plain(value)
        return old
    if isinstance(old, CommentedSeq) and isinstance(new, list):
        by_name, wanted = _named(list(old)), _named(new)
        if by_name is not None and wanted is not None:
            # Sources are matched by name: removing the first must not hand its comments on.
            olds = list(old)
            merged = [
                _merge(olds[by_name[name]], item) if name in by_name else _plain(item)
                for name, item in zip(wanted, new, strict=True)
            ]
            if [id(x) for x in merged[: len(olds)]] == [id(x) for x in olds[: len(merged)]]:
                while len(old) > len(merged):
                    old.pop()
                old.extend(merged[len(old):])
                return old
            return merged
        for index in range(min(len(old), len(new))):
            old[index] = _merge(old[index], new[index])
        while len(old) > len(new):
            old.pop()
        old.extend(_plain(v) for v in new[len(old):])
        return old
    if not isinstance(old, CommentedMap | CommentedSeq) and _same_scalar(old, new):
        return old  # keeps its quoting style
    return _plain(new)


def _round_trip(text: str) -> YAML:
    """A ruamel emitter with the stored text's own indentation (2 and `  - ` are common)."""
    mapping, sequence, offset = 2, 2, 0
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if stripped.startswith("- "):
            dash = _SEQ_INDENT.match(line)
            if dash is not None and indent > 0:
                offset = len(dash.group("dash"))
                sequence = offset + 2
                break
    previous_top = False  # the last content line was a top-level `key:` opening a block
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if previous_top and indent and not stripped.startswith("- "):
            mapping = indent
            break
        previous_top = indent == 0 and stripped.rstrip().endswith(":")
    rt = YAML(typ="rt")
    rt.indent(mapping=mapping, sequence=max(sequence, offset + 2), offset=offset)
    rt.width = 4096  # never fold a long URL or pattern onto two lines
    rt.preserve_quotes = True
    return rt


def _dump(rt: YAML, doc: Any) -> str:
    out = io.StringIO()
    rt.dump(doc, out)
    return out.getvalue()


def _section_ranges(lines: list[str]) -> dict[str, tuple[int, int]] | None:
    """Each top-level key -> [first, end) lines, trailing blank and comment lines left out
    (they belong to the gap before the next section). None: not a plain block mapping."""
    starts: list[tuple[str, int]] = []
    for index, line in enumerate(lines):
        if not line.strip() or line.startswith(("#", " ", "\t")):
            continue
        match = _TOP_KEY.match(line)
        if match is None:
            if line.startswith(("---", "...")) and not starts:
                continue
            return None  # flow style, a quoted key, a second document: no splicing
        starts.append((match.group("key"), index))
    ranges: dict[str, tuple[int, int]] = {}
    for position, (key, first) in enumerate(starts):
        end = starts[position + 1][1] if position + 1 < len(starts) else len(lines)
        while end > first + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip()
                                   .startswith("#")):
            end -= 1
        if key in ranges:
            return None
        ranges[key] = (first, end)
    return ranges


def _splice(stored: str, dumped: str, names: list[str]) -> str | None:
    old_lines = stored.splitlines(keepends=True)
    new_lines = dumped.splitlines(keepends=True)
    old, new = _section_ranges(old_lines), _section_ranges(new_lines)
    if old is None or new is None:
        return None
    if old_lines and not old_lines[-1].endswith("\n"):
        old_lines[-1] += "\n"
    edits: list[tuple[int, int, list[str]]] = []
    appended: list[str] = []
    for name in names:
        replacement = new_lines[new[name][0]:new[name][1]] if name in new else []
        if name in old:
            edits.append((*old[name], replacement))
        else:
            appended += replacement
    for first, end, replacement in sorted(edits, reverse=True):
        old_lines[first:end] = replacement
    return "".join(old_lines + appended)


def patch_sections(stored: str, sections: dict[str, Any]) -> str:
    """`stored` with each named section replaced (None: removed). Raises ConfigError."""
    expected = engine_document.load_config_document(stored)
    for name, value in sections.items():
        if value is None:
            expected.pop(name, None)
        else:
            expected[name] = value
    rt = _round_trip(stored)
    try:
        doc = rt.load(stored)
    except YAMLError as exc:  # the stored text passed the engine's loader; be safe anyway
        raise engine_document.ConfigError(
            [engine_document.problem(None, "", f"invalid YAML: {exc}")]
        ) from None
    if not isinstance(doc, CommentedMap):
        raise engine_document.ConfigError(
            [engine_document.problem(1, "", "config must be a mapping")]
        )
    for name, value in sections.items():
        if value is None:
            doc.pop(name, None)
        elif name in doc:
            doc[name] = _merge(doc[name], value)
        else:
            doc[name] = _plain(value)
    dumped = _dump(rt, doc)
    changed = [name for name in sections if name in engine_config.SECTIONS]
    for candidate in (_splice(stored, dumped, changed), dumped):
        if candidate is not None and _reads_as(candidate, expected):
            return candidate
    return engine_document.dump_config_document(expected)


def _reads_as(text: str, expected: dict[str, Any]) -> bool:
    try:
        return engine_document.load_config_document(text) == expected
    except engine_document.ConfigError:
        return False
