"""The pipeline config language (CONFIG.md): safe YAML loading and the pydantic model.

Errors always carry the YAML line and the dotted field path, so the API and
`edl-api check-config` can point at the offending key.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Annotated, Any, Literal

import jmespath
import jmespath.exceptions
import pydantic
import re2
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edl_api.engine.document import (
    ConfigError,
    LineMap,
    compose,
    problem,
    translate_error,
)
from edl_api.engine.limits import describe_bytes

SECTIONS: tuple[str, ...] = ("sources", "augment", "rules", "pipeline")
# The validation context key of the service's run byte budget (config writes only).
MAX_RUN_BYTES_CONTEXT = "max_run_bytes"

IndicatorType = Literal["ipv4", "ipv6", "cidr", "fqdn", "url"]
OutputType = Literal["ipv4", "ipv6", "cidr", "fqdn", "url", "ip"]
INDICATOR_TYPES: tuple[IndicatorType, ...] = ("ipv4", "ipv6", "cidr", "fqdn", "url")
OUTPUT_TYPES: tuple[OutputType, ...] = (*INDICATOR_TYPES, "ip")


_SECRET_REF = re.compile(r"\$\{([^}]*)\}")
# A profile secret's name, and how a header references it: `${secret:NAME}`.
SECRET_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
SECRET_PREFIX = "secret:"
# The old global form; refused now, `edl-api migrate-secrets` rewrites it.
LEGACY_SECRET_REF = re.compile(r"\$\{EDL_SECRET_([A-Z0-9_]+)\}")
MIGRATE_HINT = (
    "reference a secret of this profile as ${secret:%s} instead "
    "(PUT /profiles/{id}/secrets/%s, or `edl-api migrate-secrets` for existing configs)"
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
# Headers the fetcher owns: letting a config set them would desync framing or the Host check.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def re2_options() -> Any:
    """RE2 options for user-supplied patterns: errors are reported to the user, not logged."""
    options = re2.Options()
    options.log_errors = False
    return options


def _re2_detail(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


# --------------------------------------------------------------------------- model

Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,63}$")]
Confidence = Annotated[int, Field(ge=0, le=100)]
Percent = Annotated[int, Field(ge=0, le=100)]
# The default `min_valid_percent` applies from this many lines: a tiny list with one typo
# is still a list, a big page that is mostly not indicators is not.
DEFAULT_MIN_VALID_PERCENT = 10
MIN_VALID_LINES = 20


def _field_error(field: str, message: str) -> PydanticCustomError:
    """A model-level error that still names the exact field (see `_translate`)."""
    return PydanticCustomError("config", "{message}", {"field": field, "message": message})



def check_http_url(url: str, credentials_hint: str = "") -> urllib.parse.SplitResult:
    """An http(s) URL a service may fetch or POST to: one host, no credentials, a real port
    (sources and webhooks alike). Raises ValueError saying what is wrong."""
    if len(url) > 2048 or _CONTROL.search(url) or " " in url:
        raise ValueError("must be a URL without spaces or control characters")
    try:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parsed.scheme.lower() not in ("http", "https"):
        raise ValueError("must be http or https")
    if not parsed.hostname:
        raise ValueError("must name a host")
    if parsed.username is not None or parsed.password is not None:
        raise ValueError(f"must not contain credentials{credentials_hint}")
    if port == 0:
        raise ValueError("port must be 1-65535")
    return parsed

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# `${secret:NAME}` alone: a Basic password is always a profile secret, never a literal.
_SECRET_ONLY = re.compile(r"\$\{secret:([A-Z][A-Z0-9_]{0,63})\}")
# What a MISP restSearch `filters:` value may be (sent as the JSON request body).
FilterValue = str | int | bool | list[str]


class BasicAuth(_Strict):
    """HTTP Basic for a url source (TAXII servers commonly use it); the password is a
    `${secret:NAME}` of the profile, expanded at fetch time like a header."""

    username: str = Field(min_length=1, max_length=256, pattern=r"^[^:\x00-\x1f\x7f]+$")
    password: str

    @field_validator("password")
    @classmethod
    def _secret_password(cls, password: str) -> str:
        if not _SECRET_ONLY.fullmatch(password):
            # Never echo the value: it may be a literal credential.
            raise ValueError(
                "must be a profile secret reference, ${secret:NAME} "
                "(PUT /profiles/{id}/secrets/NAME first)"
            )
        return password

    @property
    def secret_name(self) -> str:
        match = _SECRET_ONLY.fullmatch(self.password)
        assert match is not None
        return match.group(1)


class SourceConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    url: str | None = None
    values: list[str] | None = None
    path: str | None = None
    format: Literal["text", "csv", "json", "regex", "stix", "taxii", "misp"] = "text"
    role: Literal["block", "allow"] = "block"
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    confidence: Confidence = 50
    optional: bool = False
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_bytes: int = Field(default=50 * 1024 * 1024, ge=1, le=2 * 1024 * 1024 * 1024)
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    basic_auth: BasicAuth | None = None
    types: list[IndicatorType] | None = None
    # Expiry: an entry older than this (by the date the source gives, else by when this
    # source first gave it) leaves the feeds at the next run, counted `expired`.
    max_age_days: int | None = Field(default=None, ge=1, le=3650)
    # Below this share of valid records the source fails (garbage, not a list). None: 10
    # once the source has at least MIN_VALID_LINES lines; 0 turns the check off.
    min_valid_percent: Percent | None = None
    # The webhook event `source_failing` fires once this source has failed this many full
    # runs in a row (`edl_api.alerts`).
    alert_after_failures: int = Field(default=3, ge=1, le=1000)
    # csv
    column: str | int | None = None
    header: bool | Literal["auto"] | None = None
    delimiter: str | None = None
    # csv: the column with each entry's date (for max_age_days)
    date_column: str | int | None = None
    # json
    query: str | None = None
    # json: JMESPath selecting the records; `query` and `date_query` then apply to each
    records: str | None = None
    date_query: str | None = None
    # regex
    pattern: str | None = None
    # taxii: the collection (id or title) under the API root `url`, objects per page
    collection: str | None = Field(default=None, min_length=1, max_length=256)
    page_size: int | None = Field(default=None, ge=1, le=10_000)
    # taxii, misp: `full` pulls everything each run instead of what is new since the last
    refetch: Literal["incremental", "full"] | None = None
    # misp: attributes with to_ids false are skipped unless this is true
    include_non_ids: bool | None = None
    # misp restSearch: extra body fields (type, tags, last, published, …)
    filters: dict[str, FilterValue] | None = Field(default=None, max_length=32)

    @field_validator("values", mode="before")
    @classmethod
    def _values_as_text(cls, value: Any) -> Any:
        # An inline value YAML typed as a number (e.g. 3232235777) is still an indicator token.
        if isinstance(value, list):
            return [
                str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for v in value
            ]
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        check_http_url(url, "; use headers with ${secret:NAME} instead")
        if "${" in url:
            raise ValueError("secrets (${...}) may only appear in headers")
        return url

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str) -> str:
        if not path or _CONTROL.search(path) or len(path) > 1024:
            raise ValueError("must be a non-empty relative path without control characters")
        if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
            raise ValueError("must be relative to the profile's source folder")
        if any(part == ".." for part in re.split(r"[/\\]", path)):
            raise ValueError("must not contain '..'")
        return path

    @field_validator("values")
    @classmethod
    def _check_values(cls, values: list[str]) -> list[str]:
        if len(values) > 100_000:
            raise ValueError("at most 100000 inline values")
        return values

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name} is set by the fetcher and cannot be configured")
            if _CONTROL.search(value.replace("\t", " ")) or len(value) > 8192:
                raise ValueError(f"header {name}: value must be one line of at most 8192 chars")
            for ref in _SECRET_REF.findall(value):
                legacy = LEGACY_SECRET_REF.fullmatch("${" + ref + "}")
                if legacy is not None:
                    raise ValueError(
                        f"header {name}: ${{{ref}}} is no longer supported; "
                        + MIGRATE_HINT % (legacy.group(1), legacy.group(1))
                    )
                if not (
                    ref.startswith(SECRET_PREFIX)
                    and SECRET_NAME.fullmatch(ref.removeprefix(SECRET_PREFIX))
                ):
                    # Never echo the value: it may hold a literal credential.
                    raise ValueError(
                        f"header {name}: only ${{secret:NAME}} references may be used "
                        "(NAME: A-Z, 0-9 and _, starting with a letter)"
                    )
            if "${" in _SECRET_REF.sub("", value):
                raise ValueError(f"header {name}: unterminated ${{...}} reference")
        return headers

    @field_validator("max_bytes")
    @classmethod
    def _within_run_budget(cls, max_bytes: int, info: ValidationInfo) -> int:
        # The service passes its EDL_RUN_MAX_BYTES as context when a config is written;
        # the default max_bytes is not checked (the budget caps it at run time anyway).
        budget = (info.context or {}).get(MAX_RUN_BYTES_CONTEXT)
        if budget is not None and max_bytes > budget:
            raise ValueError(
                f"must not exceed the run byte budget of {describe_bytes(budget)} "
                "(EDL_RUN_MAX_BYTES), shared by all sources of a run"
            )
        return max_bytes

    @field_validator("delimiter")
    @classmethod
    def _check_delimiter(cls, delimiter: str) -> str:
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise ValueError("must be a single character other than a quote or newline")
        return delimiter

    @field_validator("column", "date_column")
    @classmethod
    def _check_column(cls, column: str | int) -> str | int:
        if isinstance(column, int) and not 0 <= column <= 1000:
            raise ValueError("column index must be 0-1000")
        if isinstance(column, str) and not column.strip():
            raise ValueError("column name must not be empty")
        return column

    @field_validator("query", "records", "date_query")
    @classmethod
    def _check_query(cls, query: str) -> str:
        try:
            jmespath.compile(query)
        except jmespath.exceptions.JMESPathError as exc:
            raise ValueError(f"is not a valid JMESPath expression ({exc})") from None
        return query

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, pattern: str) -> str:
        try:
            compiled = re2.compile(pattern, options=re2_options())
        except re2.error as exc:
            raise ValueError(
                f"is not a valid RE2 regular expression ({_re2_detail(exc)})"
            ) from None
        if compiled.groups < 1 and "indicator" not in compiled.groupindex:
            raise ValueError("needs a capture group (group 1 or one named 'indicator')")
        return pattern

    @model_validator(mode="after")
    def _check_kind(self) -> SourceConfig:
        given = [key for key in ("url", "values", "path") if getattr(self, key) is not None]
        if not given:
            raise _field_error("", "needs exactly one of url, values or path")
        if len(given) > 1:
            raise _field_error(given[1], f"{given[1]} and {given[0]} are exclusive")
        if self.headers and self.url is None:
            raise _field_error("headers", "headers only apply to url sources")
        if self.basic_auth is not None and self.url is None:
            raise _field_error("basic_auth", "basic_auth only applies to url sources")
        owners: dict[str, tuple[str, ...]] = {
            "column": ("csv",),
            "header": ("csv",),
            "delimiter": ("csv",),
            "date_column": ("csv",),
            "query": ("json",),
            "records": ("json",),
            "date_query": ("json",),
            "pattern": ("regex",),
            "collection": ("taxii",),
            "page_size": ("taxii",),
            "refetch": ("taxii", "misp"),
            "include_non_ids": ("misp",),
            "filters": ("misp",),
        }
        for key, formats in owners.items():
            if getattr(self, key) is not None and self.format not in formats:
                raise _field_error(key, f"only applies to format {' or '.join(formats)}")
        if self.format in ("taxii", "misp") and self.url is None:
            raise _field_error(
                "format", f"format {self.format} needs url (a server, not a file or values)"
            )
        if self.format == "taxii" and self.collection is None:
            raise _field_error("collection", "format taxii needs collection (its id or title)")
        if self.date_query is not None and self.records is None:
            raise _field_error(
                "date_query", "date_query needs records (the JMESPath selecting each record; "
                "query and date_query then apply to each record)"
            )
        if self.header is False and isinstance(self.column, str):
            raise _field_error("column", "a column name needs a header (header: true or auto)")
        if self.format == "regex" and self.pattern is None:
            raise _field_error("pattern", "format regex needs a pattern")
        return self

    # Effective values for the format-specific options.
    @property
    def csv_column(self) -> str | int:
        return 0 if self.column is None else self.column

    @property
    def csv_header(self) -> bool | Literal["auto"]:
        return "auto" if self.header is None else self.header

    @property
    def csv_delimiter(self) -> str:
        return "," if self.delimiter is None else self.delimiter

    def valid_floor(self, lines: int) -> int:
        """The `min_valid_percent` in force for a body of `lines` lines (0: no check)."""
        if self.min_valid_percent is not None:
            return self.min_valid_percent
        return DEFAULT_MIN_VALID_PERCENT if lines >= MIN_VALID_LINES else 0


class TagRule(_Strict):
    types: list[IndicatorType] | None = None  # None: every type
    add: list[Tag] = Field(min_length=1, max_length=32)


class AugmentConfig(_Strict):
    url_hosts: bool = False
    wildcard_parent: bool = False
    tags: list[TagRule] = Field(default_factory=list, max_length=100)


class MinPrefix(_Strict):
    ipv4: int = Field(default=8, ge=0, le=32)
    ipv6: int = Field(default=32, ge=0, le=128)


class RulesConfig(_Strict):
    allow: list[str] = Field(default_factory=list, max_length=100_000)
    exclude_reserved: bool = True
    min_prefix: MinPrefix = Field(default_factory=MinPrefix)
    # Which Public Suffix List sections count: a public suffix or a wildcard of one is never
    # published ("all" includes the private section: `s3.amazonaws.com` covers every bucket).
    # None: "all", or "off" when the older `drop_tld_wildcards` is false (its alias).
    public_suffix: Literal["all", "icann", "off"] | None = None
    drop_tld_wildcards: bool = True
    exclude_regex: list[str] = Field(default_factory=list, max_length=100)
    include_types: list[IndicatorType] = Field(default_factory=lambda: list(INDICATOR_TYPES))
    min_confidence: Confidence = 0

    @field_validator("allow", mode="before")
    @classmethod
    def _allow_as_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [
                str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for v in value
            ]
        return value

    @field_validator("allow")
    @classmethod
    def _check_allow(cls, allow: list[str]) -> list[str]:
        from edl_api.engine.indicators import classify

        for index, entry in enumerate(allow):
            result = classify(entry)
            if result.indicator_type is None:
                raise _field_error(
                    str(index), f"{entry[:80]!r} is not an IP, network, range, domain or URL"
                )
        return allow

    @field_validator("exclude_regex")
    @classmethod
    def _check_exclude_regex(cls, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            try:
                re2.compile(pattern, options=re2_options())
            except re2.error as exc:
                raise _field_error(
                    str(index), f"is not a valid RE2 regular expression ({_re2_detail(exc)})"
                ) from None
        return patterns

    @model_validator(mode="after")
    def _one_public_suffix_switch(self) -> RulesConfig:
        if not self.drop_tld_wildcards and self.public_suffix not in (None, "off"):
            raise _field_error(
                "public_suffix",
                f"{self.public_suffix} contradicts drop_tld_wildcards: false (its older name); "
                "set only public_suffix",
            )
        return self

    @property
    def public_suffix_sections(self) -> Literal["all", "icann", "off"]:
        """The `public_suffix` in force, `drop_tld_wildcards` taken into account."""
        if self.public_suffix is not None:
            return self.public_suffix
        return "all" if self.drop_tld_wildcards else "off"


class GuardConfig(_Strict):
    max_shrink_percent: float = Field(default=50, ge=0, le=100)
    allow_empty: bool = False


class PipelineOptions(_Strict):
    outputs: list[OutputType] = Field(default_factory=lambda: list(OUTPUT_TYPES), min_length=1)
    aggregate: bool = True
    retain_missing_days: int = Field(default=0, ge=0, le=365)
    max_entries: dict[OutputType, Annotated[int, Field(gt=0)]] = Field(default_factory=dict)
    guard: GuardConfig = Field(default_factory=GuardConfig)

    @field_validator("outputs")
    @classmethod
    def _unique_outputs(cls, outputs: list[str]) -> list[str]:
        for index, output in enumerate(outputs):
            if output in outputs[:index]:
                raise _field_error(str(index), f"{output} is listed twice")
        return outputs


class PipelineConfig(_Strict):
    sources: list[SourceConfig] = Field(min_length=1, max_length=200)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    pipeline: PipelineOptions = Field(default_factory=PipelineOptions)

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineConfig:
        seen: set[str] = set()
        for index, source in enumerate(self.sources):
            if source.name in seen:
                raise _field_error(
                    f"sources.{index}.name", f"duplicate source name {source.name!r}"
                )
            seen.add(source.name)
        return self

    def secret_references(self) -> dict[str, list[str]]:
        """Each `${secret:NAME}` the headers use → the fields that use it (in order)."""
        refs: dict[str, list[str]] = {}
        for index, source in enumerate(self.sources):
            for header, value in source.headers.items():
                for ref in _SECRET_REF.findall(value):
                    field = f"sources.{index}.headers.{header}"
                    refs.setdefault(ref.removeprefix(SECRET_PREFIX), []).append(field)
            if source.basic_auth is not None:
                refs.setdefault(source.basic_auth.secret_name, []).append(
                    f"sources.{index}.basic_auth.password"
                )
        return refs


def validate_config_document(
    doc: dict[str, Any], line_map: LineMap | None = None, *, max_run_bytes: int | None = None
) -> PipelineConfig:
    """Validate a plain config dict; every problem names its field (and line when known).
    `max_run_bytes`: the service's run byte budget, which no source's max_bytes may exceed."""
    if not isinstance(doc, dict):
        raise ConfigError([problem(None, "", "config must be a mapping")])
    try:
        return PipelineConfig.model_validate(doc, context={MAX_RUN_BYTES_CONTEXT: max_run_bytes})
    except pydantic.ValidationError as exc:
        problems = [translate_error(doc, err, line_map) for err in exc.errors()]
        problems.sort(key=lambda p: (p.line is None, p.line or 0, p.field))
        raise ConfigError(problems) from None


def load_config(text: str, *, max_run_bytes: int | None = None) -> PipelineConfig:
    """Parse and validate a YAML config; problems carry YAML line numbers."""
    doc, lines = compose(text)
    return validate_config_document(doc, lines, max_run_bytes=max_run_bytes)
