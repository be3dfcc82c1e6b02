"""What the gradient transformations share beyond :mod:`fnopt._base`.

- The valid range of every hyperparameter, by name, so that a primitive and
  an alias built from it both report an invalid value under their own name
  (`` `adam(b1=...)` must be in [0, 1), got 1.5 ``).
- The arithmetic dtype of a leaf: at least float32, so bf16/float16 params
  are updated with float32 arithmetic and only stored in low precision.
- Small tree helpers.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental.shard_alike import shard_alike

from ._base import Hyper, Hypers, _group_leaves, is_group_tree
from ._checks import check_flag, is_traced

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
    # Global decisions: one value for the whole update, no group trees.
    "sync_period": {"low": 1.0, "groups": False},
    "max_norm": {"low": 0.0, "low_open": True, "groups": False},
    "max_consecutive_skips": {"low": 1.0, "groups": False},
}


def hypers(call: str, **values: Hyper) -> Hypers:
    """:class:`~fnopt._base.Hypers` validated against ``RULES``."""
    return Hypers(call, RULES, **values)


def check_nesterov(call: str, nesterov: bool, momentum: Hyper, dampening: Hyper) -> None:
    """torch's rule: Nesterov momentum needs ``momentum > 0`` and no dampening
    (checked where the values are concrete numbers)."""
    check_flag(call, "nesterov", nesterov)
    if not nesterov:
        return
    m, d = _concrete_or_none(momentum), _concrete_or_none(dampening)
    if (m is not None and np.any(m <= 0)) or (d is not None and np.any(d != 0)):
        raise ValueError(
            f"`{call}(nesterov=True)` requires momentum > 0 and dampening == 0, "
            f"got momentum={momentum!r}, dampening={dampening!r}"
        )


def _concrete_or_none(value: Hyper) -> np.ndarray | None:
    """The concrete values of a hyperparameter (every group's), or None when
    any is a schedule or traced."""
    leaves = [v for _, v in _group_leaves("", "", value)] if is_group_tree(value) else [value]
    if any(callable(v) or is_traced(v) for v in leaves):
        return None
    return np.asarray([np.float64(v) for v in leaves])


def is_zero(value: Hyper) -> bool:
    """True only for the Python number 0: an alias then leaves the stage out
    (a traced or scheduled zero keeps it, so the state layout is static)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def compute_dtype(x: jax.Array) -> jnp.dtype:
    """Arithmetic dtype for a leaf: its own dtype, promoted to at least float32."""
    dtype = jnp.dtype(jnp.result_type(x))
    return dtype if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)


def moment_dtypes(call: str, mu_dtype: Any, nu_dtype: Any) -> dict[str, Any]:
    """An alias's ``mu_dtype`` / ``nu_dtype``, validated under its name, as
    keyword arguments for its primitive."""
    return {"mu_dtype": storage_dtype(call, mu_dtype), "nu_dtype": storage_dtype(call, nu_dtype, "nu_dtype")}


def storage_dtype(call: str, dtype: Any, name: str = "mu_dtype", *, complex_ok: bool = False) -> Any:
    """A user-requested state dtype (argument ``name``, e.g. ``mu_dtype``),
    validated and canonicalized (float64 -> float32 without x64); floating,
    or with ``complex_ok`` also complex."""
    if dtype is None:
        return None
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not jnp.issubdtype(dt, jnp.inexact if complex_ok else jnp.floating):
        raise ValueError(f"`{call}({name}=...)` must be None or a floating dtype, got {dtype!r}")
    return jax.dtypes.canonicalize_dtype(dt)


def fill_like(x: jax.Array, value: Any = 0.0, dtype: Any = None) -> jax.Array:
    """An array shaped like ``x`` filled with ``value``, in ``dtype``
    (default: ``x``'s), laid out like ``x``.

    Outside ``jit`` ``jnp.full_like`` already takes a committed array's
    sharding. Under ``jit`` (a tracer, whose sharding is unknown until XLA
    propagates it) ``shard_alike`` ties the buffer's sharding to its
    parameter's. Eagerly, ``shard_alike`` would cost a copy of every
    parameter (a full params' worth of extra peak memory), so it is only used
    on tracers."""
    filled = jnp.full_like(x, value, dtype or jnp.result_type(x))
    return shard_alike(x, filled)[1] if is_traced(x) else filled


def full_like(tree: Any, value: Any = 0.0, dtype: Any = None) -> Any:
    """:func:`fill_like` for every leaf of ``tree``."""
    return jax.tree.map(lambda x: fill_like(x, value, dtype), tree)


SMALL_LEAF = 1 << 14  # elements; below this a leaf costs more in per-kernel overhead than in bytes


def packed_leaves(tree: Any) -> list[jax.Array]:
    """The leaves of ``tree`` in their arithmetic dtype, for whole-tree
    reductions (norms, finiteness): large leaves as they are, and the small
    ones raveled and concatenated into one vector per dtype.

    A reduction costs a kernel launch per leaf; on a transformer-shaped tree
    most leaves are small vectors, so packing them cuts the compiled program
    from ~2 reduction kernels per leaf to ~1 per large leaf (less compile time,
    less dispatch) for the price of copying a few hundred KiB. The sum is
    reassociated, which changes it by rounding only.
    """
    large: list[jax.Array] = []
    small: dict[Any, list[jax.Array]] = {}
    for leaf in jax.tree.leaves(tree):
        x = leaf.astype(compute_dtype(leaf))
        if x.size >= SMALL_LEAF:
            large.append(x)
        else:
            small.setdefault(x.dtype, []).append(x.reshape(-1))
    packed = [parts[0] if len(parts) == 1 else jnp.concatenate(parts) for parts in small.values()]
    return large + packed


def require_params(call: str, params: Any) -> None:
    if params is None:
        raise ValueError(
            f"`{call}` needs the current params: call `update(updates, state, params)`"
        )



def may_be_zero(value: Hyper) -> bool:
    """Whether a hyperparameter can be 0 at some step: a concrete 0 in any
    group, a traced value or a schedule (which cannot be inspected)."""
    values = _concrete_or_none(value)
    return values is None or bool(np.any(values == 0))


def safe_divide(numerator: jax.Array, denominator: jax.Array, may_vanish: bool) -> jax.Array:
    """``numerator / denominator``, and 0 where the denominator is 0.

    A denominator ``sqrt(v) + eps`` is 0 only with ``eps = 0`` and a zero
    second moment (a gradient that was always 0, or underflowed): the update
    is then 0 instead of ``0 / 0 = NaN``. The select costs one more
    elementwise op, so it is only emitted when ``may_vanish`` (the
    transform's ``eps`` may be 0)."""
    if not may_vanish:
        return numerator / denominator.astype(numerator.dtype)
    safe = jnp.where(denominator > 0, denominator, 1).astype(numerator.dtype)
    return jnp.where(denominator > 0, numerator / safe, 0)


def with_group_check(hp: Hypers, tx: Any) -> Any:
    """``tx`` whose ``init`` first checks ``hp``'s group trees against the
    params, so that a tree that is not a prefix of the params is reported
    under the alias's name (``adamw(learning_rate=...)``) rather than the
    name of the primitive that would meet it first."""
    if not hp.grouped:
        return tx

    def init(params):
        hp.layout(params)
        return tx.init(params)

    return optax.GradientTransformationExtraArgs(init, tx.update)


def abs2(x: jax.Array) -> jax.Array:
    """``|x|^2``, real: ``x * x`` for real arrays, ``re^2 + im^2`` for complex
    ones (Optax's convention for the second moments of complex params)."""
    if jnp.iscomplexobj(x):
        return jnp.square(x.real) + jnp.square(x.imag)
    return x * x


def real_dtype(x: jax.Array) -> jnp.dtype:
    """The dtype of ``|x|^2``: ``x``'s dtype, or its real part's for complex."""
    dtype = jnp.dtype(jnp.result_type(x))
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def moment_like(tree: Any, dtype: Any = None, *, real: bool = False) -> Any:
    """Zero moment buffers shaped like ``tree``'s leaves, laid out like them.

    A first moment (``real=False``) of a complex leaf is complex, in the
    leaf's dtype; ``dtype`` (``mu_dtype``) applies to the real leaves. A
    second moment (``real=True``) holds ``|g|^2``: real, in ``dtype`` or
    else the leaf's real dtype (float32 for complex64)."""

    def buffer(x):
        if real:
            return fill_like(x, 0.0, dtype or real_dtype(x))
        return fill_like(x, 0.0, None if jnp.iscomplexobj(x) else dtype)

    return jax.tree.map(buffer, tree)
