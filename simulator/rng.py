"""Named, per-round random streams derived from one root seed.

Never call a global RNG. Every consumer receives a generator derived from
``(seed, stream name, round, extra...)``, so that (a) agents compared on the
same seed share arrivals and choice dice (common random numbers) and (b) a run
resumed at a round boundary needs no saved generator state.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def stream_seed(seed: int, name: str, *keys: int) -> int:
    """A 63-bit integer seed for the stream ``name`` at ``keys`` (e.g. round, slice)."""
    # the key count is part of the entropy: SeedSequence ignores trailing zeros, so (r,) and (r, 0) would collide
    entropy = [int(seed) % (1 << 63), zlib.crc32(name.encode()), len(keys), *(int(k) % (1 << 63) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def numpy_stream(seed: int, name: str, *keys: int) -> np.random.Generator:
    """A NumPy generator for one named stream."""
    return np.random.default_rng(stream_seed(seed, name, *keys))


def torch_stream(seed: int, name: str, *keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` for one named stream."""
    gen = torch.Generator(device=device)
    gen.manual_seed(stream_seed(seed, name, *keys))
    return gen
