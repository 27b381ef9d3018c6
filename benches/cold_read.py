"""Cold-cache reads for the benches that time reading files: evict them from the page cache
(written back first, by the caller's os.sync: dirty pages cannot be evicted), and the floor a
reader is held to, a sequential read() of the same files into one reused buffer."""
from __future__ import annotations

import os

HAS_FADVISE = hasattr(os, "posix_fadvise")


def evict(paths) -> None:
    """Drops the files' pages from the page cache (posix_fadvise DONTNEED)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sequential_read(paths):
    """A callable that evicts the files, then reads them in order with read() into one 8 MiB
    buffer: the disk's sequential read speed in the same run."""
    buffer = bytearray(8 << 20)

    def fn():
        evict(paths)
        for path in paths:
            with open(path, "rb", buffering=0) as handle:
                while handle.readinto(buffer):
                    pass
    return fn
