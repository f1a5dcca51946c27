"""Process hardening at start-up: no core dumps.

Keys, link tokens and plaintext segments live in this process's memory; a core dump
would write them to disk, where no deadline reaches them. ``no_core_dumps`` sets
RLIMIT_CORE to 0 and PR_SET_DUMPABLE to 0 (also keeps other processes of the same user
from attaching with ptrace). Swap is the deployment's part: none, or encrypted (README).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _prctl(option: int, arg: int = 0) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return int(libc.prctl(option, arg, 0, 0, 0))


def no_core_dumps() -> bool:
    """Forbid core dumps of this process; True when both settings took."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        return False
    try:
        return _prctl(PR_SET_DUMPABLE, 0) == 0
    except (OSError, AttributeError):
        return False


def dumpable() -> bool:
    """Whether this process may dump core (PR_GET_DUMPABLE)."""
    return _prctl(PR_GET_DUMPABLE) != 0
