"""The one error type for bad input, shared by every layer."""


class InputError(ValueError):
    """Bad input from a flag or a file: shown as one line, exit status 2, never a traceback."""


class RunError(RuntimeError):
    """A run could not go on (a full disk, another run holding the results file): one line, exit status 1."""
