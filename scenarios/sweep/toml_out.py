"""A small TOML writer for what sweeps and tuning write: scenario dicts and ``[agents.<name>]`` tables."""

from __future__ import annotations

import json
import math
from typing import Any


def value(v: Any) -> str:
    """One TOML value (numbers, booleans, strings, lists of them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, (int, float, str)):
        return json.dumps(v)  # JSON's numbers and escaped strings are valid TOML
    raise TypeError(f"toml: cannot write {type(v).__name__} {v!r}")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def dumps(data: dict[str, Any], prefix: str = "") -> str:
    """Nested dicts as TOML: scalars first, then one ``[table]`` per sub-dict (``None`` values are left out)."""
    lines = [f"{_key(k)} = {value(v)}" for k, v in data.items() if not isinstance(v, dict) and v is not None]
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}{_key(k)}"
            body = dumps(v, name + ".")
            has_scalars = any(not isinstance(x, dict) for x in v.values())
            lines += ["", f"[{name}]", body] if has_scalars or not v else ["", body]
    return "\n".join(line for line in lines).strip("\n") + "\n"
