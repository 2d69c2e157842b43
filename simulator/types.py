"""Observable records shared by the simulator and the agents.

Everything here is what a real platform could observe. Truth never appears in
these types: it lives in :mod:`simulator.world` and :class:`simulator.log.store.TruthStore`.
Tensors are torch tensors on the run's device; shapes are given as ``[B]`` for a
batch of requests, ``[M]`` for the item id space (capacity), ``[N]`` for the
user id space (capacity).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

# Entry actions a platform observes for a request.
ENTRY_BROWSE, ENTRY_SEARCH, ENTRY_PORTAL = 0, 1, 2
# Click motives (truth only).
MOTIVE_NONE, MOTIVE_INTEREST, MOTIVE_CONFORMITY, MOTIVE_PORTAL = 0, 1, 2, 3


def _map_tensors(obj, fn):
    """Apply ``fn`` to every tensor field of a dataclass, returning a new one."""
    return replace(obj, **{f.name: fn(getattr(obj, f.name)) for f in fields(obj) if isinstance(getattr(obj, f.name), torch.Tensor)})


@dataclass(frozen=True)
class Catalogue:
    """Observable item features indexed by item id (``[M]`` = item capacity).

    Attributes:
        live: ``[M] bool`` items that can be recommended now.
        category: ``[M] int64`` category id.
        creator: ``[M] int64`` creator id.
        domain: ``[M] int64`` 0 main feed, 1 mini-app.
        promoted: ``[M] bool`` item sits behind a marketing portal.
        modality: ``[M, 3, D_m] float32`` noisy visual / acoustic / text vectors.
        clicks: ``[M] float32`` observed cumulative clicks (popularity counter).
        exposures: ``[M] float32`` observed cumulative exposures.
        born_round: ``[M] int64`` round the item arrived (-1: initial catalogue).
    """

    live: torch.Tensor
    category: torch.Tensor
    creator: torch.Tensor
    domain: torch.Tensor
    promoted: torch.Tensor
    modality: torch.Tensor
    clicks: torch.Tensor
    exposures: torch.Tensor
    born_round: torch.Tensor

    @property
    def capacity(self) -> int:
        return int(self.live.shape[0])

    def live_ids(self) -> torch.Tensor:
        """``[M_live] int64`` ids of the live items, ascending."""
        return torch.nonzero(self.live, as_tuple=False).squeeze(1)

    def popularity_features(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """``[M, 3] float32`` (or ``[n, 3]`` for ``ids [n]``): log1p clicks, log1p exposures, smoothed CTR.

        With ``ids`` only those rows are computed (elementwise, so equal to ``popularity_features()[ids]`` bit for
        bit): a training step of a two-tower model needs its minibatch's items, not the whole catalogue's.
        """
        clicks, exposures = (self.clicks, self.exposures) if ids is None else (self.clicks[ids], self.exposures[ids])
        ctr = (clicks + 1.0) / (exposures + 10.0)
        return torch.stack([torch.log1p(clicks), torch.log1p(exposures), ctr], dim=1)

    def to(self, device: torch.device | str) -> Catalogue:
        return _map_tensors(self, lambda t: t.to(device))

    def clone(self) -> Catalogue:
        return _map_tensors(self, torch.clone)


@dataclass(frozen=True)
class UserTable:
    """Observable user features indexed by user id (``[N]`` = user capacity).

    Attributes:
        alive: ``[N] bool`` registered and not churned.
        profile: ``[N, D_p] float32`` noisy profile features.
        history: ``[N, L] int64`` most recent clicked items, newest last, -1 padded.
        history_time: ``[N, L] float64`` absolute time (hours) of each history click, NaN where
            ``history`` is -1 (None when the producer does not track click times).
    """

    alive: torch.Tensor
    profile: torch.Tensor
    history: torch.Tensor
    history_time: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> UserTable:
        return _map_tensors(self, lambda t: t.to(device))

    def clone(self) -> UserTable:
        return _map_tensors(self, torch.clone)


@dataclass(frozen=True)
class RequestBatch:
    """A batch of arriving requests with everything observable about them.

    Attributes:
        request_id: ``[B] int64`` globally increasing ids.
        user_id: ``[B] int64``.
        domain: ``[B] int64`` 0 main feed, 1 mini-app.
        entry: ``[B] int64`` ENTRY_BROWSE / ENTRY_SEARCH / ENTRY_PORTAL.
        hour: ``[B] float32`` hour of the week in [0, 168).
        profile: ``[B, D_p] float32`` the user's profile at request time.
        history: ``[B, L] int64`` the user's click history at request time, -1 padded.
        round: the round the batch belongs to.
        time: ``[B] float64`` absolute simulated time in hours (None for synthetic batches).
        history_time: ``[B, L] float64`` absolute time (hours) of each history click, NaN padded
            like ``history`` (None when unknown: synthetic batches, older logs).
        session_id: ``[B] int64`` the request id that opened the request's session (None: each request is
            its own session).
    """

    request_id: torch.Tensor
    user_id: torch.Tensor
    domain: torch.Tensor
    entry: torch.Tensor
    hour: torch.Tensor
    profile: torch.Tensor
    history: torch.Tensor
    round: int
    time: torch.Tensor | None = None
    history_time: torch.Tensor | None = None
    session_id: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.request_id.shape[0])

    def select(self, index: torch.Tensor) -> RequestBatch:
        """The sub-batch at ``index`` (``[B'] int64`` or ``[B] bool``)."""
        return _map_tensors(self, lambda t: t[index])

    def sessions(self) -> torch.Tensor:
        """``[B] int64`` the session of each request (its own id when sessions are off)."""
        return self.request_id if self.session_id is None else self.session_id

    def absolute_time(self) -> torch.Tensor:
        """``[B] float64`` absolute hours (the hour of the week when no absolute time was given)."""
        return self.hour.double() if self.time is None else self.time

    def to(self, device: torch.device | str) -> RequestBatch:
        return _map_tensors(self, lambda t: t.to(device))
