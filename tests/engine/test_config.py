"""Config language: safe YAML, the full model, and line/field-precise errors."""

from __future__ import annotations

import pytest

from edl_api.engine.config import (
    SECTIONS,
    PipelineConfig,
    load_config,
    validate_config_document,
)
from edl_api.engine.document import (
    MAX_CONFIG_BYTES,
    ConfigError,
    dump_config_document,
    load_config_document,
)

FULL = """\
sources:
  - name: feodo
    url: https://feodotracker.abuse.ch/downloads/ipblocklist.txt
    format: text
    role: block
    tags: [c2]
    confidence: 80
    optional: false
    timeout_seconds: 30
    max_bytes: 52428800
    headers: {Authorization: "Bearer ${secret:FEODO}"}
  - name: threatfox
    url: https://example.org/threatfox.csv
    format: csv
    column: ioc_value
    header: auto
    delimiter: ","
    types: [fqdn, url, ipv4]
  - name: aws
    url: https://ip-ranges.amazonaws.com/ip-ranges.json
    format: json
    query: "prefixes[*].ip_prefix"
    role: allow
  - name: tor-exits
    url: https://check.torproject.org/exit-addresses
    format: regex
    pattern: '^ExitAddress (\\S+)'
  - name: ours
    values: [203.0.113.7, "*.bad.example", "http://evil.example/a?b=c"]
  - name: local-file
    path: lists/extra.txt

augment:
  url_hosts: true
  wildcard_parent: true
  tags: [{types: [url], add: [phishing]}]

rules:
  allow: [10.0.0.0/8, example.org, "*.corp.example"]
  exclude_reserved: true
  min_prefix: {ipv4: 8, ipv6: 32}
  drop_tld_wildcards: true
  exclude_regex: ['\\.gov$']
  include_types: [ipv4, ipv6, cidr, fqdn, url]
  min_confidence: 0

pipeline:
  outputs: [ipv4, ipv6, cidr, fqdn, url, ip]
  aggregate: true
  retain_missing_days: 0
  max_entries: {ip: 150000}
  guard:
    max_shrink_percent: 50
    allow_empty: false
"""


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(text)
    return [(p.line, p.field, p.message) for p in info.value.problems]


def test_full_example_from_config_md_loads() -> None:
    config = load_config(FULL)
    assert isinstance(config, PipelineConfig)
    assert [s.name for s in config.sources] == [
        "feodo",
        "threatfox",
        "aws",
        "tor-exits",
        "ours",
        "local-file",
    ]
    assert config.sources[0].headers == {"Authorization": "Bearer ${secret:FEODO}"}
    assert config.secret_references() == {"FEODO": ["sources.0.headers.Authorization"]}
    assert config.sources[1].csv_column == "ioc_value"
    assert config.sources[4].values == ["203.0.113.7", "*.bad.example", "http://evil.example/a?b=c"]
    assert config.pipeline.max_entries == {"ip": 150000}
    assert SECTIONS == ("sources", "augment", "rules", "pipeline")


def test_defaults() -> None:
    config = load_config("sources:\n  - name: a\n    values: [1.2.3.4]\n")
    source = config.sources[0]
    assert (source.format, source.role, source.confidence, source.optional) == (
        "text",
        "block",
        50,
        False,
    )
    assert config.rules.exclude_reserved is True
    assert (config.rules.min_prefix.ipv4, config.rules.min_prefix.ipv6) == (8, 32)
    assert config.pipeline.outputs == ["ipv4", "ipv6", "cidr", "fqdn", "url", "ip"]
    assert config.pipeline.aggregate is True
    assert config.pipeline.guard.max_shrink_percent == 50
    assert config.pipeline.guard.allow_empty is False


def test_yaml_numbers_do_not_eat_indicators() -> None:
    # YAML 1.1 would read 10:20 as 620 (base 60) and dates as datetimes.
    config = load_config("sources:\n  - name: a\n    values: [10:20, 2024-01-01, 3232235777]\n")
    assert config.sources[0].values == ["10:20", "2024-01-01", "3232235777"]


def test_error_names_line_and_field() -> None:
    text = (
        "sources:\n  - name: a\n    values: [x.example]\n  - name: b\n    url: ftp://x.example/\n"
    )
    assert problems(text) == [(5, "sources.1.url", "must be http or https")]
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert str(info.value) == "line 5: sources.1.url: must be http or https"


def test_unknown_keys_and_missing_fields() -> None:
    text = "sources:\n  - name: a\n    values: [x.example]\n    colour: red\nrules:\n  bogus: 1\n"
    assert problems(text) == [
        (4, "sources.0.colour", "unknown key"),
        (6, "rules.bogus", "unknown key"),
    ]
    assert problems("sources:\n  - values: [x.example]\n") == [(2, "sources.0.name", "is required")]
    assert problems("augment: {}\n") == [(1, "sources", "is required")]


@pytest.mark.parametrize(
    ("snippet", "field", "fragment"),
    [
        ("url: https://a.example/\n    values: [x.example]", "sources.0.values", "exclusive"),
        ("format: csv", "sources.0", "exactly one of"),
        ("values: [a.example]\n    column: 2", "sources.0.column", "only applies to format csv"),
        ("values: [a.example]\n    query: 'a'", "sources.0.query", "only applies to format json"),
        ("values: [a.example]\n    format: json\n    query: 'a[['", "sources.0.query", "JMESPath"),
        ("values: [a.example]\n    format: regex", "sources.0.pattern", "needs a pattern"),
        ("values: [a.example]\n    format: regex\n    pattern: 'x'", "sources.0.pattern", "group"),
        (
            "values: [a.example]\n    format: regex\n    pattern: '(a)\\1'",
            "sources.0.pattern",
            "RE2",
        ),
        ("values: [a.example]\n    confidence: 101", "sources.0.confidence", "100"),
        ("values: [a.example]\n    types: [ip]", "sources.0.types.0", "Input should be"),
        ("url: https://u:p@a.example/", "sources.0.url", "credentials"),
        ("url: 'https://a.example/${secret:X}'", "sources.0.url", "only appear in headers"),
        ("path: ../etc/passwd", "sources.0.path", ".."),
        ("path: /etc/passwd", "sources.0.path", "relative"),
        (
            "url: https://a.example/\n    headers: {X-Key: '${HOME}'}",
            "sources.0.headers",
            "only ${secret:NAME} references",
        ),
        (
            "url: https://a.example/\n    headers: {X-Key: '${secret:lower}'}",
            "sources.0.headers",
            "only ${secret:NAME} references",
        ),
        (  # the old global form says how to migrate
            "url: https://a.example/\n    headers: {X-Key: 'k ${EDL_SECRET_ACME}'}",
            "sources.0.headers",
            "no longer supported; reference a secret of this profile as ${secret:ACME}",
        ),
        ("values: [a.example]\n    headers: {X: y}", "sources.0.headers", "only apply to url"),
        (
            "values: [a.example]\n    format: csv\n    delimiter: ';;'",
            "sources.0.delimiter",
            "single",
        ),
    ],
)
def test_source_rules(snippet: str, field: str, fragment: str) -> None:
    found = problems(f"sources:\n  - name: s\n    {snippet}\n")
    assert len(found) == 1, found
    line, got_field, message = found[0]
    assert got_field == field
    assert fragment in message
    assert line is not None


def test_secret_value_is_never_echoed() -> None:
    text = (
        "sources:\n  - name: s\n    url: https://a.example/\n    headers: {X: 'hunter2 ${OOPS}'}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("section", "field", "fragment"),
    [
        ("rules:\n  min_prefix: {ipv4: 33}", "rules.min_prefix.ipv4", "32"),
        ("rules:\n  min_prefix: {ipv6: 129}", "rules.min_prefix.ipv6", "128"),
        ("rules:\n  exclude_regex: ['ok', '(a+)+\\1']", "rules.exclude_regex.1", "RE2"),
        ("rules:\n  allow: [10.0.0.0/8, 'not a thing!']", "rules.allow.1", "not an IP"),
        ("rules:\n  include_types: [ipv4, ip]", "rules.include_types.1", "Input should be"),
        ("pipeline:\n  outputs: [ip, bogus]", "pipeline.outputs.1", "Input should be"),
        ("pipeline:\n  outputs: [ip, ip]", "pipeline.outputs.1", "twice"),
        ("pipeline:\n  outputs: []", "pipeline.outputs", "at least 1"),
        ("pipeline:\n  max_entries: {ip: 0}", "pipeline.max_entries.ip", "greater than 0"),
        ("pipeline:\n  max_entries: {dns: 5}", "pipeline.max_entries.dns", "Input should be"),
        (
            "pipeline:\n  guard: {max_shrink_percent: 150}",
            "pipeline.guard.max_shrink_percent",
            "100",
        ),
        ("augment:\n  tags: [{types: [url]}]", "augment.tags.0.add", "is required"),
    ],
)
def test_section_rules(section: str, field: str, fragment: str) -> None:
    found = problems(f"sources:\n  - name: s\n    values: [a.example]\n{section}\n")
    assert len(found) == 1, found
    assert found[0][1] == field
    assert fragment in found[0][2]
    assert found[0][0] is not None
    assert found[0][0] >= 4


def test_duplicate_source_names() -> None:
    text = "sources:\n  - name: s\n    values: [a.example]\n  - name: s\n    values: [b.example]\n"
    assert problems(text) == [(4, "sources.1.name", "duplicate source name 's'")]


def test_several_problems_are_all_reported_in_line_order() -> None:
    text = (
        "sources:\n  - name: s\n    url: gopher://x/\n    confidence: -1\n"
        "pipeline:\n  aggregate: maybe\n"
    )
    assert [(line, field) for line, field, _ in problems(text)] == [
        (3, "sources.0.url"),
        (4, "sources.0.confidence"),
        (6, "pipeline.aggregate"),
    ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &x [1]\nb: *x\n", "anchors and aliases"),
        ("sources: !!python/object:os.system {}\n", "tags"),
        ("sources: !custom x\n", "tags"),
        ("- a\n- b\n", "must be a mapping"),
        ("", "empty"),
        ("a: [\n", "invalid YAML"),
        ("a: 1\na: 2\n", "duplicate key"),
        ("a: 1\n---\nb: 2\n", "invalid YAML"),
        ("a: " + "[" * 100 + "]" * 100 + "\n", "nested too deeply"),
    ],
)
def test_unsafe_or_malformed_yaml(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_document(text)
    assert fragment in str(info.value)


def test_billion_laughs_rejected_not_expanded() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    with pytest.raises(ConfigError) as info:
        load_config("\n".join(lines))
    assert info.value.problems[0].line == 1


def test_size_cap() -> None:
    text = "sources:\n  - name: s\n    values: [" + "a.example," * (MAX_CONFIG_BYTES // 10) + "]\n"
    with pytest.raises(ConfigError, match="larger than"):
        load_config(text)


def test_roundtrip_dump_and_validate_without_lines() -> None:
    doc = load_config_document(FULL)
    again = load_config_document(dump_config_document(doc))
    assert again == doc
    assert validate_config_document(doc) == load_config(FULL)
    doc["sources"][0]["confidence"] = 500
    with pytest.raises(ConfigError) as info:
        validate_config_document(doc)
    assert info.value.problems[0].line is None
    assert info.value.problems[0].field == "sources.0.confidence"
