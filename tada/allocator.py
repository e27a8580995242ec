"""glibc's allocator tuned per kind of process: training keeps the memory a step frees for the next step
(`retain_freed_memory`), the service gives the large blocks of decoded images back (`return_large_blocks`).

A training step allocates and frees the same tensors every iteration. With glibc's defaults, a tensor above the
(dynamic) mmap threshold gets fresh pages from the kernel each time, and freed memory at the top of the heap is
trimmed away, so every step page-faults much of its memory in again: the plain PyTorch DANN loop of
`benchmarks/reference_dann.py` (LeNet, 128 + 128 images) takes 3,500-4,500 minor faults a step, and the same loop
with these settings is 7-8 % faster. Fixing the thresholds makes the heap keep what it had (the process's memory
stays at its high-water mark, as PyTorch's own CUDA allocator does) and the faults drop to ~0. Results are
unchanged: only where memory comes from changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)

_applied: bool | None = None


def retain_freed_memory(trim_threshold: int = 2**31 - 1, top_pad: int = 256 * 2**20) -> bool:
    """Tune glibc's allocator for a training loop (once per process); False where the C library is not glibc.

    Args:
        trim_threshold: bytes free at the top of the heap before it is given back (default: ~2 GiB, i.e. keep it).
        top_pad: extra bytes the heap grows by when it has to grow (address space only until touched).

    Allocations up to 32 MiB come from the heap (glibc's maximum mmap threshold), so they are reused too.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # The mmap threshold first: setting any of these turns off glibc's dynamic threshold, and with the trim threshold
    # alone every allocation above 128 KiB would be mmapped (and faulted in) anew.
    _applied = all(libc.mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, trim_threshold), (M_TOP_PAD, top_pad)))
    return _applied


def return_large_blocks(threshold: int = 1 << 20) -> bool:
    """The opposite tuning, for the service: every allocation of ``threshold`` bytes or more gets its own mapping,
    given back to the kernel when freed (once per process); False where the C library is not glibc.

    A decoded image is a few large blocks. With glibc's dynamic threshold, the first such block freed raises the
    threshold above it, so the next images come from the heap and stay with the process: 40 images of 4096 x 4096
    RGBA decoded at once left the service holding 1.5 GB. A fixed threshold keeps what a burst of requests decoded
    from staying after it.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _applied = libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1
    return _applied
