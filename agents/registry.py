"""The agent registry: paper names -> agent classes, with validated config overrides.

Every agent class is registered under the name its paper uses and carries a
frozen ``Config`` dataclass (a default for every field, a comment under each).
:func:`make_agent` builds an agent from an :class:`~simulator.agent_api.AgentContext`
and keyword overrides, which are checked against ``Config`` so that a typo or a
wrong type fails at once with a one-line error naming the field, e.g.
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
from typing import Any, Literal, TypeVar

from simulator.agent_api import AgentContext, RetrievalAgent

_AGENTS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator registering an agent class under ``name``.

    The class must define a frozen dataclass ``Config`` and may define ``name``
    (it must then equal ``name``); it is built as ``cls(ctx, config)``.

    Args:
        name: the registry name (the paper's name, lower case).

    Returns:
        The decorator, which returns the class unchanged (``name`` set).
    """

    def decorate(cls: T) -> T:
        config_cls = getattr(cls, "Config", None)
        if config_cls is None or not dataclasses.is_dataclass(config_cls):
            raise TypeError(f"agent {name!r}: {cls.__name__} needs a dataclass attribute 'Config'")
        if getattr(cls, "name", name) != name:
            raise TypeError(f"agent {name!r}: {cls.__name__}.name is {cls.name!r}, expected {name!r}")
        if name in _AGENTS and _AGENTS[name] is not cls:
            raise ValueError(f"agent: name {name!r} is already registered by {_AGENTS[name].__name__}")
        cls.name = name
        _AGENTS[name] = cls
        return cls

    return decorate


def agent_class(name: str) -> type:
    """The class registered under ``name`` (``ValueError`` naming the allowed names if unknown)."""
    if name not in _AGENTS:
        raise ValueError(f"agent: unknown name {name!r}; allowed: {', '.join(sorted(_AGENTS))}")
    return _AGENTS[name]


def list_agents() -> dict[str, str]:
    """Registered agents, sorted by name: name -> one-line description (the class docstring's first line)."""
    return {n: ((c.__doc__ or "").strip().splitlines() or [""])[0] for n, c in sorted(_AGENTS.items())}


def agent_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The validated ``Config`` of agent ``name`` with ``overrides`` applied.

    Args:
        name: a registered agent name.
        overrides: field -> value (values as read from TOML: lists become tuples,
            ints are accepted for floats).

    Returns:
        An instance of the agent's ``Config``.

    Raises:
        ValueError: one line naming ``agents.<name>.<field>`` and what is allowed.
    """
    config_cls = agent_class(name).Config
    hints = typing.get_type_hints(config_cls)
    allowed = [f.name for f in dataclasses.fields(config_cls)]
    values = {}
    for key, value in (overrides or {}).items():
        if key not in allowed:
            raise ValueError(f"agents.{name}.{key}: unknown option; allowed: {', '.join(allowed)}")
        values[key] = _coerce(f"agents.{name}.{key}", value, hints[key])
    try:
        return config_cls(**values)
    except ValueError as err:  # a Config.__post_init__ range check: "field: must be ..."
        raise ValueError(f"agents.{name}.{err}") from None


def make_agent(name: str, ctx: AgentContext, **overrides: Any) -> RetrievalAgent:
    """Build the agent registered as ``name`` with its ``Config`` overridden by ``overrides``.

    Args:
        name: a registered agent name (see :func:`list_agents`).
        ctx: sizes, device and seed of the run.
        **overrides: ``Config`` fields to change.

    Returns:
        The agent, satisfying :class:`~simulator.agent_api.RetrievalAgent`.

    Raises:
        ValueError: unknown name or invalid override (one line naming the field).
    """
    return agent_class(name)(ctx, agent_config(name, overrides))


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
