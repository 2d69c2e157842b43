"""The agents' optimisers: the multi-tensor (``foreach``) step equals the per-tensor loop bit for bit.

``make_optimiser`` asks torch for its ``foreach`` kernels on every device (torch picks them only on CUDA by
default) because they step the agents' whole embedding tables faster; this is only allowed because the
parameters they produce are identical to the per-tensor implementation's, which this test pins down.
"""

from __future__ import annotations

import pytest
import torch

from agents.backbone.training import make_optimiser


def _params(gen: torch.Generator) -> list[torch.nn.Parameter]:
    shapes = [(300, 8), (50, 8), (24, 16), (16,), (16, 1), (300, 1)]  # embedding tables, MLP weights and biases
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]


def _train(kind: str, weight_decay: float, foreach: bool) -> list[torch.Tensor]:
    params = _params(torch.Generator().manual_seed(0))
    opt = make_optimiser(params, kind, 0.01, weight_decay, 0.98)  # type: ignore[arg-type]
    for group in opt.param_groups:
        group["foreach"] = foreach
    grads = torch.Generator().manual_seed(1)
    for _ in range(12):
        for p in params:
            g = torch.randn(p.shape, generator=grads)
            p.grad = g * (torch.rand(p.shape[0], 1, generator=grads) < 0.3) if p.dim() == 2 else g  # sparse-ish rows
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize(("kind", "weight_decay"), [("adam", 0.0), ("adam", 0.01), ("adagrad", 0.0), ("adagrad", 0.001)])
def test_foreach_step_is_bit_identical(kind: str, weight_decay: float) -> None:
    fast, loop = _train(kind, weight_decay, True), _train(kind, weight_decay, False)
    assert all(torch.equal(a, b) for a, b in zip(fast, loop, strict=True))
    assert not torch.equal(fast[0], _params(torch.Generator().manual_seed(0))[0])  # the parameters did move


def test_make_optimiser_asks_for_foreach() -> None:
    opt = make_optimiser(_params(torch.Generator().manual_seed(0)), "adam", 0.01)
    assert all(group["foreach"] is True for group in opt.param_groups)
