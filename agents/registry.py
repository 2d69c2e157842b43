"""The agent registry: paper names -> (agent class, preset config), with validated config overrides.

Every agent class is registered under the name its paper uses together with its config type
(a frozen dataclass, a default for every field, a docstring under each), e.g.
``@register("bc", config=BCConfig)``. Ablations and variants are the same class with another
preset config: ``register_variant("kd+b", KD, KDConfig(b_per_request=20), doc=...)``.
A config may embed shared groups (a :class:`~agents.backbone.two_tower.TowerConfig`, a
:class:`~agents.backbone.training.TrainConfig`, ...) as typed fields; override keys stay flat
(``hidden = [64]`` goes into the ``tower`` group). :func:`make_agent` builds an agent from an
:class:`~simulator.agent_api.AgentContext` and keyword overrides, checked against the config so
that a typo or a wrong type fails at once with a one-line error naming the field, e.g.
``agents.bc.gamma: must be float, got 'x'``.

Example:
    >>> from agents import make_agent
    >>> agent = make_agent("bc", ctx, gamma=5.0, hidden=[64])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from simulator.agent_api import AgentContext, RetrievalAgent

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class AgentSpec:
    """One registered name: the class, its config type, the preset config and the listed description."""

    cls: type
    config_cls: type
    preset: Any
    doc: str


_AGENTS: dict[str, AgentSpec] = {}


def _first_line(text: str | None) -> str:
    return ((text or "").strip().splitlines() or [""])[0]


def _add(name: str, spec: AgentSpec) -> None:
    if not dataclasses.is_dataclass(spec.config_cls) or not isinstance(spec.preset, spec.config_cls):
        raise TypeError(f"agent {name!r}: the preset must be an instance of the dataclass {spec.config_cls.__name__}")
    if name in _AGENTS and _AGENTS[name].cls is not spec.cls:
        raise ValueError(f"agent: name {name!r} is already registered by {_AGENTS[name].cls.__name__}")
    flat_keys(spec.config_cls)  # fails at import on an ambiguous flat key
    _AGENTS[name] = spec


def register(name: str, config: type, doc: str | None = None) -> Callable[[T], T]:
    """Class decorator registering an agent class under ``name`` with its config type.

    The class is built as ``cls(ctx, config_instance, name)``; its listed description is its
    docstring's first line.

    Args:
        name: the registry name (the paper's name, lower case).
        config: the agent's config dataclass (its default instance is the preset).
        doc: the listed description (default: the class docstring's first line).

    Returns:
        The decorator, which returns the class unchanged.
    """

    def decorate(cls: T) -> T:
        _add(name, AgentSpec(cls, config, config(), doc or _first_line(cls.__doc__)))
        return cls

    return decorate


def register_variant(name: str, cls: type, preset: Any, doc: str) -> None:
    """Register ``name`` as agent class ``cls`` with the preset config ``preset`` (an ablation or variant).

    Args:
        name: the registry name.
        cls: an already registered agent class.
        preset: an instance of that class's config type; overrides apply on top of it.
        doc: the one-line description :func:`list_agents` shows.
    """
    config_cls = next((s.config_cls for s in _AGENTS.values() if s.cls is cls), None)
    if config_cls is None:
        raise TypeError(f"agent {name!r}: register {cls.__name__} under its own name first")
    _add(name, AgentSpec(cls, config_cls, preset, doc))


def agent_spec(name: str) -> AgentSpec:
    """The registration of ``name`` (``ValueError`` naming the allowed names if unknown)."""
    if name not in _AGENTS:
        raise ValueError(f"agent: unknown name {name!r}; allowed: {', '.join(sorted(_AGENTS))}")
    return _AGENTS[name]


def agent_class(name: str) -> type:
    """The class registered under ``name`` (``ValueError`` naming the allowed names if unknown)."""
    return agent_spec(name).cls


def list_agents() -> dict[str, str]:
    """Registered agents, sorted by name: name -> one-line description."""
    return {n: s.doc for n, s in sorted(_AGENTS.items())}


def _groups(config_cls: type) -> dict[str, type]:
    """The fields of ``config_cls`` that are themselves config dataclasses (embedded groups): name -> type."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls) if dataclasses.is_dataclass(hints[f.name])}


def flat_keys(config_cls: type) -> dict[str, tuple[str | None, Any]]:
    """Every override key of ``config_cls``: key -> ``(group field or None, type hint)``.

    Raises:
        TypeError: a key appears twice (top level and a group, or two groups).
    """
    hints = typing.get_type_hints(config_cls)
    groups = _groups(config_cls)
    out: dict[str, tuple[str | None, Any]] = {}
    for f in dataclasses.fields(config_cls):
        entries = (
            [(k, (f.name, h)) for k, h in typing.get_type_hints(groups[f.name]).items()]
            if f.name in groups
            else [(f.name, (None, hints[f.name]))]
        )
        for key, entry in entries:
            if key in out:
                raise TypeError(f"{config_cls.__name__}: override key {key!r} is ambiguous")
            out[key] = entry
    return out


def agent_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The validated config of agent ``name``: its preset with ``overrides`` applied.

    Args:
        name: a registered agent name.
        overrides: flat field -> value (values as read from TOML: lists become tuples, ints are
            accepted for floats); a field of an embedded group is named by itself (``hidden``).

    Returns:
        An instance of the agent's config type.

    Raises:
        ValueError: one line naming ``agents.<name>.<field>`` and what is allowed.
    """
    spec = agent_spec(name)
    keys = flat_keys(spec.config_cls)
    top: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in (overrides or {}).items():
        if key not in keys:
            raise ValueError(f"agents.{name}.{key}: unknown option; allowed: {', '.join(keys)}")
        group, hint = keys[key]
        coerced = _coerce(f"agents.{name}.{key}", value, hint)
        if group is None:
            top[key] = coerced
        else:
            grouped.setdefault(group, {})[key] = coerced
    try:  # replace() re-runs every __post_init__ range check: "field: must be ..."
        for group, values in grouped.items():
            top[group] = dataclasses.replace(getattr(spec.preset, group), **values)
        return dataclasses.replace(spec.preset, **top)
    except ValueError as err:
        raise ValueError(f"agents.{name}.{err}") from None


def make_agent(name: str, ctx: AgentContext, **overrides: Any) -> RetrievalAgent:
    """Build the agent registered as ``name`` with its preset config overridden by ``overrides``.

    Args:
        name: a registered agent name (see :func:`list_agents`).
        ctx: sizes, device and seed of the run.
        **overrides: config fields to change (flat names).

    Returns:
        The agent, satisfying :class:`~simulator.agent_api.RetrievalAgent`.

    Raises:
        ValueError: unknown name or invalid override (one line naming the field).
    """
    agent: RetrievalAgent = agent_spec(name).cls(ctx, agent_config(name, overrides), name)
    return agent


def rebuild(agent: Any) -> Any:
    """A fresh agent of the same registered kind, name and config as ``agent`` (``type(agent)(ctx, config)`` if unregistered)."""
    ctx, config, name, cls = agent.ctx, agent.config, getattr(agent, "name", ""), type(agent)
    spec = _AGENTS.get(name)
    if spec is not None and spec.cls is cls:
        return spec.cls(ctx, config, name)
    return cls(ctx, config)


# --- type checking of override values --------------------------------------------------------


def _describe(hint: Any) -> str:
    """A short human description of a type hint, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0])}" if args else "a list"
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against ``hint`` and convert it (int -> float, list -> tuple).

    Raises:
        ValueError: ``"<path>: must be <type>, got <value>"``.
    """
    ok, out = _try(value, hint)
    if not ok:
        raise ValueError(f"{path}: must be {_describe(hint)}, got {value!r}")
    return out


def _try(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(True, converted)`` when ``value`` fits ``hint``, else ``(False, None)``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if hint is type(None):
        return value is None, None
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, out = _try(value, arg)
            if ok:
                return True, out
        return False, None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, None
        item_hint = args[0] if args else Any
        items = [_try(v, item_hint) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if hint is str:
        return isinstance(value, str), value
    return isinstance(value, hint) if isinstance(hint, type) else True, value
