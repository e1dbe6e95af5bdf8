"""Memory taken by a burst of large images goes back to the system once they are decoded."""

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
LARGE_BLOCK = 1 << 20


def return_large_blocks_when_freed() -> None:
    """Map every allocation of 1 MiB or more on its own, so that freeing it unmaps it.

    glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB): after one large decode,
    Pillow's 16 MiB image blocks come from the heap and stay with the process when freed, so a burst of large
    images would leave the server gigabytes bigger for good. A fixed threshold stops that. Process-wide; not
    glibc (macOS, musl): nothing to do."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version"):
        libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)
