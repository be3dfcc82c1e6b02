"""Per-coordinate adaptive scalings with torch's numerics: Adagrad, RMSprop,
Adam (with AMSGrad) and RAdam.

None of them applies the learning rate (see :mod:`fnopt._aliases`). Every
numeric hyperparameter may be a float, a traced array or a schedule of the
step (evaluated at ``count``, the number of updates already applied).
Arithmetic runs in at least float32 (bf16 params are updated in float32 and
stored back in bf16); the update comes out in the incoming updates' dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._base import Hyper, Hypers, next_count, per_group, zero_count
from ._checks import as_float, check_flag
from ._common import (
    RULES,
    abs_sq,
    compute_dtype,
    fill_like,
    full_like,
    hypers,
    is_zero,
    may_be_zero,
    moment_like,
    safe_divide,
    storage_dtype,
)

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
    initial_accumulator_value: Hyper = 0.0, eps: Hyper = 1e-10
) -> optax.GradientTransformationExtraArgs:
    """torch ``Adagrad``'s scaling: ``s_t = s_{t-1} + g_t^2``, update
    ``g_t / (sqrt(s_t) + eps)`` with ``s_{-1} = initial_accumulator_value``.

    ``eps`` is added outside the square root, as in torch (Optax's
    ``scale_by_rss`` adds it inside; the two agree for ``eps=0``).

    Args:
        initial_accumulator_value: starting value of the sum, >= 0 (a
            schedule is evaluated at step 0).
        eps: added to the root, >= 0.
    """
    call = "scale_by_adagrad"
    hp = hypers(call, initial_accumulator_value=initial_accumulator_value, eps=eps)
    zero_denominator = may_be_zero(initial_accumulator_value) and may_be_zero(eps)

    def init(params):
        start = hp.at(zero_count(), params)
        # The accumulator of each group starts at its own value (a schedule
        # is read at step 0).
        sums = start.map(lambda v, p: fill_like(p, v["initial_accumulator_value"]), None, params)
        return ScaleByAdagradState(zero_count(), sums, start.record)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)

        def leaf(v, g, s):
            cd = compute_dtype(g)
            g_c = g.astype(cd)
            s_new = s.astype(cd) + g_c * g_c
            out = safe_divide(g_c, jnp.sqrt(s_new) + v["eps"].astype(cd), zero_denominator)
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
    alpha: Hyper = 0.99, eps: Hyper = 1e-8, *, centered: bool = False
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
    """
    call = "scale_by_rms"
    hp = hypers(call, alpha=alpha, eps=eps)
    check_flag(call, "centered", centered)
    zero_denominator = may_be_zero(eps)

    def init(params):
        grad_avg = full_like(params) if centered else None
        return ScaleByRmsState(zero_count(), full_like(params), grad_avg, hp.record(zero_count(), params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)

        @per_group
        def coef(v, cd):
            a = v["alpha"].astype(cd)
            return a, 1 - a, v["eps"].astype(cd)

        def leaf(v, g, sq, ga):
            cd = compute_dtype(g)
            a, c, e = coef(v, cd)
            g_c = g.astype(cd)
            sq_new = a * sq.astype(cd) + c * (g_c * g_c)
            if centered:
                ga_new = a * ga.astype(cd) + c * g_c
                var = jnp.maximum(sq_new - ga_new * ga_new, 0)
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


# -------------------------------------------------------------------- Adam


def _moments(coefficients, cd, g, m, v):
    """Updated first and second moment EMAs in the arithmetic dtype ``cd``,
    from ``coefficients = (b1, 1 - b1, b2, 1 - b2, ...)``. The second moment
    is of ``|g|^2`` and real (for complex ``g``: in ``cd``'s real dtype)."""
    b1, c1, b2, c2 = coefficients[:4]
    g_c = g.astype(cd)
    b2, c2 = b2.real, c2.real
    return b1 * m.astype(cd) + c1 * g_c, b2 * v.astype(b2.dtype) + c2 * abs_sq(g_c)


def _betas(v, cd):
    b1, b2 = v["b1"].astype(cd), v["b2"].astype(cd)
    return b1, 1 - b1, b2, 1 - b2


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`.

    Attributes:
        count: updates applied so far (int32, saturating).
        mu: first moment EMA, in ``mu_dtype`` (default: the params' dtype).
        nu: second moment EMA (of ``|g|^2``), in ``nu_dtype`` (default: the
            params' real dtype).
        nu_max: running max of ``nu`` (``amsgrad`` only, else ``None``).
        hyperparams: ``b1``, ``b2``, ``eps`` (and ``eps_root`` unless it is
            the number 0) used by the last update.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None
    hyperparams: dict[str, jax.Array]


_ADAM_RULES = {**RULES, "eps_root": {"low": 0.0}}


def scale_by_adam(
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    *,
    eps_root: Hyper = 0.0,
    amsgrad: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """torch ``Adam``'s direction (without the learning rate).

    With ``t = count + 1``: ``m_t = b1 m_{t-1} + (1 - b1) g_t``,
    ``v_t = b2 v_{t-1} + (1 - b2) |g_t|^2`` and the update is
    ``(m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t) + eps_root) + eps)``. With
    ``amsgrad``, ``v_t`` in the denominator is replaced by ``max_{s<=t} v_s``
    (torch: the max of the raw ``v``, bias-corrected afterwards; Optax's
    ``amsgrad`` takes the max of the bias-corrected ``v`` instead).

    When ``b1`` or ``b2`` is a schedule (torch's ``OneCycleLR`` / ``CyclicLR``
    cycle ``betas[0]``), the bias corrections use the current value,
    ``1 - b1(t)^t``, as torch does. Complex params follow Optax: ``m`` is
    complex, ``v`` the real EMA of ``|g|^2``.

    Args:
        b1: first moment decay in [0, 1); float, traced array or schedule.
        b2: second moment decay in [0, 1); float, traced array or schedule.
        eps: added to the bias-corrected root, >= 0.
        eps_root: added to the bias-corrected second moment inside the root,
            >= 0 (Optax's ``eps_root``; torch has none).
        amsgrad: use the running max of the second moment (static).
        mu_dtype: dtype of ``mu`` for real params (default: the params' dtype).
        nu_dtype: dtype of ``nu`` (default: the params' real dtype).
    """
    call = "scale_by_adam"
    with_root = not is_zero(eps_root)
    hp = Hypers(call, _ADAM_RULES, b1=b1, b2=b2, eps=eps, **({"eps_root": eps_root} if with_root else {}))
    check_flag(call, "amsgrad", amsgrad)
    mu_dtype = storage_dtype(call, mu_dtype)
    nu_dtype = storage_dtype(call, nu_dtype, "nu_dtype")
    zero_denominator = may_be_zero(eps) and (not with_root or may_be_zero(eps_root))

    def init(params):
        nu = moment_like(params, nu_dtype, real=True)
        record = hp.record(zero_count(), params)
        return ScaleByAdamState(zero_count(), moment_like(params, mu_dtype), nu, nu if amsgrad else None, record)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)
        t = as_float(state.count) + 1.0

        @per_group
        def coef(v, cd):
            # Scalar reciprocals, so that each element costs one sqrt and one
            # divide (by the denominator) instead of three divides:
            # sqrt(v / bc2 + eps_root) = sqrt(v + eps_root * bc2) / sqrt(bc2).
            bc2 = 1 - v["b2"] ** t
            inv_bc1 = 1 / (1 - v["b1"] ** t)
            root = (v["eps_root"] * bc2).astype(cd).real if with_root else None
            return (*_betas(v, cd), inv_bc1.astype(cd), jax.lax.rsqrt(bc2).astype(cd).real, v["eps"].astype(cd).real, root)

        def leaf(hv, g, m, v, v_max):
            cd = compute_dtype(g)
            k = coef(hv, cd)
            m_new, v_new = _moments(k, cd, g, m, v)
            if amsgrad:
                v_max_new = jnp.maximum(v_max.astype(v_new.dtype), v_new)
                v_used, v_max_out = v_max_new, v_max_new.astype(v_max.dtype)
            else:
                v_used, v_max_out = v_new, v_max
            c1, c2, e, root = k[4:]
            if with_root:
                v_used = v_used + root
            out = safe_divide(m_new * c1, jnp.sqrt(v_used) * c2 + e, zero_denominator)
            return out.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype), v_max_out

        v_max = state.nu_max if amsgrad else state.nu
        out, mu, nu, nu_max = h.map(leaf, 4, updates, state.mu, state.nu, v_max, params=params)
        new_state = ScaleByAdamState(next_count(state.count), mu, nu, nu_max if amsgrad else None, h.record)
        return out, new_state

    return optax.GradientTransformationExtraArgs(init, update)


# ------------------------------------------------------------------- RAdam


class ScaleByRAdamState(NamedTuple):
    """State of :func:`scale_by_radam`.

    Attributes:
        count: updates applied so far (int32, saturating).
        mu: first moment EMA, in ``mu_dtype`` (default: the params' dtype).
        nu: second moment EMA, in the params' dtype.
        hyperparams: ``b1``, ``b2``, ``eps`` used by the last update.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    hyperparams: dict[str, jax.Array]


def scale_by_radam(
    b1: Hyper = 0.9, b2: Hyper = 0.999, eps: Hyper = 1e-8, *, mu_dtype: Any = None
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
    """
    call = "scale_by_radam"
    hp = hypers(call, b1=b1, b2=b2, eps=eps)
    mu_dtype = storage_dtype(call, mu_dtype)
    zero_denominator = may_be_zero(eps)

    def init(params):
        record = hp.record(zero_count(), params)
        return ScaleByRAdamState(zero_count(), full_like(params, 0.0, mu_dtype), full_like(params), record)

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
            return (*_betas(v, cd), (1 / bc1).astype(cd), scale.astype(cd), v["eps"].astype(cd), rectify)

        def leaf(hv, g, m, v):
            cd = compute_dtype(g)
            k = coef(hv, cd)
            m_new, v_new = _moments(k, cd, g, m, v)
            c1, sc, e, rectify = k[4:]
            m_hat = m_new * c1
            adaptive = safe_divide(m_hat * sc, jnp.sqrt(v_new) + e, zero_denominator)
            out = jnp.where(rectify, adaptive, m_hat)
            return out.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

        out, mu, nu = h.map(leaf, 3, updates, state.mu, state.nu, params=params)
        return out, ScaleByRAdamState(next_count(state.count), mu, nu, h.record)

    return optax.GradientTransformationExtraArgs(init, update)
