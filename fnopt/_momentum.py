"""Heavy-ball and Nesterov momentum with torch ``SGD``'s buffer semantics:
the primitive ``scale_by_momentum`` and the alias ``sgd``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import _fused, _step
from ._base import Hyper, next_count, per_group, zero_count
from ._common import check_nesterov, compute_dtype, hypers, is_zero, moment_like, storage_dtype, with_group_check
from ._elementwise import chain_stages, coupled_decay, flip_sign, scale_by_learning_rate
from ._chain import friendly


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


def momentum_coefficients(v, first, cd):
    """``(momentum, take)`` in ``cd`` from the values ``v``: ``take`` is
    ``1 - dampening``, and 1 on the ``first`` step. torch starts the buffer
    at the gradient itself, ``b_0 = g_0``: the buffer is zero until the first
    update (init; skipped steps do not count), so only dampening needs
    switching off on the first step."""
    m, d = v["momentum"].astype(cd), v["dampening"].astype(cd)
    return m, jnp.where(first, jnp.ones_like(d), 1 - d)


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
        mu_dtype: dtype of the buffer (default: the params' dtype).

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

        coef = per_group(lambda v, cd: momentum_coefficients(v, first, cd))

        def leaf(v, g, buf):
            cd = compute_dtype(g)
            m, take = coef(v, cd)
            g_c = g.astype(cd)
            new_buf = m * buf.astype(cd) + take * g_c
            out = g_c + m * new_buf if nesterov else new_buf
            return out.astype(g.dtype), new_buf.astype(buf.dtype)

        def fused(fn, values, leaves, others):
            # The buffers of a hyperparameter group and dtype in one kernel
            # (fnopt._fused); Nesterov's direction per leaf in XLA.
            def group(hv, idx):
                cd = compute_dtype(leaves[idx[0]])
                m, _ = k = coef(hv, cd)
                b = _fused.momentum_buffers(jnp.stack(k), [leaves[i] for i in idx], [others[0][i] for i in idx])
                return [(leaves[i] + m * b[j] if nesterov else b[j], b[j]) for j, i in enumerate(idx)]

            return _fused.run_groups(fn, values, leaves, others, group)

        out, trace = h.map(leaf, 2, updates, state.trace, params=params,
                           fused=fused if _fused.enabled() and not _fused.suspended() else None)
        return out, ScaleByMomentumState(next_count(state.count), trace, h.record)

    return optax.GradientTransformationExtraArgs(init, update)


# ------------------------------------------------------------------ alias


@friendly
def sgd(
    learning_rate: Hyper = 1e-3,
    momentum: Hyper = 0.0,
    *,
    nesterov: bool = False,
    dampening: Hyper = 0.0,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
    maximize: bool = False,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Stochastic gradient descent with momentum: torch ``SGD``.

    With ``g_t`` the gradient plus ``weight_decay * p_t`` (coupled L2)::

        b_0 = g_0,   b_t = momentum * b_{t-1} + (1 - dampening) * g_t
        d_t = g_t + momentum * b_t  (nesterov)  or  b_t
        p_{t+1} = p_t - lr_t * d_t

    Without momentum, ``d_t = g_t``. All of ``learning_rate``, ``momentum``,
    ``dampening`` and ``weight_decay`` may be schedules, which makes the
    classic recipes one-liners (see the examples).

    Args:
        learning_rate: >= 0; float, traced array, schedule or group tree
            (default 1e-3, torch 2.13's).
        momentum: in [0, 1).
        nesterov: Nesterov momentum (static); needs ``momentum > 0`` and
            ``dampening == 0`` (torch's rule).
        dampening: in [0, 1].
        weight_decay: coupled L2 coefficient, >= 0.
        mask: which leaves get weight decay, Optax's meaning: a pytree of
            bools (a prefix of the params) or a callable ``params -> bools``;
            ``None`` decays every leaf.
        maximize: ascend the objective instead (torch's ``maximize``): the
            gradient is negated before anything else.
        mu_dtype: dtype of the momentum buffer (default: the params' dtype).

    Returns:
        ``chain(add_weight_decay, scale_by_momentum, scale_by_learning_rate)``
        (stages whose hyperparameter is the Python number 0 left out). The
        momentum buffer is in the params' dtype.

    References:
        Sutskever, Martens, Dahl & Hinton, On the importance of initialization
        and momentum in deep learning, ICML 2013,
        https://proceedings.mlr.press/v28/sutskever13.html

    Examples:
        >>> import jax, jax.numpy as jnp, optax, fnopt
        >>> params = jnp.array([1.0, -2.0])
        >>> opt = fnopt.sgd(0.1, momentum=0.9)
        >>> state = opt.init(params)
        >>> updates, state = opt.update(jax.grad(lambda p: p @ p)(params), state, params)
        >>> [round(x, 4) for x in optax.apply_updates(params, updates).tolist()]
        [0.8, -1.6]

        Super-convergence: one-cycle LR with momentum moving the opposite way
        (torch ``OneCycleLR(cycle_momentum=True)``), SGDR warm restarts, and
        cyclical LR with cyclical momentum (torch ``CyclicLR``):

        >>> from fnopt import schedules
        >>> opt = fnopt.sgd(schedules.one_cycle(0.4, total_steps=1000), momentum=schedules.one_cycle_momentum(1000))
        >>> opt = fnopt.sgd(schedules.cosine_warm_restarts(0.1, first_period=10, period_mult=2), momentum=0.9)
        >>> opt = fnopt.sgd(schedules.cyclic(1e-3, 0.1, step_size_up=500),
        ...                 momentum=schedules.cyclic_momentum(0.8, 0.9, step_size_up=500))
        >>> {k: round(float(v), 3) for k, v in fnopt.hyperparams(opt.init(params)).items()}
        {'momentum': 0.9, 'dampening': 0.0, 'learning_rate': 0.001, 'effective_learning_rate': 0.001}
    """
    call = "sgd"
    hp = hypers(call, learning_rate=learning_rate, momentum=momentum, dampening=dampening, weight_decay=weight_decay)
    check_nesterov(call, nesterov, momentum, dampening)
    with_momentum = not is_zero(momentum)
    mu_dtype = storage_dtype(call, mu_dtype)
    stages = (
        flip_sign(call, maximize),
        coupled_decay(call, weight_decay, mask),
        scale_by_momentum(momentum, nesterov=nesterov, dampening=dampening, mu_dtype=mu_dtype) if with_momentum else None,
        scale_by_learning_rate(learning_rate),
    )
    tx = with_group_check(hp, chain_stages(*stages))
    if hp.grouped or mask is not None or not with_momentum:
        return tx
    flip, coupled, momentum_at, lr_at = _step.stage_indices(*stages)

    def coefficients(old, new, cd):
        # fnopt.apply_gradients' whole step: the kernel's arithmetic is the chain's
        mom, take = momentum_coefficients(new[momentum_at].hyperparams, old[momentum_at].count == 0, cd)
        nlr = -_step.recorded(new, lr_at, "learning_rate").astype(cd)
        return (mom, take, nlr, _step.recorded(new, coupled, "weight_decay"), *_step.present(flip, coupled), float(nesterov))

    return _step.register(tx, _step.Route("momentum_step", momentum_at, ("trace",), coefficients))
