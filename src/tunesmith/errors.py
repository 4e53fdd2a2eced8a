"""The one exception a user's mistake becomes: the CLI prints it as a single line and exits 2."""


class UserError(Exception):
    """Bad input caught at the edge: the message names the file, column, row or key and the fix."""
