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


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong kind (a bool, a string, ``None``, an array
    where a scalar belongs). Both a ``TypeError`` and a ``ValueError``, so
    callers catching either see it."""


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
    """Returns ``value`` as a float64 NumPy array, or None when it is traced.

    The value is checked as the math will see it: rounded to the default float
    dtype, with subnormals flushed to zero (as XLA on CPU does). So ``1e39`` is
    not finite in float32, ``0.99999999`` is 1 and ``1e-50`` is 0.
    """
    if is_traced(value):
        if any(jnp.result_type(leaf) == jnp.bool_ for leaf in jax.tree_util.tree_leaves(value)):
            raise ArgumentTypeError(f"`{call}({name}=...)` must be a number, got a boolean array")
        return None
    if isinstance(value, (str, bytes)) or callable(value):
        raise ArgumentTypeError(f"`{call}({name}=...)` must be a number, got {value!r}")
    try:
        raw = np.asarray(value)
        if raw.dtype.kind == "b":
            raise ArgumentTypeError(f"`{call}({name}=...)` must be a number, got the boolean {value!r}")
        if raw.dtype.kind in "USOcMm":  # strings, objects (None, mixed), complex, dates
            raise TypeError
        arr = raw.astype(np.float64)
    except ArgumentTypeError:
        raise
    except (TypeError, ValueError):
        raise ArgumentTypeError(
            f"`{call}({name}=...)` must be a number, got {value!r}"
        ) from None
    dtype = np.dtype(float_dtype())
    with np.errstate(over="ignore", under="ignore"):
        seen = arr.astype(dtype)
    seen = np.where(np.abs(seen) < np.finfo(dtype).tiny, 0.0, seen).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{call}({name}=...)` must be finite, got {_show(value)}")
    if not np.all(np.isfinite(seen)):
        raise ValueError(
            f"`{call}({name}=...)` must be finite, got {_show(value)}{_rounded(arr, seen, dtype)}"
        )
    return seen


def _rounded(arr: np.ndarray, seen: np.ndarray, dtype: np.dtype) -> str:
    """`` (x in float32)`` when rounding to the compute dtype changed the value."""
    if np.array_equal(arr, seen, equal_nan=True):
        return ""
    return f" ({_show(seen.astype(dtype))} in {dtype.name})"


def _show(value: Any) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(arr.item())
    return np.array2string(arr, threshold=8, floatmode="unique")


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

    def inside(a: np.ndarray) -> bool:
        ok = np.ones(a.shape, dtype=bool)
        if low is not None:
            ok &= a > low if low_open else a >= low
        if high is not None:
            ok &= a < high if high_open else a <= high
        return bool(np.all(ok))

    if inside(arr):
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
    original = np.asarray(value, dtype=np.float64)
    note = _rounded(original, arr, np.dtype(float_dtype())) if inside(original) else ""
    raise ValueError(f"`{call}({name}=...)` must be {interval}, got {_show(value)}{note}")


def check_positive(call: str, name: str, value: Any) -> None:
    check_range(call, name, value, 0.0, low_open=True)


def check_nonnegative(call: str, name: str, value: Any) -> None:
    check_range(call, name, value, 0.0)


def check_choice(call: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{call}({name}=...)` must be one of {options}, got {value!r}")


def check_flag(call: str, name: str, value: Any) -> None:
    """A static switch (``three_phase``, ``nesterov``): ``True`` or ``False``,
    not a truthy string such as ``"False"``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{call}({name}=...)` must be True or False, got {value!r}")


def check_scalar(call: str, name: str, value: Any) -> None:
    """A concrete argument that must be a single number, not an array."""
    if np.ndim(value) != 0:
        raise ValueError(f"`{call}({name}=...)` must be a scalar, got shape {np.shape(value)}")


def check_schedule(call: str, name: str, value: Any) -> None:
    """A schedule argument: a callable ``step -> scalar`` or a number."""
    if not callable(value):
        concrete(call, name, value)
