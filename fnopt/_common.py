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
import optax
from jax.experimental.shard_alike import shard_alike

from ._base import Hyper, Hypers, _group_leaves, check_hyper, is_group_tree
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


def check_hypers(call: str, **values: Hyper) -> None:
    """Validates each hyperparameter against its rule in ``RULES`` (group
    trees allowed unless the rule says ``groups: False``)."""
    for name, value in values.items():
        rule = dict(RULES[name])
        check_hyper(call, name, value, groups=rule.pop("groups", True), **rule)


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


def once_per_dtype(fn: Callable[[jnp.dtype], Any]) -> Callable[[Any], Any]:
    """``fn(dtype)`` memoized by dtype: the scalar coefficients of an update
    (``1 - b1``, ``-learning_rate``, bias corrections) are cast and combined
    once per arithmetic dtype instead of once per leaf, which keeps the traced
    program (and its compile time) proportional to the number of leaves only
    through the elementwise work itself."""
    cache: dict[jnp.dtype, Any] = {}

    def get(dtype: Any) -> Any:
        key = jnp.dtype(dtype)
        if key not in cache:
            cache[key] = fn(key)
        return cache[key]

    return get


def storage_dtype(call: str, dtype: Any) -> Any:
    """A user-requested state dtype (``mu_dtype``), validated and canonicalized
    (float64 -> float32 without x64)."""
    if dtype is None:
        return None
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"`{call}(mu_dtype=...)` must be None or a floating dtype, got {dtype!r}")
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
        return numerator / denominator
    return jnp.where(denominator > 0, numerator / jnp.where(denominator > 0, denominator, 1), 0)


# ------------------------------------------ moments of complex parameters
# Optax's convention: a first moment keeps the gradient's (complex) dtype, a
# second moment is an average of |g|^2 = g * conj(g) and is real.


def moment_dtype(call: str, name: str, dtype: Any) -> Any:
    """:func:`storage_dtype` for the argument ``name`` (``mu_dtype``, ``nu_dtype``)."""
    try:
        return storage_dtype(call, dtype)
    except ValueError:
        raise ValueError(f"`{call}({name}=...)` must be None or a floating dtype, got {dtype!r}") from None


def real_dtype(dtype: Any) -> jnp.dtype:
    """The real dtype of the same precision (``complex64`` -> ``float32``)."""
    return jnp.dtype(jnp.finfo(dtype).dtype)


def moment_like(params: Any, dtype: Any = None, *, real: bool = False) -> Any:
    """Zero buffers shaped like ``params``. ``real``: a second moment, in the
    real dtype of each leaf; else a first moment, in the leaf's dtype. A
    requested ``dtype`` keeps a first moment of a complex leaf complex (at
    ``dtype``'s precision, at least complex64)."""

    def one(p):
        own = jnp.result_type(p)
        if dtype is None:
            dt = real_dtype(own) if real else own
        elif jnp.issubdtype(own, jnp.complexfloating) and not real:
            dt = jax.dtypes.canonicalize_dtype(jnp.complex128 if jnp.dtype(dtype).itemsize > 4 else jnp.complex64)
        else:
            dt = dtype
        return fill_like(p, 0.0, dt)

    return jax.tree.map(one, params)


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|^2``, real for complex ``x``."""
    if jnp.iscomplexobj(x):
        return jnp.real(x) * jnp.real(x) + jnp.imag(x) * jnp.imag(x)
    return x * x


def divide_by(numerator: jax.Array, denominator: jax.Array, may_vanish: bool) -> jax.Array:
    """:func:`safe_divide` by a real, non-negative ``denominator``; the
    numerator may be complex."""
    d = denominator.astype(numerator.dtype)
    if not may_vanish:
        return numerator / d
    ok = denominator > 0
    return jnp.where(ok, numerator / jnp.where(ok, d, 1), 0)


def negate_if(maximize: bool) -> optax.GradientTransformation | None:
    """The first stage of an alias with ``maximize=True`` (torch negates the
    gradient before anything else, weight decay included), else ``None``."""
    return optax.scale(-1.0) if maximize else None
