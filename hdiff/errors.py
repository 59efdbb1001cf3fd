"""The one exception type that reaches users as a one-line message, and the exit every command shares."""

from __future__ import annotations

import argparse
import sys
from typing import Callable


class HdiffError(Exception):
    """Bad input or an unmet precondition; the CLI prints `hdiff: <message>` and exits 2."""


def run_as_command(body: Callable[[], int | None]) -> int:
    """Run a command's body: its exit code (0 for None), or 2 with `hdiff: <message>` for an HdiffError, or 130
    with `hdiff: interrupted` for Ctrl-C."""
    try:
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
