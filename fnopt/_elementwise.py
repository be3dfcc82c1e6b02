"""Transforms without buffers: weight decay (coupled and decoupled), the
learning rate, and global-norm clipping.

Each still keeps a ``count`` (so its hyperparameters can follow a schedule)
and records the values used by its last update.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._base import Hyper, next_count, resolve_all, zero_count
from ._checks import as_float
from ._common import check_hypers, check_shapes, compute_dtype, once_per_dtype, packed_leaves, require_params


class RecordState(NamedTuple):
    """State of a transform without buffers.

    Attributes:
        count: updates applied so far (int32, saturating).
        hyperparams: the hyperparameter values used by the last update.
    """

    count: jax.Array
    hyperparams: dict[str, jax.Array]


def _recording(hypers: dict[str, Hyper], apply) -> optax.GradientTransformationExtraArgs:
    """A transform whose update is ``apply(updates, params, values)``."""

    def init(params):
        del params
        return RecordState(zero_count(), resolve_all(hypers, zero_count()))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = resolve_all(hypers, state.count)
        return apply(updates, params, h), RecordState(next_count(state.count), h)

    return optax.GradientTransformationExtraArgs(init, update)


def _weight_decay(call: str, weight_decay: Hyper) -> optax.GradientTransformationExtraArgs:
    check_hypers(call, weight_decay=weight_decay)

    def apply(updates, params, h):
        require_params(call, params)
        check_shapes(call, updates, params)

        def leaf(g, p):
            cd = compute_dtype(g)
            return (g.astype(cd) + h["weight_decay"].astype(cd) * p.astype(cd)).astype(g.dtype)

        return jax.tree.map(leaf, updates, params)

    return _recording({"weight_decay": weight_decay}, apply)


def add_weight_decay(weight_decay: Hyper) -> optax.GradientTransformationExtraArgs:
    """Coupled L2 regularization: ``g + weight_decay * p``.

    Place it *before* the preconditioner (first in the chain), so the decay
    goes through momentum / adaptive scaling: torch's ``weight_decay=`` of
    ``SGD``, ``Adam``, ``RAdam``, ``Adagrad`` and ``RMSprop``. ``update``
    needs ``params``.

    Args:
        weight_decay: >= 0; a float, traced array or schedule.
    """
    return _weight_decay("add_weight_decay", weight_decay)


def add_decayed_weights(weight_decay: Hyper) -> optax.GradientTransformationExtraArgs:
    """Decoupled weight decay (AdamW): adds ``weight_decay * p`` to the
    *preconditioned* update.

    Place it after the preconditioner and before
    :func:`scale_by_learning_rate`, so the step becomes
    ``p - lr * (direction + weight_decay * p)``: torch ``AdamW``'s
    ``p *= 1 - lr * weight_decay`` followed by the Adam step. To exclude some
    leaves (biases, norms), wrap it: ``optax.masked(add_decayed_weights(wd),
    mask)``. ``update`` needs ``params``.

    Args:
        weight_decay: >= 0; a float, traced array or schedule.
    """
    return _weight_decay("add_decayed_weights", weight_decay)


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
    check_hypers("scale_by_learning_rate", learning_rate=learning_rate)

    def apply(updates, params, h):
        del params

        step = once_per_dtype(lambda cd: -h["learning_rate"].astype(cd))

        def leaf(g):
            cd = compute_dtype(g)
            return (g.astype(cd) * step(cd)).astype(g.dtype)

        return jax.tree.map(leaf, updates)

    return _recording({"learning_rate": learning_rate}, apply)


def global_norm(updates: optax.Updates, axis_name: str | None = None) -> jax.Array:
    """The L2 norm of all leaves together, in the default float dtype; with
    ``axis_name``, of the leaves of every shard along that mapped axis."""
    squares = as_float(0.0)
    for g in packed_leaves(updates):
        squares = squares + as_float(jnp.sum(g * g))
    if axis_name is not None:
        squares = jax.lax.psum(squares, axis_name)
    return jnp.sqrt(squares)


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
    check_hypers("clip_by_global_norm", max_norm=max_norm)

    def apply(updates, params, h):
        del params
        norm = global_norm(updates, axis_name)
        scale = h["max_norm"] / jnp.maximum(norm, h["max_norm"])

        factor = once_per_dtype(scale.astype)

        def leaf(g):
            cd = compute_dtype(g)
            return (g.astype(cd) * factor(cd)).astype(g.dtype)

        return jax.tree.map(leaf, updates)

    return _recording({"max_norm": max_norm}, apply)
