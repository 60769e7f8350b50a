"""The one user-error type, and how a harness shows it first.

An error that is the user's input, not a bug (a bad setting, an unknown model, a missing data
file, a device that is not there, an output directory in use, a run that cannot resume) is a
`UserError`. Each such class also keeps the built-in base a caller would catch (`ValueError`,
`FileNotFoundError`, `ImportError`), so `except ValueError` still works where it did.

Every front end turns a `UserError` into the same single line, `eager-eval: error: <message>`:
the CLI prints it and exits with code 2; lm-eval and Inspect own their command lines and print
a traceback for any exception that reaches them, so `log_user_errors` logs the line first and
the user reads it before the traceback (whose last line repeats it).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

PREFIX = "eager-eval: error: "


class UserError(Exception):
    """The user's input is wrong; the message names the value and the fix (no traceback)."""


def user_error_line(err: BaseException) -> str:
    """The one line every front end shows for a user error."""
    return f"{PREFIX}{err}"


@contextlib.contextmanager
def log_user_errors(logger: logging.Logger, seen: set[str] | None = None) -> Iterator[None]:
    """Log a user error as one `eager-eval: error: ...` line, then let it propagate.

    `seen`: the lines already logged (a harness that calls once per sample would otherwise
    repeat one bad setting for every sample); each is logged once."""
    try:
        yield
    except UserError as err:
        line = user_error_line(err)
        if seen is None or line not in seen:
            logger.error("%s", line)
            if seen is not None:
                seen.add(line)
        raise


__all__ = ["PREFIX", "UserError", "user_error_line", "log_user_errors"]
