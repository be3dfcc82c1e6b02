"""What the gradient transformations share beyond :mod:`fnopt._base`.

- The valid range of every hyperparameter, by name, so that a primitive and
  an alias built from it both report an invalid value under their own name
  (`` `adam(b1=...)` must be in [0, 1), got 1.5 ``).
- The arithmetic dtype of a leaf: at least float32, so bf16/float16 params
  are updated with float32 arithmetic and only stored in low precision.
- Small tree helpers.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._base import Hyper, check_hyper
from ._checks import is_traced

_UNIT_OPEN = {"low": 0.0, "high": 1.0, "high_open": True}  # [0, 1)
_UNIT = {"low": 0.0, "high": 1.0}  # [0, 1]
_NONNEGATIVE = {"low": 0.0}

RULES: dict[str, dict[str, Any]] = {
    "learning_rate": _NONNEGATIVE,
    "momentum": _UNIT_OPEN,
    "dampening": _UNIT,
    "b1": _UNIT_OPEN,
    "b2": _UNIT_OPEN,
    "eps": _NONNEGATIVE,
    "weight_decay": _NONNEGATIVE,
    "initial_accumulator_value": _NONNEGATIVE,
    "alpha": _UNIT,
    "sync_period": {"low": 1.0},
    "max_norm": {"low": 0.0, "low_open": True},
    "max_consecutive_skips": {"low": 1.0},
}


def check_hypers(call: str, **values: Hyper) -> None:
    """Validates each concrete hyperparameter against its rule in ``RULES``."""
    for name, value in values.items():
        check_hyper(call, name, value, **RULES[name])


def check_nesterov(call: str, nesterov: bool, momentum: Hyper, dampening: Hyper) -> None:
    """torch's rule: Nesterov momentum needs ``momentum > 0`` and no dampening
    (checked where the values are concrete numbers)."""
    if not nesterov:
        return
    m, d = _concrete_or_none(momentum), _concrete_or_none(dampening)
    if (m is not None and np.any(m <= 0)) or (d is not None and np.any(d != 0)):
        raise ValueError(
            f"`{call}(nesterov=True)` requires momentum > 0 and dampening == 0, "
            f"got momentum={momentum!r}, dampening={dampening!r}"
        )


def _concrete_or_none(value: Hyper) -> np.ndarray | None:
    if callable(value) or is_traced(value):
        return None
    return np.asarray(value, dtype=np.float64)


def is_zero(value: Hyper) -> bool:
    """True only for the Python number 0: an alias then leaves the stage out
    (a traced or scheduled zero keeps it, so the state layout is static)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def compute_dtype(x: jax.Array) -> jnp.dtype:
    """Arithmetic dtype for a leaf: its own dtype, promoted to at least float32."""
    dtype = jnp.dtype(jnp.result_type(x))
    return dtype if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)


def storage_dtype(dtype: Any) -> Any:
    """A user-requested state dtype, canonicalized (float64 -> float32 without x64)."""
    return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def full_like(tree: Any, value: Any = 0.0, dtype: Any = None) -> Any:
    """A tree of arrays shaped like ``tree`` filled with ``value``, in ``dtype``
    (default: each leaf's own dtype)."""

    def leaf(x):
        dt = dtype or jnp.result_type(x)
        return jnp.full(jnp.shape(x), jnp.asarray(value, dt), dt)

    return jax.tree.map(leaf, tree)


def map_unzip(fn: Callable[..., tuple], n_out: int, tree: Any, *rest: Any) -> tuple:
    """``jax.tree.map`` of a leaf function returning ``n_out`` values, split
    into ``n_out`` trees shaped like ``tree``."""
    out = jax.tree.map(fn, tree, *rest)
    return jax.tree.transpose(jax.tree.structure(tree), jax.tree.structure((0,) * n_out), out)


def require_params(call: str, params: Any) -> None:
    if params is None:
        raise ValueError(
            f"`{call}` needs the current params: call `update(updates, state, params)`"
        )
