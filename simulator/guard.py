"""Divergence guard: training that produces NaN/inf or explodes stops with one clear line.

Policy (design.md §9, numerical safety): a non-finite loss or parameter, or a
loss that grew beyond ``max_loss``, fails that (agent, seed) with a
:class:`DivergenceError` naming the agent, the round and the hyperparameter to
lower. Nothing is skipped silently; the command line prints the line and exits 2.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class DivergenceError(RuntimeError):
    """Training diverged; the message is one line naming agent, round and the hyperparameter to lower."""


def check_training(
    loss: torch.Tensor | float, params: Iterable[torch.Tensor] = (), *, who: str, hint: str, round: int | None = None, max_loss: float = 1e6
) -> None:
    """Raise :class:`DivergenceError` when ``loss`` or any of ``params`` is not finite or ``|loss| > max_loss``.

    Args:
        loss: the training loss (a scalar tensor or float) of the last step or epoch.
        params: the parameters (or gradients) to check for NaN/inf; checked without copies.
        who: the agent (or ``ranker``) being trained.
        round: the round whose fit this is (None: the caller adds it, see :func:`with_round`).
        hint: the hyperparameter to lower, e.g. ``agents.bc.lr``.
        max_loss: the largest plausible absolute loss (explosive growth beyond it counts as divergence).
    """
    where = "" if round is None else f" in round {round}"
    value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss)
    if not torch.isfinite(torch.tensor(value)):
        raise DivergenceError(f"{who}: training diverged{where} (loss is {value}); lower {hint}")
    if abs(value) > max_loss:
        raise DivergenceError(f"{who}: training diverged{where} (loss {value:.3g} > {max_loss:.3g}); lower {hint}")
    for p in params:
        if not bool(torch.isfinite(p.detach()).all()):
            raise DivergenceError(f"{who}: training diverged{where} (non-finite parameters); lower {hint}")


def with_round(err: DivergenceError, round: int) -> DivergenceError:
    """The same error naming the round (the trainers do not know it; the loop does)."""
    who, _, rest = str(err).partition(": training diverged")
    return DivergenceError(f"{who}: training diverged in round {round}{rest}") if rest else err
