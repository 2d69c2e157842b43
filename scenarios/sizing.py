"""Up-front memory estimate: a run that cannot fit is refused before anything is written.

The estimate is a rough lower bound of the resident tensors (not a promise that
a smaller run fits): the world's per-user and per-item state in the shared
warm-started loop and the agent's copy, the log window of candidates,
impressions and requests, and one block of the catalogue scan.
"""

from __future__ import annotations

import os

from simulator.config import ConfigError, Scenario

_GIB = 1 << 30
_LOOPS = 2  # the shared warm-started loop and the agent's copy are alive together


def _available_bytes() -> int:
    """MemAvailable from /proc/meminfo, else physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate_parts(sc: Scenario) -> dict[str, int]:
    """Bytes by what drives them: ``world.n_users``, ``world.n_items``, ``timeline.requests_per_round``."""
    w, f = sc.world, sc.features
    user = 4 * (3 * w.d_true + 2 * f.profile_dim + 4) + 16 * f.history_len
    item = 4 * (2 * w.d_true + 3 * f.modality_dim + 8)
    per_request = 31 * sc.cascade.k_retrieve + 60 * sc.cascade.slate_size + 8 * f.history_len + 80  # logged bytes
    rounds_kept = sc.training.window_rounds + 1
    return {
        "world.n_users": _LOOPS * sc.user_capacity * user,
        "world.n_items": _LOOPS * sc.item_capacity * item + 4 * sc.metrics.block_size * sc.item_capacity,
        "timeline.requests_per_round": _LOOPS * rounds_kept * sc.timeline.requests_per_round * per_request,
    }


def check_fits(sc: Scenario, available: int | None = None) -> None:
    """Raise a one-line ConfigError naming the largest driver when the estimate exceeds the memory available."""
    parts = estimate_parts(sc)
    need, have = sum(parts.values()), _available_bytes() if available is None else available
    if need > have:
        field = max(parts, key=parts.__getitem__)
        raise ConfigError(
            f"{field}: this run needs about {need / _GIB:.1f} GiB of memory (estimate), {have / _GIB:.1f} GiB are available; lower {field}"
        )
