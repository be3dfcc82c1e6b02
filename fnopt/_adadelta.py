"""Adadelta with torch's numerics: a primitive and its alias.

Arithmetic runs in at least float32; the update comes out in the incoming
updates' dtype. Complex params follow Optax's convention (real running
averages of ``|g|^2`` and ``|delta|^2``), where torch treats the real and
imaginary parts as two real params: the two agree on real params only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._base import Hyper, Hypers, next_count, per_group, zero_count
from ._checks import check_flag
from ._common import (
    RULES,
    abs2,
    hypers,
    with_group_check,
    compute_dtype,
    safe_divide,
    may_be_zero,
    storage_dtype,
    moment_like,
    real_dtype,
)
from ._elementwise import chain_stages, coupled_decay, flip_sign, scale_by_learning_rate
from ._chain import friendly

LOCAL_RULES = {**RULES, "rho": {"low": 0.0, "high": 1.0}}


class ScaleByAdadeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`.

    Attributes:
        count: updates applied so far (int32, saturating).
        square_avg: running average of ``|g|^2``, in ``nu_dtype`` (default:
            the params' real dtype).
        acc_delta: running average of ``|delta|^2``, in ``nu_dtype``.
        hyperparams: ``rho`` and ``eps`` used by the last update.
    """

    count: jax.Array
    square_avg: optax.Updates
    acc_delta: optax.Updates
    hyperparams: dict[str, jax.Array]


def _adadelta(call, rho, eps, nu_dtype):
    hp = Hypers(call, LOCAL_RULES, rho=rho, eps=eps)
    nu_dtype = storage_dtype(call, nu_dtype, "nu_dtype")
    zero_denominator = may_be_zero(eps)

    def init(params):
        record = hp.record(zero_count(), params)
        # Two distinct buffers (one array in two places could not be donated).
        square_avg, acc_delta = (moment_like(params, nu_dtype, real=True) for _ in range(2))
        return ScaleByAdadeltaState(zero_count(), square_avg, acc_delta, record)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)

        @per_group
        def coef(v, rd):
            rho = v["rho"].astype(rd)
            return rho, 1 - rho, v["eps"].astype(rd)

        def leaf(v, g, sq, acc):
            cd = compute_dtype(g)
            rd = real_dtype(cd)
            rho, c, e = coef(v, rd)
            g_c = g.astype(cd)
            sq_new = rho * sq.astype(rd) + c * abs2(g_c)
            # torch: delta = sqrt(acc + eps) / sqrt(sq + eps) * g, with the old acc.
            ratio = safe_divide(jnp.sqrt(acc.astype(rd) + e), jnp.sqrt(sq_new + e), zero_denominator)
            delta = ratio.astype(cd) * g_c
            acc_new = rho * acc.astype(rd) + c * abs2(delta)
            return delta.astype(g.dtype), sq_new.astype(sq.dtype), acc_new.astype(acc.dtype)

        out, sq, acc = h.map(leaf, 3, updates, state.square_avg, state.acc_delta, params=params)
        return out, ScaleByAdadeltaState(next_count(state.count), sq, acc, h.record)

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_adadelta(rho: Hyper = 0.9, eps: Hyper = 1e-6, *, nu_dtype: Any = None) -> optax.GradientTransformationExtraArgs:
    """torch ``Adadelta``'s direction (without the learning rate).

    ``s_t = rho s_{t-1} + (1 - rho) |g_t|^2``,
    ``delta_t = sqrt(a_{t-1} + eps) / sqrt(s_t + eps) * g_t`` (the update) and
    ``a_t = rho a_{t-1} + (1 - rho) |delta_t|^2``, with ``s`` and ``a``
    starting at 0. ``eps`` sits inside both roots, as in torch and Optax. See
    :func:`fnopt.adadelta`.

    Args:
        rho: decay of both running averages, in [0, 1]; float, traced array,
            schedule or group tree.
        eps: added inside both roots, >= 0 (with ``eps = 0`` nothing moves:
            ``a`` stays 0).
        nu_dtype: dtype of both running averages (default: the params' real dtype).
    """
    return _adadelta("scale_by_adadelta", rho, eps, nu_dtype)


@friendly
def adadelta(
    learning_rate: Hyper = 1.0,
    rho: Hyper = 0.9,
    eps: Hyper = 1e-6,
    *,
    weight_decay: Hyper = 0.0,
    maximize: bool = False,
    mask: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Adadelta: torch ``Adadelta``.

    With ``g_t`` the gradient (negated with ``maximize``) plus
    ``weight_decay * p_t`` (coupled L2), and ``s``, ``a`` starting at 0::

        s_t = rho s_{t-1} + (1 - rho) g_t^2
        delta_t = sqrt(a_{t-1} + eps) / sqrt(s_t + eps) * g_t
        a_t = rho a_{t-1} + (1 - rho) delta_t^2
        p_{t+1} = p_t - lr_t * delta_t

    Zeiler's method has no learning rate (torch's default ``lr=1.0`` is that
    method); a schedule here scales each step. Same as Optax's ``adadelta``
    with ``learning_rate=1.0`` up to rounding on real params. Complex params
    use ``|g|^2`` and ``|delta|^2`` (torch treats real and imaginary parts as
    separate real params; Optax squares the complex gradient, which is not a
    magnitude).

    Args:
        learning_rate: >= 0; float, traced array, schedule or group tree
            (default 1.0, torch's).
        rho: decay of both running averages, in [0, 1].
        eps: added inside both roots, >= 0.
        weight_decay: coupled L2 coefficient, >= 0.
        maximize: ascend the objective instead (static).
        mask: which leaves get weight decay, Optax's meaning: a pytree of
            bools (a prefix of the params) or a callable ``params -> bools``;
            ``None`` decays every leaf.
        nu_dtype: dtype of both running averages (default: the params' real dtype).

    Returns:
        ``chain(add_weight_decay, scale_by_adadelta, scale_by_learning_rate)``;
        ``maximize`` prepends a negation.

    References:
        Zeiler, ADADELTA: An Adaptive Learning Rate Method, 2012,
        https://arxiv.org/abs/1212.5701

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> params = jnp.array([1.0])
        >>> opt = fnopt.adadelta(rho=0.75, eps=1e-2)
        >>> updates, _ = opt.update(jnp.array([0.2]), opt.init(params), params)
        >>> [round(x, 4) for x in updates.tolist()]  # -sqrt(0.01) / sqrt(0.25 * 0.04 + 0.01) * 0.2
        [-0.1414]
    """
    call = "adadelta"
    hp = hypers(call, learning_rate=learning_rate, weight_decay=weight_decay)
    check_flag(call, "maximize", maximize)
    return with_group_check(hp, chain_stages(
        flip_sign(call, maximize),
        coupled_decay(call, weight_decay, mask),
        _adadelta(call, rho, eps, nu_dtype),
        scale_by_learning_rate(learning_rate),
    ))
