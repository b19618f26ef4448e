"""Config documents: safe YAML loading with a line for every path, and problems that
name their line and dotted field (for the API and `edl-api check-config`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel

MAX_CONFIG_BYTES: int = 256 * 1024
MAX_NESTING = 32

# Path from the document root to a value: mapping keys are str, sequence indexes int.
ConfigPath = tuple[str | int, ...]
LineMap = Mapping[ConfigPath, int]


class ConfigProblem(BaseModel):
    """One problem in a config document."""

    line: int | None
    field: str
    message: str


class ConfigError(ValueError):
    """A config document is unusable; `problems` lists every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(_format_problem(p) for p in problems))


def _format_problem(problem: ConfigProblem) -> str:
    parts = []
    if problem.line is not None:
        parts.append(f"line {problem.line}")
    if problem.field:
        parts.append(problem.field)
    parts.append(problem.message)
    return ": ".join(parts)


# --------------------------------------------------------------------------- YAML


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 timestamps and base-60 numbers.

    `2001:10` must stay a string (it is an indicator, not 120610), and a date-looking
    value must not turn into a datetime that pydantic then rejects with a puzzling message.
    """


_REPLACED_TAGS = frozenset(
    {"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
)
_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)




def problem(line: int | None, field: str, message: str) -> ConfigProblem:
    return ConfigProblem(line=line, field=field, message=message)


def _scan_guard(text: str) -> None:
    """Reject tags, anchors, aliases and deep nesting before anything is composed."""
    depth = 0
    try:
        for token in yaml.scan(text, Loader=_ConfigLoader):
            line = token.start_mark.line + 1
            if isinstance(token, yaml.TagToken):
                raise ConfigError([problem(line, "", "YAML tags are not allowed")])
            if isinstance(token, yaml.AnchorToken | yaml.AliasToken):
                raise ConfigError([problem(line, "", "YAML anchors and aliases are not allowed")])
            if isinstance(
                token,
                yaml.BlockMappingStartToken
                | yaml.BlockSequenceStartToken
                | yaml.FlowMappingStartToken
                | yaml.FlowSequenceStartToken,
            ):
                depth += 1
                if depth > MAX_NESTING:
                    raise ConfigError([problem(line, "", "document is nested too deeply")])
            elif isinstance(
                token, yaml.BlockEndToken | yaml.FlowMappingEndToken | yaml.FlowSequenceEndToken
            ):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([problem(None, "", f"invalid YAML: {exc}")]) from None


def _yaml_problem(exc: yaml.MarkedYAMLError) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
    return problem(line, "", f"invalid YAML: {message or 'syntax error'}")


def _build(
    loader: _ConfigLoader,
    node: yaml.Node,
    path: ConfigPath,
    lines: dict[ConfigPath, int],
    problems: list[ConfigProblem],
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                problems.append(problem(key_line, dotted(path), "keys must be plain strings"))
                continue
            key = str(key_node.value)
            if key in mapping:
                problems.append(problem(key_line, dotted((*path, key)), "duplicate key"))
                continue
            lines[(*path, key)] = key_line
            mapping[key] = _build(loader, value_node, (*path, key), lines, problems)
        return mapping
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, index), lines, problems)
            for index, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def compose(text: str) -> tuple[dict[str, Any], dict[ConfigPath, int]]:
    if not isinstance(text, str):
        raise ConfigError([problem(None, "", "config must be text")])
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError([problem(None, "", f"config is larger than {MAX_CONFIG_BYTES} bytes")])
    _scan_guard(text)
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([problem(1, "", "config is empty; it must be a mapping")])
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError([problem(node.start_mark.line + 1, "", "config must be a mapping")])
        lines: dict[ConfigPath, int] = {}
        problems: list[ConfigProblem] = []
        doc = _build(loader, node, (), lines, problems)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([problem(None, "", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise ConfigError([problem(None, "", "document is nested too deeply")]) from None
    finally:
        loader.dispose()
    if problems:
        raise ConfigError(problems)
    return doc, lines


def load_config_document(text: str) -> dict[str, Any]:
    """Parse YAML safely into a plain dict (no tags, no aliases, size-capped, a mapping)."""
    return compose(text)[0]


def dump_config_document(doc: dict[str, Any]) -> str:
    """Serialise a plain config dict back to YAML, keeping key order."""
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)


# --------------------------------------------------------------------------- errors

# Error types whose last loc part names a key that is absent from the document.
_NAMED_ERRORS = ("missing", "extra_forbidden", "config")
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "is required",
}


def translate_error(doc: Any, error: Mapping[str, Any], line_map: LineMap | None) -> ConfigProblem:
    loc: list[str | int] = list(error.get("loc", ()))
    ctx = error.get("ctx") or {}
    if error.get("type") == "config" and ctx.get("field"):
        loc.extend(int(p) if p.isdigit() else p for p in str(ctx["field"]).split("."))
    # Walk the document to keep only the parts of loc that are real keys/indexes;
    # pydantic appends union/validator tags ("str", "function-after[...]") we must drop.
    path: list[str | int] = []
    node: Any = doc
    missing = False
    for part in loc:
        if isinstance(node, dict):
            if part in node:
                path.append(part)
                node = node[part]
                continue
            if isinstance(part, str) and not missing and error.get("type") in _NAMED_ERRORS:
                path.append(part)
                missing = True
            break
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
            continue
        break
    line = None
    if line_map is not None:
        probe = tuple(path)
        while probe and probe not in line_map:
            probe = probe[:-1]
        line = line_map.get(probe) if probe else line_map.get((), None)
    message = _MESSAGES.get(str(error.get("type")), str(error.get("msg", "invalid")))
    if error.get("type") == "config":
        message = str(ctx.get("message", message))
    message = message.removeprefix("Value error, ")
    return problem(line, dotted(tuple(path)), message)


def dotted(path: ConfigPath) -> str:
    return ".".join(str(part) for part in path)
