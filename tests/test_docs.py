"""The docs say what the code does: config examples validate, the README lists every
command and link, docs/architecture.md names every module."""

from __future__ import annotations

import re
from pathlib import Path

from edl_api.cli import build_parser
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


def test_readme_lists_every_command() -> None:
    """The README's Commands block names every `edl-api` subcommand the CLI accepts."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```")[1]
    listed = set(re.findall(r"^edl-api ([a-z-]+)", block, flags=re.M))
    # The usage line names the subcommands: "edl-api [-h] {serve,worker,...} ...".
    choices = re.search(r"\{([a-z,-]+)\}", build_parser().format_usage())
    assert choices is not None
    assert listed == set(choices.group(1).split(","))


def test_architecture_names_every_module() -> None:
    """docs/architecture.md lists every module of every package (a new one needs a line)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "edl_api"
    missing = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "__init__.py" and not path.read_text().strip():
            continue  # an empty package marker has no job
        folder = path.parent.relative_to(package).as_posix()
        heading = "## Top level" if folder == "." else f"## `{folder}/`"
        section = text.split(heading, 1)[1].split("\n## ", 1)[0] if heading in text else ""
        if f"| `{path.name}` |" not in section:
            missing.append(path.relative_to(package).as_posix())
    assert missing == []
