"""Transforms without buffers: weight decay (coupled and decoupled), the
learning rate, and global-norm clipping.

Each still keeps a ``count`` (so its hyperparameters can follow a schedule)
and records the values used by its last update.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._base import Hyper, Hypers, Resolved, next_count, per_group, zero_count
from ._checks import ArgumentTypeError, as_float
from ._common import compute_dtype, hypers, packed_leaves, require_params


class RecordState(NamedTuple):
    """State of a transform without buffers.

    Attributes:
        count: updates applied so far (int32, saturating).
        hyperparams: the hyperparameter values used by the last update.
    """

    count: jax.Array
    hyperparams: dict[str, jax.Array]


def _recording(hp: Hypers, apply) -> optax.GradientTransformationExtraArgs:
    """A transform whose update is ``apply(updates, params, values)``, with
    ``values`` the :class:`~fnopt._base.Resolved` hyperparameters."""

    def init(params):
        return RecordState(zero_count(), hp.record(zero_count(), params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)
        return apply(updates, params, h), RecordState(next_count(state.count), h.record)

    return optax.GradientTransformationExtraArgs(init, update)


def check_mask(call: str, mask: Any, name: str = "mask") -> None:
    """``None``, a callable, or a pytree whose leaves are all bools."""
    if mask is None or callable(mask):
        return
    for leaf in jax.tree.leaves(mask):
        if not (isinstance(leaf, (bool, np.bool_)) or getattr(leaf, "dtype", None) == np.bool_):
            raise ArgumentTypeError(
                f"`{call}({name}=...)` must be None, a pytree of bools (a prefix of the params) or a "
                f"callable params -> pytree of bools; found the leaf {leaf!r}"
            )


def apply_mask(tx: optax.GradientTransformationExtraArgs, mask: Any) -> optax.GradientTransformationExtraArgs:
    """``tx`` on the leaves where ``mask`` is True (``optax.masked``), or on all."""
    return tx if mask is None else optax.with_extra_args_support(optax.masked(tx, mask))


def _weight_decay(call: str, weight_decay: Hyper, mask: Any) -> optax.GradientTransformationExtraArgs:
    hp = hypers(call, weight_decay=weight_decay)
    check_mask(call, mask)

    def apply(updates, params, h: Resolved):
        require_params(call, params)

        def leaf(v, g, p):
            cd = compute_dtype(g)
            return (g.astype(cd) + v["weight_decay"].astype(cd) * p.astype(cd)).astype(g.dtype)

        return h.map(leaf, None, updates, params)

    return apply_mask(_recording(hp, apply), mask)


def add_weight_decay(weight_decay: Hyper, *, mask: Any = None) -> optax.GradientTransformationExtraArgs:
    """Coupled L2 regularization: ``g + weight_decay * p``.

    Place it *before* the preconditioner (first in the chain), so the decay
    goes through momentum / adaptive scaling: torch's ``weight_decay=`` of
    ``SGD``, ``Adam``, ``RAdam``, ``Adagrad`` and ``RMSprop``. ``update``
    needs ``params``.

    Args:
        weight_decay: >= 0; a float, traced array, schedule or group tree.
        mask: which leaves are decayed, with Optax's meaning: ``None`` (all),
            a pytree of bools with the params' structure or a prefix of it,
            or a callable ``params -> pytree of bools``. Masked-out leaves
            pass through unchanged ("no decay on biases and norms").

    Examples:
        >>> import jax.numpy as jnp
        >>> from fnopt import transforms
        >>> params = {"w": jnp.ones(2), "b": jnp.ones(1)}
        >>> tx = transforms.add_weight_decay(0.1, mask=lambda p: {"w": True, "b": False})
        >>> updates, _ = tx.update({"w": jnp.zeros(2), "b": jnp.zeros(1)}, tx.init(params), params)
        >>> updates["w"].tolist(), updates["b"].tolist()
        ([0.10000000149011612, 0.10000000149011612], [0.0])
    """
    return _weight_decay("add_weight_decay", weight_decay, mask)


def add_decayed_weights(weight_decay: Hyper, *, mask: Any = None) -> optax.GradientTransformationExtraArgs:
    """Decoupled weight decay (AdamW): adds ``weight_decay * p`` to the
    *preconditioned* update.

    Place it after the preconditioner and before
    :func:`scale_by_learning_rate`, so the step becomes
    ``p - lr * (direction + weight_decay * p)``: torch ``AdamW``'s
    ``p *= 1 - lr * weight_decay`` followed by the Adam step. ``update``
    needs ``params``.

    Args:
        weight_decay: >= 0; a float, traced array, schedule or group tree.
        mask: which leaves are decayed (see :func:`add_weight_decay`), e.g.
            ``lambda p: jax.tree.map(lambda x: x.ndim > 1, p)`` to spare
            biases and norm scales.
    """
    return _weight_decay("add_decayed_weights", weight_decay, mask)


def scale_by_learning_rate(learning_rate: Hyper) -> optax.GradientTransformationExtraArgs:
    """Multiplies the updates by ``-learning_rate`` (descent).

    Args:
        learning_rate: >= 0; a float, traced array or schedule of the step.

    Examples:
        >>> import jax.numpy as jnp
        >>> from fnopt import schedules, transforms
        >>> tx = transforms.scale_by_learning_rate(schedules.step_decay(1.0, 1, 0.5))
        >>> state = tx.init(None)
        >>> for _ in range(3):
        ...     u, state = tx.update(jnp.ones(1), state)
        >>> u.tolist(), state.hyperparams["learning_rate"].item()
        ([-0.25], 0.25)
    """
    hp = hypers("scale_by_learning_rate", learning_rate=learning_rate)
    step = per_group(lambda v, cd: -v["learning_rate"].astype(cd))

    def apply(updates, params, h: Resolved):
        def leaf(v, g):
            cd = compute_dtype(g)
            return (g.astype(cd) * step(v, cd)).astype(g.dtype)

        return h.map(leaf, None, updates, params=params)

    return _recording(hp, apply)


def global_norm(updates: optax.Updates, axis_name: str | None = None) -> jax.Array:
    """The L2 norm of all leaves together, in the default float dtype; with
    ``axis_name``, of the leaves of every shard along that mapped axis.

    The sum of squares overflows float32 once the norm passes ~1.8e19; only
    then (a ``lax.cond``, so the common case pays nothing) is the norm
    recomputed as ``m * sqrt(sum((g / m)^2))`` with ``m`` the largest
    magnitude, which is exact up to rounding for every finite gradient."""
    leaves = packed_leaves(updates)

    def sum_squares(scale=None):
        squares = as_float(0.0)
        for g in leaves:
            x = g if scale is None else g * scale.astype(g.dtype)
            squares = squares + as_float(jnp.sum(x * x))
        return squares if axis_name is None else jax.lax.psum(squares, axis_name)

    squares = sum_squares()

    def rescaled(_):
        largest = as_float(0.0)
        for g in leaves:
            largest = jnp.maximum(largest, as_float(jnp.max(jnp.abs(g), initial=0.0)))
        if axis_name is not None:
            largest = jax.lax.pmax(largest, axis_name)
        largest = jnp.where(jnp.isfinite(largest) & (largest > 0), largest, 1.0)
        return largest * jnp.sqrt(sum_squares(1 / largest))

    overflowed = jnp.isinf(squares)
    return jax.lax.cond(overflowed, rescaled, lambda _: jnp.sqrt(squares), None)


def clip_by_global_norm(
    max_norm: Hyper, *, axis_name: str | None = None
) -> optax.GradientTransformationExtraArgs:
    """Rescales the updates so that their global L2 norm is at most ``max_norm``:
    ``g * max_norm / max(norm, max_norm)``.

    Same as Optax's ``clip_by_global_norm``. torch's
    ``clip_grad_norm_`` divides by ``norm + 1e-6`` instead, so it shrinks
    slightly even a gradient whose norm is exactly ``max_norm``; fnopt does not.

    Args:
        max_norm: > 0; a float, traced array or schedule.
        axis_name: under ``shard_map`` / ``pmap`` (or a named ``vmap``) with
            the gradients sharded along this axis, the squared norm is summed
            over it (``psum``), so every shard is clipped by the global norm.
    """
    hp = hypers("clip_by_global_norm", max_norm=max_norm)

    def apply(updates, params, h: Resolved):
        max_value = h.single["max_norm"]
        norm = global_norm(updates, axis_name)
        scale = max_value / jnp.maximum(norm, max_value)
        factor = per_group(lambda v, cd: scale.astype(cd))

        def leaf(v, g):
            cd = compute_dtype(g)
            return (g.astype(cd) * factor(v, cd)).astype(g.dtype)

        return h.map(leaf, None, updates, params=params)

    return _recording(hp, apply)
