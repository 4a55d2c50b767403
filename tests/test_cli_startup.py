"""The command line's parsers: built without heavy imports, and one help style for every command.

Timing is left to benchmarks/cli_startup.py; these tests check what makes start-up fast (which
modules get imported) and what help shows.
"""

from __future__ import annotations

import argparse
import pkgutil
import re
import subprocess
import sys

import pytest

from sertune import commands
from sertune.cli import build_parser
from sertune.commands import SUMMARIES
from sertune.commands._help import HelpFormatter, shown_default

HEAVY = ("torch", "transformers", "sklearn", "matplotlib")


def test_parsers_and_help_import_no_heavy_library() -> None:
    code = f"""
import contextlib, io, sys
from sertune.cli import build_parser, main
from sertune.commands import SUMMARIES

build_parser()
for argv in [["--help"], ["--version"], ["corpus", "info", "--help"], *([name, "--help"] for name in SUMMARIES)]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(argv)
print([name for name in {HEAVY!r} if name in sys.modules])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_every_command_module_is_listed() -> None:
    modules = {m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")}
    assert modules == set(SUMMARIES)


def _command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser, nested ones (`corpus info`) included, by their words."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix}{name}"] = sub
                    walk(f"{prefix}{name} ", sub)

    walk("", build_parser())
    return found


COMMANDS = _command_parsers()


def test_every_command_has_a_one_line_help_and_a_description() -> None:
    top = build_parser().format_help()
    for name, summary in SUMMARIES.items():
        assert re.search(rf"^    {name} +{re.escape(summary.split()[0])}", top, re.MULTILINE), name
    for words, parser in COMMANDS.items():
        assert parser.description and parser.description.startswith(f"`sertune {words.split()[0]}"), words


@pytest.mark.parametrize("words", sorted(COMMANDS))
def test_every_option_has_help_and_shows_its_default_once(words: str) -> None:
    parser = COMMANDS[words]
    formatter = HelpFormatter(prog="sertune")
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"sertune {words}: {action.option_strings or action.dest} has no help"
        text = formatter._expand_help(action)
        expected = (1,) if shown_default(action) is not None else (0, 1)  # None: the help may say what it means
        assert text.count("(default") in expected, f"sertune {words}: {text}"
    assert "(default None)" not in parser.format_help() and "(default: None)" not in parser.format_help()


def test_train_help_shows_the_tuning_and_training_defaults() -> None:
    text = " ".join(COMMANDS["train"].format_help().split())
    for shown in ("LoRA rank (default: 16)", "LoRA alpha (scaling alpha/rank) (default: 16.0)",
                  "dropout on the LoRA branch's input (default: 0.0)", "bottleneck size of the adapters (default: 128)",
                  "factor on the adapter's output (default: 0.1)", "dropout inside the adapter (default: 0.1)",
                  "prompt vectors per layer (default: 5)", "Adam betas (default: 0.9 0.98)",
                  "training epochs per fold (default: 30)", "inverse class frequency (default: yes)",
                  "feature cache folder (default: ~/.cache/sertune/features)"):
        assert shown in text, shown
    args = COMMANDS["train"].parse_args(["--out", "run"])
    assert "lora_rank" not in args and "epochs" not in args  # absent unless given: --config keeps its say


def test_long_descriptions_keep_their_paragraphs_and_fit_the_terminal(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    help_text = COMMANDS["export"].format_help()
    assert "\n\nRUN_DIR is a run" in help_text
    assert max(len(line) for line in help_text.splitlines()) <= 78
