"""A short name for a process, as ``ps``, ``top`` and psutil show it.

The worker's children are spawned interpreters whose command lines all read
``python -B -c from multiprocessing.spawn import spawn_main ...``: named, an operator (and the
bench's per-process CPU) can tell the scoring process from the feature writer.
"""

from __future__ import annotations

import ctypes
import sys

PR_SET_NAME = 15  # linux/prctl.h
MAX_NAME = 15  # the kernel keeps 16 bytes with the NUL


def name_process(name: str) -> bool:
    """Set this process's name (Linux: its main thread's ``comm``); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_NAME, name.encode()[:MAX_NAME], 0, 0, 0) == 0  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return False
