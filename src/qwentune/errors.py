"""The one exception type for mistakes a user can fix.

The CLI prints its message as a single line and exits with code 2; anything else
that escapes is a bug in qwentune and keeps its traceback.
"""

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem in the user's input: the message names the place and the fix."""
