"""Examples in the docs are real: every YAML block in docs/config.md validates."""

from __future__ import annotations

import re
from pathlib import Path

from edl_api.engine.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_config_reference_examples_validate() -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        config = load_config(block)
        assert config.sources


def test_readme_links_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(((?!https?://)[^)#]+)\)", readme):
        assert (ROOT / target).exists(), target
