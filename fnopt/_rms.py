"""Accumulated and averaged squared gradients with torch's numerics:
Adagrad and RMSprop, their primitives and their aliases.

The primitives never apply the learning rate; the aliases chain them with
(coupled) weight decay and the learning rate. Every numeric hyperparameter
may be a float, a traced array, a schedule of the step (evaluated at
``count``, the number of updates already applied) or a group tree of those.
Arithmetic runs in at least float32 (bf16 params are updated in float32 and
stored back in bf16); the update comes out in the incoming updates' dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._base import Hyper, next_count, per_group, zero_count
from ._checks import check_flag
from ._common import (
    abs2,
    compute_dtype,
    fill_like,
    hypers,
    is_zero,
    may_be_zero,
    real_dtype,
    moment_like,
    safe_divide,
    moment_dtypes,
    storage_dtype,
    with_group_check,
)
from ._elementwise import chain_stages, coupled_decay, flip_sign, scale_by_learning_rate
from ._momentum import scale_by_momentum
from ._chain import friendly

# ----------------------------------------------------------------- Adagrad


class ScaleByAdagradState(NamedTuple):
    """State of :func:`scale_by_adagrad`.

    Attributes:
        count: updates applied so far (int32, saturating).
        sum_of_squares: running sum of squared gradients, in the params' dtype.
        hyperparams: ``initial_accumulator_value`` (used at init) and ``eps``.
    """

    count: jax.Array
    sum_of_squares: optax.Updates
    hyperparams: dict[str, jax.Array]


def scale_by_adagrad(
    initial_accumulator_value: Hyper = 0.0, eps: Hyper = 1e-10, *, nu_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
    """torch ``Adagrad``'s scaling: ``s_t = s_{t-1} + g_t^2``, update
    ``g_t / (sqrt(s_t) + eps)`` with ``s_{-1} = initial_accumulator_value``.

    ``eps`` is added outside the square root, as in torch (Optax's
    ``scale_by_rss`` adds it inside; the two agree for ``eps=0``).

    Args:
        initial_accumulator_value: starting value of the sum, >= 0 (a
            schedule is evaluated at step 0).
        eps: added to the root, >= 0.
        nu_dtype: dtype of the sum (default: the params' real dtype; a
            complex param accumulates ``|g|^2``).
    """
    call = "scale_by_adagrad"
    nu_dtype = storage_dtype(call, nu_dtype, "nu_dtype")
    hp = hypers(call, initial_accumulator_value=initial_accumulator_value, eps=eps)
    zero_denominator = may_be_zero(initial_accumulator_value) and may_be_zero(eps)

    def init(params):
        start = hp.at(zero_count(), params)
        # The accumulator of each group starts at its own value (a schedule
        # is read at step 0).
        sums = start.map(
            lambda v, p: fill_like(p, v["initial_accumulator_value"], nu_dtype or real_dtype(p)), None, params
        )
        return ScaleByAdagradState(zero_count(), sums, start.record)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)

        def leaf(v, g, s):
            cd = compute_dtype(g)
            g_c = g.astype(cd)
            s_new = s.astype(real_dtype(cd)) + abs2(g_c)
            out = safe_divide(g_c, jnp.sqrt(s_new) + v["eps"].astype(real_dtype(cd)), zero_denominator)
            return out.astype(g.dtype), s_new.astype(s.dtype)

        out, sums = h.map(leaf, 2, updates, state.sum_of_squares, params=params)
        # The initial value is only used at init: record it as it was then.
        record = {**h.record, **{k: x for k, x in state.hyperparams.items() if k.endswith("initial_accumulator_value")}}
        return out, ScaleByAdagradState(next_count(state.count), sums, record)

    return optax.GradientTransformationExtraArgs(init, update)


# ----------------------------------------------------------------- RMSprop


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`.

    Attributes:
        count: updates applied so far (int32, saturating).
        square_avg: EMA of squared gradients, in the params' dtype.
        grad_avg: EMA of gradients (``centered`` only, else ``None``), in the
            params' dtype.
        hyperparams: ``alpha`` and ``eps`` used by the last update.
    """

    count: jax.Array
    square_avg: optax.Updates
    grad_avg: optax.Updates | None
    hyperparams: dict[str, jax.Array]


def scale_by_rms(
    alpha: Hyper = 0.99, eps: Hyper = 1e-8, *, centered: bool = False, mu_dtype: Any = None, nu_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
    """torch ``RMSprop``'s denominator: ``v_t = alpha v_{t-1} + (1 - alpha) g_t^2``
    (``v_{-1} = 0``), update ``g_t / (sqrt(v_t) + eps)``.

    With ``centered``, also ``a_t = alpha a_{t-1} + (1 - alpha) g_t`` and the
    update is ``g_t / (sqrt(v_t - a_t^2) + eps)``. ``v_t - a_t^2`` is clamped
    at 0 (it can only go negative by rounding; torch would give NaN there).

    Args:
        alpha: smoothing constant in [0, 1].
        eps: added to the root, >= 0 (outside the square root, as torch;
            Optax's ``rmsprop(eps_in_sqrt=False)`` is the same).
        centered: normalize by the estimated variance (static).
        mu_dtype: dtype of the gradient average (``centered``; default: the
            params' dtype).
        nu_dtype: dtype of the squared-gradient average (default: the
            params' real dtype; a complex param averages ``|g|^2``).
    """
    call = "scale_by_rms"
    mu_dtype = storage_dtype(call, mu_dtype)
    nu_dtype = storage_dtype(call, nu_dtype, "nu_dtype")
    hp = hypers(call, alpha=alpha, eps=eps)
    check_flag(call, "centered", centered)
    zero_denominator = may_be_zero(eps)

    def init(params):
        grad_avg = moment_like(params, mu_dtype) if centered else None
        return ScaleByRmsState(zero_count(), moment_like(params, nu_dtype, real=True), grad_avg, hp.record(zero_count(), params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)

        @per_group
        def coef(v, cd):
            a, a_r = v["alpha"].astype(cd), v["alpha"].astype(real_dtype(cd))
            return a, 1 - a, a_r, 1 - a_r, v["eps"].astype(real_dtype(cd))

        def leaf(v, g, sq, ga):
            cd = compute_dtype(g)
            a, c, a_r, c_r, e = coef(v, cd)
            g_c = g.astype(cd)
            sq_new = a_r * sq.astype(real_dtype(cd)) + c_r * abs2(g_c)
            if centered:
                ga_new = a * ga.astype(cd) + c * g_c
                var = jnp.maximum(sq_new - abs2(ga_new), 0)
                ga_out = ga_new.astype(ga.dtype)
            else:
                var, ga_out = sq_new, ga
            out = safe_divide(g_c, jnp.sqrt(var) + e, zero_denominator)
            return out.astype(g.dtype), sq_new.astype(sq.dtype), ga_out

        grad_avg = state.grad_avg if centered else state.square_avg
        out, sq, ga = h.map(leaf, 3, updates, state.square_avg, grad_avg, params=params)
        new_state = ScaleByRmsState(next_count(state.count), sq, ga if centered else None, h.record)
        return out, new_state

    return optax.GradientTransformationExtraArgs(init, update)


# ------------------------------------------------------------------ aliases


@friendly
def adagrad(
    learning_rate: Hyper = 1e-2,
    initial_accumulator_value: Hyper = 0.0,
    eps: Hyper = 1e-10,
    *,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
    maximize: bool = False,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Adagrad: torch ``Adagrad``.

    With ``g_t`` the gradient plus ``weight_decay * p_t``::

        s_t = s_{t-1} + g_t^2     (s_{-1} = initial_accumulator_value)
        p_{t+1} = p_t - lr_t * g_t / (sqrt(s_t) + eps)

    torch's ``lr_decay`` is a schedule here: ``learning_rate=lambda t: lr / (1
    + t * lr_decay)``. Optax's ``adagrad`` puts ``eps`` inside the root and
    defaults to ``initial_accumulator_value=0.1``; the two agree for ``eps=0``.

    Args:
        learning_rate: >= 0; float, traced array or schedule.
        initial_accumulator_value: starting sum of squares, >= 0.
        eps: added to the root, >= 0.
        weight_decay: coupled L2 coefficient, >= 0.
        mask: which leaves get weight decay, Optax's meaning: a pytree of
            bools (a prefix of the params) or a callable ``params -> bools``;
            ``None`` decays every leaf.
        maximize: ascend the objective instead (torch's ``maximize``): the
            gradient is negated before anything else.
        nu_dtype: dtype of the sum of squares (default: the params' real dtype).

    Returns:
        ``chain(add_weight_decay, scale_by_adagrad, scale_by_learning_rate)``;
        the sum of squares is in the params' dtype.

    References:
        Duchi, Hazan & Singer, Adaptive Subgradient Methods for Online Learning
        and Stochastic Optimization, JMLR 2011,
        https://jmlr.org/papers/v12/duchi11a.html

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> opt = fnopt.adagrad(0.5)
        >>> params = jnp.array([1.0])
        >>> updates, _ = opt.update(jnp.array([4.0]), opt.init(params), params)
        >>> [round(x, 4) for x in updates.tolist()]  # -0.5 * 4 / sqrt(16)
        [-0.5]
    """
    call = "adagrad"
    hp = hypers(call, learning_rate=learning_rate, initial_accumulator_value=initial_accumulator_value, eps=eps, weight_decay=weight_decay)
    nu_dtype = storage_dtype(call, nu_dtype, "nu_dtype")
    return with_group_check(hp, chain_stages(
        flip_sign(call, maximize),
        coupled_decay(call, weight_decay, mask),
        scale_by_adagrad(initial_accumulator_value, eps, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    ))


@friendly
def rmsprop(
    learning_rate: Hyper = 1e-2,
    alpha: Hyper = 0.99,
    eps: Hyper = 1e-8,
    momentum: Hyper = 0.0,
    *,
    centered: bool = False,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
    maximize: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """RMSprop: torch ``RMSprop``, with optional momentum and centering.

    With ``g_t`` the gradient plus ``weight_decay * p_t``::

        v_t = alpha v_{t-1} + (1 - alpha) g_t^2
        a_t = alpha a_{t-1} + (1 - alpha) g_t                   (centered)
        d_t = g_t / (sqrt(v_t - a_t^2) + eps)   or   g_t / (sqrt(v_t) + eps)
        b_t = momentum * b_{t-1} + d_t  (b_{-1} = 0),  p_{t+1} = p_t - lr_t * b_t

    (``b_t = d_t`` without momentum). Optax's ``rmsprop`` is the same with
    ``decay=alpha, eps_in_sqrt=False`` (its defaults are ``decay=0.9`` and
    ``eps`` inside the root).

    Args:
        learning_rate: >= 0; float, traced array or schedule.
        alpha: smoothing constant in [0, 1].
        eps: added to the root, >= 0.
        momentum: in [0, 1).
        centered: divide by the estimated standard deviation (static).
        weight_decay: coupled L2 coefficient, >= 0.
        mask: which leaves get weight decay, Optax's meaning: a pytree of
            bools (a prefix of the params) or a callable ``params -> bools``;
            ``None`` decays every leaf.
        maximize: ascend the objective instead (torch's ``maximize``): the
            gradient is negated before anything else.
        mu_dtype: dtype of the momentum buffer and (``centered``) the
            gradient average (default: the params' dtype).
        nu_dtype: dtype of the squared-gradient average (default: the
            params' real dtype).

    Returns:
        ``chain(add_weight_decay, scale_by_rms, scale_by_momentum,
        scale_by_learning_rate)``; buffers in the params' dtype.

    References:
        Hinton, Neural Networks for Machine Learning, lecture 6e, 2012;
        Graves, Generating Sequences With Recurrent Neural Networks (centered),
        2013, https://arxiv.org/abs/1308.0850

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> opt = fnopt.rmsprop(0.01, alpha=0.75, eps=0.0)
        >>> params = jnp.array([1.0])
        >>> updates, _ = opt.update(jnp.array([3.0]), opt.init(params), params)
        >>> [round(x, 4) for x in updates.tolist()]  # -0.01 * 3 / sqrt(0.25 * 9)
        [-0.02]
    """
    call = "rmsprop"
    hp = hypers(call, learning_rate=learning_rate, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay)
    check_flag(call, "centered", centered)
    dtypes = moment_dtypes(call, mu_dtype, nu_dtype)
    return with_group_check(hp, chain_stages(
        flip_sign(call, maximize),
        coupled_decay(call, weight_decay, mask),
        scale_by_rms(alpha, eps, centered=centered, **dtypes),
        None if is_zero(momentum) else scale_by_momentum(momentum, mu_dtype=dtypes["mu_dtype"]),
        scale_by_learning_rate(learning_rate),
    ))
