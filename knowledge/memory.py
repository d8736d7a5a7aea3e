"""Give memory freed by a large, short-lived build back to the operating system.

Loading a snapshot of hundreds of documents, or the reversed dictionary, makes millions of
small temporary objects; once they are gone, glibc keeps the pages for later use and a worker's
resident size stays at its peak. ``malloc_trim(0)`` returns them (a few milliseconds). Elsewhere
than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)

_libc = None
_missing = False


def release_free_memory() -> None:
    global _libc, _missing
    gc.collect()
    if _missing:
        return
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim  # noqa: B018 - glibc only
        except (OSError, AttributeError):
            _missing = True
            return
    try:
        _libc.malloc_trim(0)
    except Exception:  # noqa: BLE001 - an optimisation only
        _missing = True
        log.debug("malloc_trim failed", exc_info=True)


__all__ = ["release_free_memory"]
