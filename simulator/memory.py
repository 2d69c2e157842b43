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

Under the pin, training is where the price is paid: at 100k items a two-tower step's dense gradients
and optimiser temporaries are ~13 MiB each, mapped and faulted in anew every minibatch (the agent fit
spent as much time in the kernel as in user code, 12x its floor). :func:`heap_reuse` lifts the pin
while a fit runs and trims the heap back afterwards: the fits' blocks are few and short-lived, the
serving blocks that made the pin necessary are not allocated inside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
from collections.abc import Iterator

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers in glibc's malloc.h
LARGE_CATALOGUE = 50_000
"""From this many items a round's score blocks reach several MiB: their memory is handed back on free."""
SMALL_MMAP, SMALL_TRIM = 32 << 20, 128 << 20
"""Below ``LARGE_CATALOGUE``: blocks under 32 MiB come from the heap; it is trimmed above 128 MiB of free top."""
PIN, DEFAULT_TRIM = 1 << 20, 128 << 10
"""The pin's mmap threshold, and glibc's default trim threshold (kept while pinned)."""
_pinned = False  # whether the last fit_malloc_to applied the pin


def _mallopt(param: int, value: int) -> bool:
    if os.environ.get("CASCADESIM_KEEP_MALLOC") or not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(param, value))
    except (OSError, AttributeError):
        return False


def pin_mmap_threshold(threshold: int = PIN) -> bool:
    """Fix glibc's mmap threshold; returns whether it was applied."""
    return _mallopt(_M_MMAP_THRESHOLD, threshold)


def _trim_heap() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def fit_malloc_to(n_items: int) -> bool:
    """The allocator setting for a world of ``n_items``: the 1 MiB pin when large, else heap reuse (module docstring).

    Process-wide; called when a loop is built (the last loop built decides). Returns whether it was applied.
    """
    global _pinned
    if n_items >= LARGE_CATALOGUE:
        _pinned = pin_mmap_threshold() and _mallopt(_M_TRIM_THRESHOLD, DEFAULT_TRIM)
        return _pinned
    _pinned = False
    return _mallopt(_M_MMAP_THRESHOLD, SMALL_MMAP) and _mallopt(_M_TRIM_THRESHOLD, SMALL_TRIM)


@contextlib.contextmanager
def heap_reuse() -> Iterator[None]:
    """While pinned, let a fit's blocks up to 32 MiB be reused from the heap; restore the pin and trim after.

    Does nothing when the pin is not applied (small worlds reuse the heap already). Results do not change.
    """
    if not _pinned:
        yield
        return
    _mallopt(_M_MMAP_THRESHOLD, SMALL_MMAP)
    _mallopt(_M_TRIM_THRESHOLD, SMALL_TRIM)
    try:
        yield
    finally:
        pin_mmap_threshold()
        _mallopt(_M_TRIM_THRESHOLD, DEFAULT_TRIM)
        _trim_heap()


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
