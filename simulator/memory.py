"""Keep the process's memory close to what its live tensors need, at a cost in time fitted to the size (Linux / glibc only).

glibc raises its mmap threshold every time a large block is freed (up to 32 MiB), after which
the many short-lived 4-30 MiB tensors of a round (score blocks, Gumbel keys) are carved from the
heap arenas and never handed back: at 100k users x 100k items the resident set grew to several
GiB while live tensors needed well under one. Pinning the threshold at 1 MiB makes such blocks
mmap'ed and returned on free.

That pin has a price wherever blocks of 1-30 MiB are allocated and freed over and over (every
training minibatch's activations and gradients): each one is a fresh mapping whose pages fault in
again, ~2.5 us per 4 KiB. Measured on a 2,000-item run, the kernel time went from 0.9 s to 7.4 s
(user time 23 s either way) and on a 10k-item full round from 2.0 s to 8.2 s of 21 s. So
:func:`fit_malloc_to` pins 1 MiB only for catalogues of ``LARGE_CATALOGUE`` items or more (the
100k round peaks at 1.78 GiB pinned, 2.04-2.10 GiB with larger thresholds); below, blocks up to 32
MiB are reused from the heap, which keeps at most 128 MiB of free memory at its top (peak RSS
+7% at 10k). Set ``CASCADESIM_KEEP_MALLOC=1`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers in glibc's malloc.h
LARGE_CATALOGUE = 50_000
"""From this many items a round's score blocks reach several MiB: their memory is handed back on free."""
SMALL_MMAP, SMALL_TRIM = 32 << 20, 128 << 20
"""Below ``LARGE_CATALOGUE``: blocks under 32 MiB come from the heap; it is trimmed above 128 MiB of free top."""


def _mallopt(param: int, value: int) -> bool:
    if os.environ.get("CASCADESIM_KEEP_MALLOC") or not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(param, value))
    except (OSError, AttributeError):
        return False


def pin_mmap_threshold(threshold: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold; returns whether it was applied."""
    return _mallopt(_M_MMAP_THRESHOLD, threshold)


def fit_malloc_to(n_items: int) -> bool:
    """The allocator setting for a world of ``n_items``: the 1 MiB pin when large, else heap reuse (module docstring).

    Process-wide; called when a loop is built (the last loop built decides). Returns whether it was applied.
    """
    if n_items >= LARGE_CATALOGUE:
        return pin_mmap_threshold()
    return _mallopt(_M_MMAP_THRESHOLD, SMALL_MMAP) and _mallopt(_M_TRIM_THRESHOLD, SMALL_TRIM)


def settle_heap() -> None:
    """Collect cyclic garbage, then freeze what survives out of the collector's sight (CPython).

    A round allocates enough containers (state-dict copies, metric rows) for several full collections,
    and each full collection walks every tracked object: ~340k after importing torch and building a
    loop, ~0.2 s of a 0.8 s round at 300 users. Frozen objects are still freed by reference counting;
    only a frozen object that later becomes part of an unreachable cycle is kept. Results do not change.
    Set ``CASCADESIM_KEEP_GC=1`` to leave the collector alone.
    """
    if os.environ.get("CASCADESIM_KEEP_GC"):
        return
    gc.collect()
    gc.freeze()
