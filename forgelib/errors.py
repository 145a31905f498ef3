"""User-facing errors.

A :class:`ForgeError` is raised for bad input a user can fix (a params key out of range, a
missing model directory, a tokenizer that does not fit a model). The CLI and the stage scripts
turn it into a one-line message on stderr and exit code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2


class ForgeError(Exception):
    """Bad input: the message says what was wrong, where (file, key) and what to do."""


def exit_on_error(main):
    """Decorator for stage scripts: a ForgeError becomes ``error: <message>`` and exit code 2."""
    import functools
    import sys

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except ForgeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None

    return wrapper
