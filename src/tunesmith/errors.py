"""The one exception a user's mistake becomes: the CLI prints it as a single line and exits 2."""


class UserError(Exception):
    """Bad input caught at the edge: the message names the file, column, row or key and the fix."""


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; the CLI exits 128+signal."""

    def __init__(self, signum: int, step: int, output_dir: object) -> None:
        super().__init__(
            f"stopped at step {step} by signal {signum}; a checkpoint is saved: continue with "
            f"tunesmith train ... output_dir={output_dir} --resume auto"
        )
        self.signum = signum


def rows_shown(indices: list[int]) -> str:
    """Row numbers for a message, counting from 1 (after a header): the first ten, then "..."."""
    return ", ".join(str(i + 1) for i in indices[:10]) + (" ..." if len(indices) > 10 else "")
