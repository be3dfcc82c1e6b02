"""Argument validation and dtype helpers shared by every factory.

Validation runs only on *concrete* values (Python numbers, NumPy arrays,
concrete JAX arrays). Traced values (inside ``jit``/``vmap``) cannot be
inspected in Python and are passed through unchecked.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def float_dtype() -> jnp.dtype:
    """The default floating dtype: float32, or float64 when x64 is enabled."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def as_float(x: Any) -> jax.Array:
    """Converts a hyperparameter or step to the default floating dtype."""
    return jnp.asarray(x, dtype=float_dtype())


def is_traced(x: Any) -> bool:
    """True when ``x`` (or any leaf of it) is a tracer."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def concrete(call: str, name: str, value: Any) -> np.ndarray | None:
    """Returns ``value`` as a float64 NumPy array, or None when it is traced."""
    if is_traced(value):
        return None
    if isinstance(value, (str, bytes)) or callable(value):
        raise ValueError(f"`{call}({name}=...)` must be a number, got {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{call}({name}=...)` must be a number, got {value!r}"
        ) from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{call}({name}=...)` must be finite, got {_show(value)}")
    return arr


def _show(value: Any) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(arr.item())
    return np.array2string(arr, threshold=8)


def _fmt(bound: float) -> str:
    return repr(int(bound)) if float(bound).is_integer() else repr(float(bound))


def check_range(
    call: str,
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raises ``ValueError`` unless every element of a concrete ``value`` lies
    in the interval given by ``low``/``high`` (closed unless ``*_open``)."""
    arr = concrete(call, name, value)
    if arr is None:
        return
    ok = np.ones(arr.shape, dtype=bool)
    if low is not None:
        ok &= arr > low if low_open else arr >= low
    if high is not None:
        ok &= arr < high if high_open else arr <= high
    if np.all(ok):
        return
    if low is not None and high is not None:
        interval = (
            f"in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}"
            f"{')' if high_open else ']'}"
        )
    elif low is not None:
        interval = f"{'>' if low_open else '>='} {_fmt(low)}"
    else:
        interval = f"{'<' if high_open else '<='} {_fmt(high)}"
    raise ValueError(f"`{call}({name}=...)` must be {interval}, got {_show(value)}")


def check_positive(call: str, name: str, value: Any) -> None:
    check_range(call, name, value, 0.0, low_open=True)


def check_nonnegative(call: str, name: str, value: Any) -> None:
    check_range(call, name, value, 0.0)


def check_choice(call: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{call}({name}=...)` must be one of {options}, got {value!r}")


def check_schedule(call: str, name: str, value: Any) -> None:
    """A schedule argument: a callable ``step -> scalar`` or a number."""
    if not callable(value):
        concrete(call, name, value)
