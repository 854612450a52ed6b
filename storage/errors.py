"""Errors biasgrid reports to the user, each with its exit code and a one-line message."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import Any


class InputError(Exception):
    """Bad input (file, field, group, option or config value): reported with exit code 2.

    The message names what is wrong and what was expected; nothing is written before it is raised.
    """

    exit_code = 2


class EnvironmentFailure(Exception):
    """The environment failed, not the input: a read-only or full file system, an unreachable cluster, no
    memory. Reported with exit code 3 and a message naming the path or address and what to do."""

    exit_code = 3


class JobsFailed(Exception):
    """Some jobs failed, every other result is stored: exit code 1 (``biasgrid status`` lists them). ``results``:
    what the run stored (``biasgrid.Results``); ``failed``: each failed job's description and error."""

    exit_code = 1

    def __init__(self, message: str, results: Any = None, failed: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.results = results
        self.failed = list(failed)


_ADVICE = {
    errno.ENOSPC: "no space left: free some space, or write elsewhere (--out)",
    errno.EDQUOT: "disk quota exceeded: free some space, or write elsewhere (--out)",
    errno.EROFS: "the file system is read-only: write elsewhere (--out)",
    errno.EACCES: "no permission to write there: write elsewhere (--out)",
    errno.EPERM: "no permission to write there: write elsewhere (--out)",
}


def environment_failure(path: str, exc: OSError) -> EnvironmentFailure:
    """An OSError met while writing ``path``, as one sentence: what happened and what to do."""
    code = exc.errno
    if code is None:   # pyarrow's errors carry the text only
        text = str(exc)
        code = next((c for c, words in ((errno.ENOSPC, "No space left"), (errno.EROFS, "Read-only file system"),
                                        (errno.EACCES, "Permission denied")) if words in text), None)
    advice = _ADVICE.get(code or -1, "check the path, its free space and permissions")
    return EnvironmentFailure(f"{path}: cannot write ({exc.strerror or exc}); {advice}")
