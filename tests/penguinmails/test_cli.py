"""The `penguinmails` command as a newcomer meets it: its help and the README's command table."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main
from typer.testing import CliRunner

from penguinmails.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def test_boolean_options_show_as_flags_in_help() -> None:
    root = typer.main.get_command(app)
    for path in _command_paths(root):
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0 and "<bool>" not in result.output, (path, result.output)
    down = CliRunner().invoke(app, ["migrate", "--help"]).output
    assert re.search(r"^  --down\s+Downgrade", down, re.MULTILINE), down


def _command_paths(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if hasattr(command, "commands"):
            paths += _command_paths(command, (*prefix, name))
    return paths


def test_the_readme_command_table_lists_every_command() -> None:
    first_cells = [
        line.split("|")[1]
        for line in README.read_text().splitlines()
        if line.startswith("| `penguinmails ")
    ]
    root = typer.main.get_command(app)
    missing = []
    for name, command in root.commands.items():
        for sub in getattr(command, "commands", {None: None}):
            mentioned = (
                f"penguinmails {name}" in cell
                and (sub is None or re.search(rf"\b{sub}\b", cell.split(name, 1)[1]))
                for cell in first_cells
            )
            if not any(mentioned):
                missing.append(f"{name} {sub or ''}".strip())
    assert missing == []
