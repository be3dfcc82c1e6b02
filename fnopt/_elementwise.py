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

from ._base import Hyper, Hypers, Resolved, check_shapes, next_count, per_group, zero_count
from ._checks import ArgumentTypeError, as_float, check_flag
from ._common import abs2, compute_dtype, hypers, is_zero, packed_leaves, require_params


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


_TINY = 2.0**-80  # pre-scale when the sum of squares overflows: exact (a power of two)


def scaled_global_norm(updates: optax.Updates, axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
    """``(s, n)`` with ``n = s * norm``: the L2 norm of all leaves together,
    in the default float dtype, pre-scaled by ``s`` so that it is finite for
    every finite gradient; with ``axis_name``, over every shard along that
    mapped axis.

    ``s = 1`` unless the sum of squares overflows (a norm past ~1.8e19 in
    float32); only then (a ``lax.cond``: the common case pays nothing) is it
    recomputed on the leaves times ``s = 2**-80``. Elements more than
    ``2**80`` times below float32's largest flush to zero in that rare
    recomputation, which moves the norm by far less than its rounding."""
    leaves = packed_leaves(updates)

    def sum_squares(scale=None):
        squares = as_float(0.0)
        for g in leaves:
            x = g if scale is None else g * jnp.asarray(scale, g.dtype)
            squares = squares + as_float(jnp.sum(abs2(x)))
        return squares if axis_name is None else jax.lax.psum(squares, axis_name)

    squares = sum_squares()
    overflowed = jnp.isinf(squares)
    squares = jax.lax.cond(overflowed, lambda _: sum_squares(_TINY), lambda _: squares, None)
    return jnp.where(overflowed, _TINY, 1.0).astype(squares.dtype), jnp.sqrt(squares)


def global_norm(updates: optax.Updates, axis_name: str | None = None) -> jax.Array:
    """The L2 norm of all leaves together (``inf`` only when the norm itself
    exceeds the float dtype's range); see :func:`scaled_global_norm`."""
    scale, norm = scaled_global_norm(updates, axis_name)
    return norm / scale


def clip_by_global_norm(
    max_norm: Hyper, *, axis_name: str | None = None
) -> optax.GradientTransformationExtraArgs:
    """Rescales the updates so that their global L2 norm is at most ``max_norm``:
    ``g * max_norm / max(norm, max_norm)``.

    Same as Optax's ``clip_by_global_norm``, and right for every finite
    gradient (Optax's squared norm overflows past ~1.8e19 in float32 and
    then returns zeros). torch's ``clip_grad_norm_`` divides by
    ``norm + 1e-6`` instead, so it shrinks slightly even a gradient whose
    norm is exactly ``max_norm``; fnopt does not.

    Args:
        max_norm: > 0; a float, traced array or schedule (one value for the
            whole update: no group tree).
        axis_name: under ``shard_map`` / ``pmap`` (or a named ``vmap``) with
            the gradients sharded along this axis, the squared norm is summed
            over it (``psum``), so every shard is clipped by the global norm.
    """
    hp = hypers("clip_by_global_norm", max_norm=max_norm)

    def apply(updates, params, h: Resolved):
        max_value = h.single["max_norm"]
        scale, norm = scaled_global_norm(updates, axis_name)  # norm = scale * true norm
        clip = norm > max_value * scale
        # g * pre * post: pre = scale keeps the product in range when the
        # norm itself is near float32's largest value.
        pre = jnp.where(clip, scale, 1.0)
        post = jnp.where(clip, max_value / norm, 1.0)
        factors = per_group(lambda v, cd: (pre.astype(cd), post.astype(cd)))

        def leaf(v, g):
            cd = compute_dtype(g)
            a, b = factors(v, cd)
            return (g.astype(cd) * a * b).astype(g.dtype)

        return h.map(leaf, None, updates, params=params)

    return _recording(hp, apply)


# ---------------------------------------------- stages the aliases share


def flip_sign(call: str, maximize: bool):
    """torch's ``maximize=True``: the gradient is negated first (before any
    weight decay is added), or ``None``."""
    check_flag(call, "maximize", maximize)
    if not maximize:
        return None

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is not None:
            check_shapes(call, updates, params)
        return jax.tree.map(jnp.negative, updates), state

    return optax.GradientTransformationExtraArgs(init, update)


def chain_stages(*stages) -> optax.GradientTransformationExtraArgs:
    """``optax.chain`` of the stages that are not ``None`` (left out: a
    hyperparameter given as the Python number 0)."""
    return optax.chain(*(s for s in stages if s is not None))


def coupled_decay(call: str, weight_decay: Hyper, mask: Any):
    """An alias's torch-style L2 stage, or ``None`` for ``weight_decay=0``."""
    check_mask(call, mask)
    return None if is_zero(weight_decay) else add_weight_decay(weight_decay, mask=mask)


def decoupled_decay(call: str, weight_decay: Hyper, mask: Any):
    """An alias's AdamW-style decay stage, or ``None`` for ``weight_decay=0``."""
    check_mask(call, mask)
    return None if is_zero(weight_decay) else add_decayed_weights(weight_decay, mask=mask)
