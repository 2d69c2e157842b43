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


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_MIX1, _MIX2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _hash_unit(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser of int64 ``x`` -> float64 in [0, 1) (52 bits)."""
    z = (x ^ (x >> 30)) * _MIX1
    z = (z ^ (z >> 27)) * _MIX2
    z = z ^ (z >> 31)
    return ((z >> 11) & ((1 << 52) - 1)).double() / float(1 << 52)


def hash_uniform(a: torch.Tensor, b: torch.Tensor, salt: int) -> torch.Tensor:
    """A fixed U[0, 1) value (float64) per integer pair ``(a, b)``: the same pair always gets the same value,
    wherever and in whatever batch it is asked for (a counter-based stream)."""
    return _hash_unit(a * 0x9E3779B1 + b * 0x85EBCA77 + salt)


def hash_normal(a: torch.Tensor, b: torch.Tensor, salt: int) -> torch.Tensor:
    """A fixed standard-normal value (float32) per integer pair (:func:`hash_uniform` + Box-Muller)."""
    x = a * 0x9E3779B1 + b * 0x85EBCA77 + salt
    u1, u2 = _hash_unit(x).clamp_min(1e-12), _hash_unit(x + 0x632BE5AB)
    return (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)).float()
