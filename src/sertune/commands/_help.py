"""How every `sertune` parser formats its help, and the helpers that keep building the parsers cheap.

Only the standard library is imported here: `sertune --help` and `--version` load nothing else.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

# Not `from typing import TYPE_CHECKING`: importing typing costs a good share of the start-up kept short here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

_SHOWN_DEFAULT = "sertune_shown_default"


class HelpFormatter(argparse.HelpFormatter):
    """Every command's help in one style.

    Descriptions are re-wrapped paragraph by paragraph (a paragraph with indented lines, such as a
    table, is kept as written), and every option shows its default once, as "(default: X)": unless
    the default is None (the help text then says what that means), the option is a plain on/off
    flag, or the help already names it.
    """

    def __init__(self, prog: str, **kwargs: Any) -> None:
        # argparse asks shutil for the width, and importing shutil (with its compression modules) is a
        # noticeable part of `sertune --help`'s start-up.
        kwargs.setdefault("width", _terminal_columns() - 2)
        super().__init__(prog, **kwargs)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in textwrap.dedent(text).strip().split("\n\n"):
            lines = paragraph.splitlines()
            if any(line[:1].isspace() for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                                subsequent_indent=indent))
        return "\n\n".join(paragraphs)

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        # argparse measures subcommand names without the indent they are printed with, so the longest
        # one would push its help onto a line of its own.
        subactions = getattr(action, "_get_subactions", list)()
        names = [len(self._format_action_invocation(sub)) for sub in subactions]
        if names and action.help is not argparse.SUPPRESS:
            longest = max(names) + self._current_indent + self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = shown_default(action)
        if default is None or "(default" in text:
            return text
        shown = _describe(default).replace("%", "%%")  # help strings are %-formatted next
        return f"{text} (default: {shown})".lstrip()


def shown_default(action: argparse.Action) -> Any:
    """The default that help shows for `action` (see `show_default`), or None where it shows none: a
    default of None or SUPPRESS, or a plain on/off flag (off unless given)."""
    default = getattr(action, _SHOWN_DEFAULT, action.default)
    if callable(default):
        default = default()
    on_off_flag = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
    return None if default is argparse.SUPPRESS or on_off_flag else default


def _terminal_columns() -> int:
    """What `shutil.get_terminal_size().columns` says: $COLUMNS, else the terminal's width, else 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 80


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose help uses `HelpFormatter`; the parsers of subcommands are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def show_default(action: argparse.Action, default: Any | Callable[[], Any]) -> argparse.Action:
    """Make help show `default` for `action`, whose parsed default is absent (SUPPRESS) until given.

    A callable is called only when help is printed, for defaults kept in modules too heavy to
    import while the parser is built.
    """
    setattr(action, _SHOWN_DEFAULT, default)
    return action


class LazyChoices:
    """Choices loaded on first use (parsing the command, or printing its help), not when the parser is built."""

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        self._load = load
        self._choices: tuple[str, ...] | None = None

    def _get(self) -> tuple[str, ...]:
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __contains__(self, item: object) -> bool:
        return item in self._get()
