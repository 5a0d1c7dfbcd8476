"""The README is the front door: its two commands come first and its reference is current."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_readme_opens_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    assert (REPO / ".ci" / "run").read_text().strip().endswith("make test")


def test_config_reference_matches_the_models() -> None:
    rendered = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_reference.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- config-reference:begin -->\n", 1)[1].split(
        "\n<!-- config-reference:end -->", 1
    )[0]
    assert section.strip() == rendered.strip(), (
        "README's configuration reference is stale: run "
        ".venv/bin/python scripts/config_reference.py --write"
    )


def test_every_command_in_the_readme_exists() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "hems.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    text = (REPO / "README.md").read_text()
    for command in set(re.findall(r"\| `hems ([a-z-]+)", text)):
        assert command in help_text, command
