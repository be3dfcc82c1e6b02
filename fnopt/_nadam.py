"""Adam's relatives with torch's numerics: NAdam (Nesterov momentum with
Dozat's momentum schedule, and NAdamW) and Adamax (the infinity norm).

Primitives and their aliases. Arithmetic runs in at least float32; the
update comes out in the incoming updates' dtype. Complex params follow
Optax's convention (a complex first moment, a real second moment of
``|g|^2``), where torch treats the real and imaginary parts as two real
params (``view_as_real``): the two agree on real params only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._base import Hyper, Hypers, first_of_groups, leaf_groups, next_count, per_group, zero_count
from ._checks import as_float, check_flag, float_dtype
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
from ._elementwise import chain_stages, coupled_decay, decoupled_decay, flip_sign, scale_by_learning_rate
from ._chain import friendly

LOCAL_RULES = {**RULES, "momentum_decay": {"low": 0.0}}


# ------------------------------------------------------------------- NAdam


class ScaleByNadamState(NamedTuple):
    """State of :func:`scale_by_nadam`.

    Attributes:
        count: updates applied so far (int32, saturating).
        mu: first moment EMA, in ``mu_dtype`` (default: the params' dtype).
        nu: second moment EMA (of ``|g|^2``), in ``nu_dtype`` (default: the
            params' real dtype).
        mu_product: the product ``mu_1 ... mu_t`` of the momentum schedule
            so far (torch's ``state["mu_product"]``), a tuple of scalars in
            the default float dtype: one per group of ``b1`` and
            ``momentum_decay`` (one in all when neither is a group tree), in
            the order the groups first occur among the params' leaves. torch
            keeps it per param, but the params of a group share its values;
            one per leaf would cost a kernel per leaf in every step.
        hyperparams: ``b1``, ``b2``, ``eps``, ``momentum_decay`` used by the
            last update.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    mu_product: optax.Updates
    hyperparams: dict[str, jax.Array]


# The hyperparameters NAdam's momentum product depends on.
_MOMENTUM = ("b1", "momentum_decay")


def _nadam(call, b1, b2, eps, momentum_decay, mu_dtype, nu_dtype):
    hp = Hypers(call, LOCAL_RULES, b1=b1, b2=b2, eps=eps, momentum_decay=momentum_decay)
    mu_dtype = storage_dtype(call, mu_dtype, "mu_dtype")
    nu_dtype = storage_dtype(call, nu_dtype, "nu_dtype")
    zero_denominator = may_be_zero(eps)

    def init(params):
        products = tuple(jnp.ones([], float_dtype()) for _ in range(leaf_groups(params, hp, names=_MOMENTUM)[1]))
        return ScaleByNadamState(
            zero_count(),
            moment_like(params, mu_dtype),
            moment_like(params, nu_dtype, real=True),
            products,
            hp.record(zero_count(), params),
        )

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)
        t = as_float(state.count) + 1.0

        @per_group
        def momentum(v, _):
            # Dozat's momentum schedule at t and t + 1, with this step's b1 and
            # momentum_decay (torch's mu and mu_next), in the default float dtype.
            b1, psi = v["b1"], v["momentum_decay"]
            return b1 * (1 - 0.5 * 0.96 ** (t * psi)), b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))

        @per_group
        def coef(v, dt):
            b1, b2 = v["b1"], v["b2"]
            return tuple(x.astype(dt) for x in (b1, 1 - b1, b2, 1 - b2, jax.lax.rsqrt(1 - b2**t), v["eps"]))

        # One product mu_1 ... mu_t per momentum group, updated once per step
        # (its leaves share it); `h.map` visits the leaves in flattening order.
        groups, n_groups = leaf_groups(updates, hp, names=_MOMENTUM)
        old = tuple(state.mu_product)
        if len(old) != n_groups:
            raise ValueError(
                f"`{call}.update`: the state holds {len(old)} momentum products but the updates make "
                f"{n_groups} groups of b1 and momentum_decay; use the state `init` made for these params"
            )
        firsts = first_of_groups(groups, n_groups, h.per_leaf(len(groups)))
        new = tuple(product * momentum(v, None)[0] for product, v in zip(old, firsts))
        group_of_leaf = iter(groups)

        def leaf(v, g, m, n):
            cd = compute_dtype(g)
            rd = real_dtype(cd)
            mu, mu_next = momentum(v, None)
            product = new[next(group_of_leaf)]
            take_g = ((1 - mu) / (1 - product)).astype(cd)
            take_m = (mu_next / (1 - product * mu_next)).astype(cd)
            b1, c1 = coef(v, cd)[:2]  # complex for complex params
            b2, c2, inv_bc2_sqrt, e = coef(v, rd)[2:]
            g_c = g.astype(cd)
            m_new = b1 * m.astype(cd) + c1 * g_c
            n_new = b2 * n.astype(rd) + c2 * abs2(g_c)
            denominator = jnp.sqrt(n_new) * inv_bc2_sqrt + e
            out = safe_divide(take_g * g_c + take_m * m_new, denominator, zero_denominator)
            return out.astype(g.dtype), m_new.astype(m.dtype), n_new.astype(n.dtype)

        out, mu, nu = h.map(leaf, 3, updates, state.mu, state.nu, params=params)
        return out, ScaleByNadamState(next_count(state.count), mu, nu, new, h.record)

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_nadam(
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    momentum_decay: Hyper = 4e-3,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """torch ``NAdam``'s direction (without the learning rate).

    With ``t = count + 1``, ``mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))``
    and ``P_t = mu_1 ... mu_t`` (kept in the state)::

        m_t = b1 m_{t-1} + (1 - b1) g_t,    v_t = b2 v_{t-1} + (1 - b2) |g_t|^2
        D_t = sqrt(v_t / (1 - b2^t)) + eps
        d_t = (1 - mu_t) / (1 - P_t) * g_t / D_t + mu_{t+1} / (1 - P_t mu_{t+1}) * m_t / D_t

    Scheduled ``b1`` / ``momentum_decay`` enter ``mu_t``, ``mu_{t+1}`` at
    their current value and ``P_t`` keeps the product of the values used, as
    torch does when a scheduler changes ``betas``. See :func:`fnopt.nadam`.

    Args:
        b1: first moment decay in [0, 1); float, traced array, schedule or group tree.
        b2: second moment decay in [0, 1).
        eps: added to the bias-corrected root, >= 0.
        momentum_decay: ``psi`` of the momentum schedule, >= 0.
        mu_dtype: dtype of ``mu`` (default: the params' dtype).
        nu_dtype: dtype of ``nu`` (default: the params' real dtype).
    """
    return _nadam("scale_by_nadam", b1, b2, eps, momentum_decay, mu_dtype, nu_dtype)


@friendly
def nadam(
    learning_rate: Hyper = 2e-3,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    momentum_decay: Hyper = 4e-3,
    *,
    weight_decay: Hyper = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    mask: Any = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """NAdam, Adam with Nesterov momentum: torch ``NAdam`` (and NAdamW).

    With ``g_t`` the gradient (negated with ``maximize``) plus
    ``weight_decay * p_t`` (coupled L2), ``t`` counted from 1,
    ``mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))`` and
    ``P_t = mu_1 ... mu_t``::

        m_t = b1 m_{t-1} + (1 - b1) g_t,    v_t = b2 v_{t-1} + (1 - b2) g_t^2
        D_t = sqrt(v_t / (1 - b2^t)) + eps
        p_{t+1} = p_t - lr_t * ((1 - mu_t) / (1 - P_t) * g_t + mu_{t+1} / (1 - P_t mu_{t+1}) * m_t) / D_t

    With ``decoupled_weight_decay`` (NAdamW) the gradient is not decayed;
    instead ``p_t`` is first multiplied by ``1 - lr_t * weight_decay``, as
    in torch. torch's ``betas=(b1, b2)`` are ``b1``, ``b2`` here, each
    schedulable; ``P_t`` is kept in the state (per leaf, as torch keeps it
    per param), so a scheduled ``b1`` enters it at the value of each step.

    Optax's ``nadam`` is a different NAdam (Adam with a Nesterov look-ahead,
    no momentum schedule); fnopt follows torch. Complex params use Optax's
    convention (``|g|^2`` in ``v``; torch treats real and imaginary parts as
    separate real params instead, which gives a different ``v``).

    Args:
        learning_rate: >= 0; float, traced array, schedule or group tree
            (default 2e-3, torch's).
        b1: first moment decay in [0, 1) (torch ``betas[0]``).
        b2: second moment decay in [0, 1) (torch ``betas[1]``).
        eps: added to the bias-corrected root, >= 0.
        momentum_decay: ``psi`` of the momentum schedule, >= 0.
        weight_decay: decay coefficient, >= 0.
        decoupled_weight_decay: NAdamW, decay decoupled from the gradient (static).
        maximize: ascend the objective instead (static).
        mask: which leaves get weight decay, Optax's meaning: a pytree of
            bools (a prefix of the params) or a callable ``params -> bools``;
            ``None`` decays every leaf.
        mu_dtype: dtype of the first moment (default: the params' dtype).
        nu_dtype: dtype of the second moment (default: the params' real dtype).

    Returns:
        ``chain(add_weight_decay, scale_by_nadam, scale_by_learning_rate)``,
        or with ``decoupled_weight_decay``
        ``chain(scale_by_nadam, add_decayed_weights, scale_by_learning_rate)``;
        ``maximize`` prepends a negation.

    References:
        Dozat, Incorporating Nesterov Momentum into Adam, ICLR 2016 workshop,
        https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ ;
        Loshchilov & Hutter, Decoupled Weight Decay Regularization, 2017,
        https://arxiv.org/abs/1711.05101

    Examples:
        >>> import jax.numpy as jnp, optax, fnopt
        >>> params = jnp.array([1.0])
        >>> opt = fnopt.nadam(0.1, momentum_decay=0.0)  # mu_t = b1 / 2
        >>> updates, _ = opt.update(jnp.array([2.0]), opt.init(params), params)
        >>> [round(x, 4) for x in updates.tolist()]  # -0.1 * (0.55 / 0.55 * 2 + 0.45 / 0.7975 * 0.2) / 2
        [-0.1056]
    """
    call = "nadam"
    hp = hypers(call, learning_rate=learning_rate, weight_decay=weight_decay)
    check_flag(call, "decoupled_weight_decay", decoupled_weight_decay)
    check_flag(call, "maximize", maximize)
    direction = _nadam(call, b1, b2, eps, momentum_decay, mu_dtype, nu_dtype)
    if decoupled_weight_decay:
        return with_group_check(hp, chain_stages(
            flip_sign(call, maximize), direction, decoupled_decay(call, weight_decay, mask), scale_by_learning_rate(learning_rate)
        ))
    return with_group_check(hp, chain_stages(
        flip_sign(call, maximize), coupled_decay(call, weight_decay, mask), direction, scale_by_learning_rate(learning_rate)
    ))


# ------------------------------------------------------------------ Adamax


class ScaleByAdamaxState(NamedTuple):
    """State of :func:`scale_by_adamax`.

    Attributes:
        count: updates applied so far (int32, saturating).
        mu: first moment EMA, in ``mu_dtype`` (default: the params' dtype).
        nu: exponentially weighted infinity norm ``u_t``, in ``nu_dtype``
            (default: the params' real dtype).
        hyperparams: ``b1``, ``b2``, ``eps`` used by the last update.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    hyperparams: dict[str, jax.Array]


def _adamax(call, b1, b2, eps, mu_dtype, nu_dtype):
    hp = Hypers(call, LOCAL_RULES, b1=b1, b2=b2, eps=eps)
    mu_dtype = storage_dtype(call, mu_dtype, "mu_dtype")
    nu_dtype = storage_dtype(call, nu_dtype, "nu_dtype")
    zero_denominator = may_be_zero(eps)

    def init(params):
        record = hp.record(zero_count(), params)
        return ScaleByAdamaxState(zero_count(), moment_like(params, mu_dtype), moment_like(params, nu_dtype, real=True), record)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)
        t = as_float(state.count) + 1.0

        @per_group
        def coef(v, dt):
            b1 = v["b1"]
            return tuple(x.astype(dt) for x in (b1, 1 - b1, 1 / (1 - b1**t), v["b2"], v["eps"]))

        def leaf(v, g, m, u):
            cd = compute_dtype(g)
            b1, c1, inv_bc1 = coef(v, cd)[:3]  # complex for complex params
            b2, e = coef(v, real_dtype(cd))[3:]
            g_c = g.astype(cd)
            m_new = b1 * m.astype(cd) + c1 * g_c
            u_new = jnp.maximum(b2 * u.astype(b2.dtype), jnp.abs(g_c) + e)
            out = safe_divide(m_new * inv_bc1, u_new, zero_denominator)
            return out.astype(g.dtype), m_new.astype(m.dtype), u_new.astype(u.dtype)

        out, mu, nu = h.map(leaf, 3, updates, state.mu, state.nu, params=params)
        return out, ScaleByAdamaxState(next_count(state.count), mu, nu, h.record)

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_adamax(
    b1: Hyper = 0.9, b2: Hyper = 0.999, eps: Hyper = 1e-8, *, mu_dtype: Any = None, nu_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
    """torch ``Adamax``'s direction (without the learning rate).

    With ``t = count + 1``: ``m_t = b1 m_{t-1} + (1 - b1) g_t``,
    ``u_t = max(b2 u_{t-1}, |g_t| + eps)`` and the update is
    ``m_t / ((1 - b1^t) u_t)``. ``eps`` sits inside the max, as in torch and
    Optax. See :func:`fnopt.adamax`.

    Args:
        b1: first moment decay in [0, 1); float, traced array, schedule or group tree.
        b2: infinity-norm decay in [0, 1).
        eps: added to ``|g_t|`` inside the max, >= 0.
        mu_dtype: dtype of ``mu`` (default: the params' dtype).
        nu_dtype: dtype of ``nu`` (default: the params' real dtype).
    """
    return _adamax("scale_by_adamax", b1, b2, eps, mu_dtype, nu_dtype)


@friendly
def adamax(
    learning_rate: Hyper = 2e-3,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    *,
    weight_decay: Hyper = 0.0,
    maximize: bool = False,
    mask: Any = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Adamax, Adam with the infinity norm: torch ``Adamax``.

    With ``g_t`` the gradient (negated with ``maximize``) plus
    ``weight_decay * p_t`` (coupled L2) and ``t`` counted from 1::

        m_t = b1 m_{t-1} + (1 - b1) g_t,    u_t = max(b2 u_{t-1}, |g_t| + eps)
        p_{t+1} = p_t - lr_t / (1 - b1^t) * m_t / u_t

    torch's ``betas=(b1, b2)`` are ``b1``, ``b2`` here, each schedulable.
    Same as Optax's ``adamax`` (defaults ``learning_rate=1e-3`` there) up to
    rounding, complex params included: ``|g|`` is the modulus (torch takes
    the real and imaginary parts as separate real params instead).

    Args:
        learning_rate: >= 0; float, traced array, schedule or group tree
            (default 2e-3, torch's).
        b1: first moment decay in [0, 1) (torch ``betas[0]``).
        b2: infinity-norm decay in [0, 1) (torch ``betas[1]``).
        eps: added to ``|g_t|`` inside the max, >= 0.
        weight_decay: coupled L2 coefficient, >= 0.
        maximize: ascend the objective instead (static).
        mask: which leaves get weight decay, Optax's meaning: a pytree of
            bools (a prefix of the params) or a callable ``params -> bools``;
            ``None`` decays every leaf.
        mu_dtype: dtype of the first moment (default: the params' dtype).
        nu_dtype: dtype of the infinity norm (default: the params' real dtype).

    Returns:
        ``chain(add_weight_decay, scale_by_adamax, scale_by_learning_rate)``;
        ``maximize`` prepends a negation.

    References:
        Kingma & Ba, Adam: A Method for Stochastic Optimization (section 7.1),
        2014, https://arxiv.org/abs/1412.6980

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> params = jnp.array([1.0])
        >>> opt = fnopt.adamax(0.1, eps=0.0)
        >>> updates, _ = opt.update(jnp.array([-4.0]), opt.init(params), params)
        >>> [round(x, 4) for x in updates.tolist()]  # -0.1 / 0.1 * (0.1 * -4) / 4
        [0.1]
    """
    call = "adamax"
    hp = hypers(call, learning_rate=learning_rate, weight_decay=weight_decay)
    check_flag(call, "maximize", maximize)
    return with_group_check(hp, chain_stages(
        flip_sign(call, maximize),
        coupled_decay(call, weight_decay, mask),
        _adamax(call, b1, b2, eps, mu_dtype, nu_dtype),
        scale_by_learning_rate(learning_rate),
    ))
