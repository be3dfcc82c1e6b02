"""Heavy-ball and Nesterov momentum with torch ``SGD``'s buffer semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._base import Hyper, next_count, per_group, zero_count
from ._common import check_nesterov, compute_dtype, hypers, moment_like, storage_dtype


class ScaleByMomentumState(NamedTuple):
    """State of :func:`scale_by_momentum`.

    Attributes:
        count: updates applied so far (int32, saturating).
        trace: the momentum buffer, in ``mu_dtype`` (default: the params' dtype).
        hyperparams: ``momentum`` and ``dampening`` used by the last update.
    """

    count: jax.Array
    trace: optax.Updates
    hyperparams: dict[str, jax.Array]


def scale_by_momentum(
    momentum: Hyper = 0.9,
    *,
    nesterov: bool = False,
    dampening: Hyper = 0.0,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Momentum with torch ``SGD``'s buffer: ``b_0 = g_0``, then
    ``b_t = momentum * b_{t-1} + (1 - dampening) * g_t``.

    The update is ``b_t``, or ``g_t + momentum * b_t`` with ``nesterov``.
    Dampening is not applied on the first step (the buffer starts as the
    gradient itself), as in torch. Arithmetic runs in at least float32; the
    update comes out in the incoming updates' dtype.

    Args:
        momentum: in [0, 1); a float, traced array or schedule of the step.
        nesterov: Nesterov momentum (static). Like torch, requires
            ``momentum > 0`` and ``dampening == 0``.
        dampening: in [0, 1]; a float, traced array or schedule.
        mu_dtype: dtype of the buffer for real params (default: the params'
            dtype; complex params keep theirs).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; unknown extra arguments
        to ``update`` are ignored.

    Examples:
        >>> import jax.numpy as jnp
        >>> from fnopt import transforms
        >>> tx = transforms.scale_by_momentum(0.5)
        >>> state = tx.init(jnp.zeros(2))
        >>> u, state = tx.update(jnp.ones(2), state)
        >>> u, state = tx.update(jnp.ones(2), state)
        >>> u.tolist()
        [1.5, 1.5]
    """
    call = "scale_by_momentum"
    hp = hypers(call, momentum=momentum, dampening=dampening)
    check_nesterov(call, nesterov, momentum, dampening)
    mu_dtype = storage_dtype(call, mu_dtype)

    def init(params):
        trace = moment_like(params, mu_dtype)
        return ScaleByMomentumState(zero_count(), trace, hp.record(zero_count(), params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)
        first = state.count == 0

        @per_group
        def coef(v, cd):
            # torch starts the buffer at the gradient itself, b_0 = g_0: the
            # buffer is zero until the first update (init; skipped steps do not
            # count), so only dampening needs switching off on the first step.
            m, d = v["momentum"].astype(cd), v["dampening"].astype(cd)
            return m, jnp.where(first, jnp.ones_like(d), 1 - d)

        def leaf(v, g, buf):
            cd = compute_dtype(g)
            m, take = coef(v, cd)
            g_c = g.astype(cd)
            new_buf = m * buf.astype(cd) + take * g_c
            out = g_c + m * new_buf if nesterov else new_buf
            return out.astype(g.dtype), new_buf.astype(buf.dtype)

        out, trace = h.map(leaf, 2, updates, state.trace, params=params)
        return out, ScaleByMomentumState(next_count(state.count), trace, h.record)

    return optax.GradientTransformationExtraArgs(init, update)
