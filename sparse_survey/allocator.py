"""glibc's allocator, pinned: a process that keeps and reuses the memory it frees.

By default glibc serves each large block (above a threshold that moves with the sizes the process
freed before) by a fresh ``mmap`` and returns it on ``free``, so a training step or an inference
pass that allocates its activations anew page-faults every one of their pages, every time, or
not, depending on what the process did earlier. :func:`pin_allocator` switches that off for the
rest of the process. Measured on this project's 2-core CPU, VGG16 at width 1/4 on all of
CIFAR-10 in bf16: about 9.7 M minor faults in one unpinned training of 11 epochs against none
pinned, and a test-set pass of 3 s unpinned against 2 s pinned. Nothing numerical changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util


def pin_allocator() -> bool:
    """Make glibc's malloc keep and reuse the memory a process frees, for the rest of the process:
    no large block is served by a fresh ``mmap`` (the threshold is set to its maximum, 32 MiB on
    64-bit systems, which also stops glibc from moving it) and the heap is never trimmed. Then a
    step or a pass that repeats what an earlier one allocated touches no new page, whatever the
    process did before. Returns whether it applied (False off glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 * 2**20)) and bool(
        mallopt(m_trim_threshold, 2**31 - 1))
