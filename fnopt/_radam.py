"""Rectified Adam with torch's numerics: the primitive ``scale_by_radam`` and
the aliases RAdam and Ranger (RAdam + Lookahead).

The primitive never applies the learning rate. Every numeric hyperparameter
may be a float, a traced array, a schedule of the step (evaluated at
``count``, the number of updates already applied) or a group tree of those.
Arithmetic runs in at least float32; the update comes out in the incoming
updates' dtype. The moments are Adam's (:mod:`fnopt._adam`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._adam import betas, moments
from ._base import Hyper, next_count, per_group, zero_count
from ._chain import friendly
from ._checks import as_float
from ._common import (
    compute_dtype,
    hypers,
    may_be_zero,
    moment_dtypes,
    moment_like,
    real_dtype,
    safe_divide,
    storage_dtype,
    with_group_check,
)
from ._elementwise import chain_stages, coupled_decay, decoupled_decay, flip_sign, scale_by_learning_rate
from ._wrappers import lookahead


class ScaleByRAdamState(NamedTuple):
    """State of :func:`scale_by_radam`.

    Attributes:
        count: updates applied so far (int32, saturating).
        mu: first moment EMA, in ``mu_dtype`` (default: the params' dtype).
        nu: second moment EMA of ``|g|^2``, in ``nu_dtype`` (default: the
            params' real dtype).
        hyperparams: ``b1``, ``b2``, ``eps`` used by the last update.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    hyperparams: dict[str, jax.Array]


def scale_by_radam(
    b1: Hyper = 0.9, b2: Hyper = 0.999, eps: Hyper = 1e-8, *, mu_dtype: Any = None, nu_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
    """torch ``RAdam``'s direction (without the learning rate).

    Moments as in :func:`scale_by_adam`; with ``t = count + 1``,
    ``rho_inf = 2 / (1 - b2) - 1`` and
    ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``. While ``rho_t <= 5`` the
    update is the bias-corrected momentum ``m_t / (1 - b1^t)``; after that it
    is multiplied by the rectification
    ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``
    and the adaptive rate ``sqrt(1 - b2^t) / (sqrt(v_t) + eps)``.

    torch adds ``eps`` to the *raw* root ``sqrt(v_t)`` and switches on
    ``rho_t > 5``; Optax's ``scale_by_radam`` adds it to the bias-corrected
    root and switches on ``rho_t >= 5``. fnopt follows torch (the two agree for
    ``eps=0`` away from ``rho_t == 5``). Scheduled betas enter the bias
    corrections and ``rho`` at their current value, as in torch.

    Args:
        b1: first moment decay in [0, 1); float, traced array or schedule.
        b2: second moment decay in [0, 1); float, traced array or schedule.
        eps: added to the root of the second moment, >= 0.
        mu_dtype: dtype of ``mu`` (default: the params' dtype).
        nu_dtype: dtype of ``nu`` (default: the params' real dtype; complex
            params have a real second moment of ``|g|^2``, Optax's convention).
    """
    call = "scale_by_radam"
    hp = hypers(call, b1=b1, b2=b2, eps=eps)
    mu_dtype = storage_dtype(call, mu_dtype)
    nu_dtype = storage_dtype(call, nu_dtype, "nu_dtype")
    zero_denominator = may_be_zero(eps)

    def init(params):
        record = hp.record(zero_count(), params)
        return ScaleByRAdamState(zero_count(), moment_like(params, mu_dtype), moment_like(params, nu_dtype, real=True), record)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)
        t = as_float(state.count) + 1.0

        @per_group
        def coef(v, cd):
            b2 = v["b2"]
            bc1 = 1 - v["b1"] ** t
            b2_t = b2**t
            bc2 = 1 - b2_t
            rho_inf = 2 / (1 - b2) - 1
            rho_t = rho_inf - 2 * t * b2_t / bc2
            rectify = rho_t > 5
            # Both are > 5 where the rectification is used; elsewhere a harmless 6.
            r_t, r_inf = jnp.where(rectify, rho_t, 6.0), jnp.where(rectify, rho_inf, 6.0)
            rect = jnp.sqrt((r_t - 4) * (r_t - 2) * r_inf / ((r_inf - 4) * (r_inf - 2) * r_t))
            scale = jnp.sqrt(bc2) * rect
            return (*betas(v, cd), (1 / bc1).astype(cd), scale.astype(cd), v["eps"].astype(real_dtype(cd)), rectify)

        def leaf(hv, g, m, v):
            cd = compute_dtype(g)
            k = coef(hv, cd)
            m_new, v_new = moments(k, cd, g, m, v)
            c1, sc, e, rectify = k[4:]
            m_hat = m_new * c1
            adaptive = safe_divide(m_hat * sc, jnp.sqrt(v_new) + e, zero_denominator)
            out = jnp.where(rectify, adaptive, m_hat)
            return out.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

        out, mu, nu = h.map(leaf, 3, updates, state.mu, state.nu, params=params)
        return out, ScaleByRAdamState(next_count(state.count), mu, nu, h.record)

    return optax.GradientTransformationExtraArgs(init, update)


# ------------------------------------------------------------------ aliases


@friendly
def radam(
    learning_rate: Hyper = 1e-3,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    *,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
    maximize: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Rectified Adam: torch ``RAdam``.

    Moments and ``g_t`` as in :func:`adam`; with ``rho_inf = 2 / (1 - b2) - 1``
    and ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``::

        m_hat = m_t / (1 - b1^t)
        rho_t <= 5:  p_{t+1} = p_t - lr_t * m_hat
        rho_t > 5:   r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                     p_{t+1} = p_t - lr_t * m_hat * r_t * sqrt(1 - b2^t) / (sqrt(v_t) + eps)

    ``eps`` sits outside the *raw* root as in torch; Optax's ``radam`` adds it
    to the bias-corrected root and switches at ``rho_t >= 5`` (identical for
    ``eps=0``).

    Args:
        learning_rate: >= 0; float, traced array or schedule.
        b1: first moment decay in [0, 1).
        b2: second moment decay in [0, 1).
        eps: >= 0.
        weight_decay: coupled L2 coefficient, >= 0 (torch's default
            ``decoupled_weight_decay=False``; for decoupled decay chain
            ``scale_by_radam``, ``add_decayed_weights``, ``scale_by_learning_rate``).
        mask: which leaves get weight decay, Optax's meaning: a pytree of
            bools (a prefix of the params) or a callable ``params -> bools``;
            ``None`` decays every leaf.
        maximize: ascend the objective instead (torch's ``maximize``): the
            gradient is negated before anything else.
        mu_dtype: dtype of the first moment (default: the params' dtype);
            ``jnp.bfloat16`` halves its memory.
        nu_dtype: dtype of the second moment (default: the params' real dtype).

    Returns:
        ``chain(add_weight_decay, scale_by_radam, scale_by_learning_rate)``;
        moments in the params' dtype.

    References:
        Liu et al., On the Variance of the Adaptive Learning Rate and Beyond,
        2019, https://arxiv.org/abs/1908.03265

    Examples:
        >>> import jax.numpy as jnp, optax, fnopt
        >>> params = jnp.array([1.0])
        >>> opt = fnopt.radam(0.1)
        >>> updates, _ = opt.update(jnp.array([2.0]), opt.init(params), params)
        >>> [round(x, 4) for x in updates.tolist()]  # first steps: momentum SGD (rho_1 = 1)
        [-0.2]
    """
    call = "radam"
    hp = hypers(call, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    dtypes = moment_dtypes(call, mu_dtype, nu_dtype)
    return with_group_check(hp, chain_stages(
        flip_sign(call, maximize),
        coupled_decay(call, weight_decay, mask),
        scale_by_radam(b1, b2, eps, **dtypes),
        scale_by_learning_rate(learning_rate),
    ))


@friendly
def ranger(
    learning_rate: Hyper = 1e-3,
    b1: Hyper = 0.95,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    *,
    sync_period: Hyper = 6,
    alpha: Hyper = 0.5,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
    maximize: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Ranger: RAdam inside Lookahead.

    The fast weights follow :func:`radam` (torch's RAdam rule); every
    ``sync_period`` steps the slow weights move ``alpha`` of the way to the
    fast ones and the fast weights restart from them (see
    ``fnopt.transforms.lookahead``). Defaults are those of Wright's Ranger
    (``b1=0.95``, ``k=6``, ``alpha=0.5``) except ``eps=1e-8`` (Ranger uses
    1e-5), and, like Ranger, weight decay is decoupled. Ranger's gradient
    centralization is not included: chain a centralizing transform before it
    if wanted.

    Args:
        learning_rate: >= 0; float, traced array or schedule.
        b1: first moment decay in [0, 1).
        b2: second moment decay in [0, 1).
        eps: >= 0.
        sync_period: steps between Lookahead synchronizations, >= 1.
        alpha: Lookahead slow step size in [0, 1].
        weight_decay: decoupled decay coefficient, >= 0.
        mask: which leaves get weight decay, Optax's meaning: a pytree of
            bools (a prefix of the params) or a callable ``params -> bools``;
            ``None`` decays every leaf.
        maximize: ascend the objective instead (torch's ``maximize``): the
            gradient is negated before anything else.
        mu_dtype: dtype of the first moment (default: the params' dtype);
            ``jnp.bfloat16`` halves its memory.
        nu_dtype: dtype of the second moment (default: the params' real dtype).

    Returns:
        ``lookahead(chain(scale_by_radam, add_decayed_weights,
        scale_by_learning_rate), sync_period, alpha)``; moments and slow
        weights in the params' dtype. ``update`` needs ``params``.

    References:
        Liu et al., RAdam, 2019, https://arxiv.org/abs/1908.03265 ;
        Zhang et al., Lookahead Optimizer, 2019,
        https://arxiv.org/abs/1907.08610 ; Wright, Ranger, 2019,
        https://github.com/lessw2020/Ranger-Deep-Learning-Optimizer

    Examples:
        >>> import jax, jax.numpy as jnp, optax, fnopt
        >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
        >>> params, opt = jnp.zeros(2), fnopt.ranger(0.1)
        >>> state = opt.init(params)
        >>> for _ in range(300):
        ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < 1e-3)
        True
    """
    call = "ranger"
    hp = hypers(call, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, sync_period=sync_period, alpha=alpha, weight_decay=weight_decay)
    dtypes = moment_dtypes(call, mu_dtype, nu_dtype)
    inner = chain_stages(
        flip_sign(call, maximize),
        scale_by_radam(b1, b2, eps, **dtypes),
        decoupled_decay(call, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
    return with_group_check(hp, lookahead(inner, sync_period, alpha))
