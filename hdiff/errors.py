"""The one exception type that reaches users as a one-line message, and the exit every command shares."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Callable


class HdiffError(Exception):
    """Bad input or an unmet precondition; the CLI prints `hdiff: <message>` and exits 2."""


class HdiffDeprecation(FutureWarning):
    """A setting read under its old name; the CLI prints `hdiff: note: <message>` and goes on."""


class HdiffNotUnderstood(UserWarning):
    """A prompt names what the model cannot draw (a colour, shape or place its world does not have, a second
    object); the CLI prints `hdiff: warning: <message>` and goes on."""


def run_as_command(body: Callable[[], int | None]) -> int:
    """Run a command's body: its exit code (0 for None), or 2 with `hdiff: <message>` for an HdiffError, or 130
    with `hdiff: interrupted` for Ctrl-C."""
    def note(message, category, *args, **kwargs):
        if issubclass(category, HdiffDeprecation):
            print(f"hdiff: note: {message}", file=sys.stderr)
        elif issubclass(category, HdiffNotUnderstood):
            print(f"hdiff: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *args, **kwargs)

    try:
        with warnings.catch_warnings():
            shown, warnings.showwarning = warnings.showwarning, note
            return body() or 0
    except HdiffError as exc:
        print(f"hdiff: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hdiff: interrupted", file=sys.stderr)
        return 130


class CommandParser(argparse.ArgumentParser):
    """argparse whose errors are HdiffErrors: under `run_as_command` a bad flag is one `hdiff: ...` line, exit 2."""

    def error(self, message: str):
        command = self.prog.removeprefix("hdiff").strip()
        raise HdiffError(f"{command}: {message}" if command else message)
