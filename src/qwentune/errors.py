"""The one exception type for mistakes a user can fix, and the one "did you mean".

The CLI prints a UserError's message as a single line and exits with code 2; anything else
that escapes is a bug in qwentune and keeps its traceback.
"""

import difflib
from typing import Iterable

EXIT_USER_ERROR = 2
EXIT_BUG = 1


class UserError(Exception):
    """A problem in the user's input: the message names the place and the fix."""


def did_you_mean(name: str, choices: Iterable[str], prefix: str = "") -> str:
    """"; did you mean 'learning_rate'?" (with prefix "--": "; did you mean --learning_rate?") for the
    choice closest to a misspelled `name` (difflib, similarity >= 0.6), or "" when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {prefix}{close[0]}?" if prefix else f"; did you mean '{close[0]}'?"
