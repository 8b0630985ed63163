"""Process settings for a crawler process, applied once after imports and before crawling."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

#: glibc's mallopt parameter number for the arena limit.
_M_ARENA_MAX = -8


def tune_process() -> None:
    """Throughput GC and fewer malloc arenas.

    * ``gc.freeze`` moves everything imported so far out of the collector's sight, and gen-0
      may grow to 20,000 objects: a crawl allocates many short-lived objects per page, and
      default settings spent ~3-4 % of the event loop's time in collections (measured, 2,000
      pages); with these, none ran.
    * Parsing and WARC compression run in worker threads; glibc gives each thread its own
      malloc arena, which fragments. Two arenas cut peak RSS of a 5,000-page crawl from 98 MB
      to 79 MB at the same speed (measured with ``bench/crawl_bench.py``, MALLOC_ARENA_MAX=2).
      Must run before those threads start; a no-op where glibc is absent.
    """
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    if sys.platform.startswith("linux"):
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6")
            libc.mallopt(_M_ARENA_MAX, 2)
        except (OSError, AttributeError):
            pass
