"""Errors a user can fix. The CLI turns them into a one-paragraph message and exit code 2, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(Exception):
    """Bad input: an unknown name, a malformed value, a missing file. The message says what to do."""

    exit_code = 2


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> UsageError:
    """An error naming the valid choices and the closest match, as `git` does for a mistyped command."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UsageError(f"unknown {kind} '{name}'.{hint} Valid choices: {', '.join(valid) or 'none'}.")
