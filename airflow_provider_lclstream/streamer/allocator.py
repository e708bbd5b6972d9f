"""Keep freed memory in the process instead of handing it back to the kernel at once.

A producer allocates and frees the same large arrays (detector frames, batches) for every
message. glibc returns freed memory above a small threshold to the kernel, so every new frame
costs page faults again; on virtualised hosts that is most of the work of making a frame.
Raising glibc's mmap and trim thresholds lets those blocks be reused. A no-op without glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit hosts
TRIM_THRESHOLD = 512 * 1024 * 1024


def keep_freed_memory(trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Serve blocks up to 32 MiB from the heap and keep up to ``trim_threshold`` bytes freed.

    Returns whether glibc accepted both settings.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): keep the allocator's defaults
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    accepted = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )
    log.debug("malloc thresholds raised: %s", accepted)
    return accepted
