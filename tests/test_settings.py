from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from edl_api.settings import Settings


def test_env_lists_and_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDL_OPERATOR_KEYS", "op-key-aaaaaaaaaaaaaaaa, op-key-bbbbbbbbbbbbbbbb")
    monkeypatch.setenv("EDL_SSRF_ALLOW_CIDRS", "10.1.0.0/16,192.0.2.0/24")
    monkeypatch.setenv("EDL_AUTO_REFRESH_MINUTES", "0.05")
    monkeypatch.setenv("EDL_DATA_DIR", str(tmp_path))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [k.get_secret_value() for k in settings.operator_keys] == [
        "op-key-aaaaaaaaaaaaaaaa",
        "op-key-bbbbbbbbbbbbbbbb",
    ]
    assert settings.ssrf_allow_cidrs == ["10.1.0.0/16", "192.0.2.0/24"]
    assert settings.auto_refresh_minutes == 0.05
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'edl.db'}"
    assert "op-key" not in repr(settings)  # secrets never print


@pytest.mark.parametrize("bad", ["change-me", "short", "CHANGEME"])
def test_placeholder_or_short_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, api_key=bad)  # type: ignore[call-arg]


def test_env_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("EDL_MAX_CONCURRENT_RUNS_TOTAL=7\nEDL_LOG_DIR=/tmp/x\n")
    settings = Settings()
    assert settings.max_concurrent_runs_total == 7
    assert settings.log_dir == Path("/tmp/x")


def test_negative_refresh_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, auto_refresh_minutes=-1)  # type: ignore[call-arg]


def test_env_example_lists_every_setting() -> None:
    """.env.example is the settings reference: every field is there (set or commented out)
    and nothing there is a name the service would silently ignore."""
    text = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    listed = re.findall(r"^#? ?EDL_([A-Z0-9_]+)=", text, flags=re.M)
    assert len(listed) == len(set(listed)), "a setting is listed twice"
    assert {name.lower() for name in listed} == set(Settings.model_fields)
