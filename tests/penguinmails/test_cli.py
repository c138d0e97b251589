"""The `penguinmails` command as a newcomer meets it: its help and the README's command table."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from penguinmails.cli import app
from penguinmails.settings import Settings
from tests.cli import run_cli

README = Path(__file__).resolve().parents[2] / "README.md"


async def test_boolean_options_show_as_flags_in_help(settings: Settings) -> None:
    for command, flag in [
        (["migrate"], "--down"),
        (["pipelines", "run"], "--full"),
        (["embedded", "start"], "--env"),
    ]:
        code, out, _ = await run_cli(settings, *command, "--help")
        line = next(line for line in out.splitlines() if line.strip().startswith(flag))
        assert code == 0 and "<bool>" not in out and line.split()[0] == flag, out


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
