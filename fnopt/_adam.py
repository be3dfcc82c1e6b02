"""Adam with torch's numerics: the primitive ``scale_by_adam`` and the
aliases Adam and AdamW (RAdam and Ranger: :mod:`fnopt._radam`).

The primitives never apply the learning rate. Every numeric hyperparameter
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

from . import _fused, _step
from ._base import Hyper, Hypers, next_count, per_group, zero_count
from ._checks import as_float, check_flag
from ._common import (
    RULES,
    abs2,
    compute_dtype,
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
from ._elementwise import chain_stages, coupled_decay, decoupled_decay, flip_sign, scale_by_learning_rate
from ._chain import friendly

# -------------------------------------------------------------------- Adam


def moments(coefficients, cd, g, m, v):
    """Updated first and second moment EMAs in the arithmetic dtype ``cd``,
    from ``coefficients = (b1, 1 - b1, b2, 1 - b2, ...)`` (:func:`betas`).
    The second moment is of ``|g|^2``: real for complex gradients."""
    b1, c1, b2, c2 = coefficients[:4]
    g_c = g.astype(cd)
    return b1 * m.astype(cd) + c1 * g_c, b2 * v.astype(real_dtype(cd)) + c2 * abs2(g_c)


def betas(v, cd):
    """``(b1, 1 - b1, b2, 1 - b2)``: the first pair in ``cd`` (it scales the
    gradient), the second in ``cd``'s real dtype (it scales ``|g|^2``)."""
    b1, b2 = v["b1"].astype(cd), v["b2"].astype(real_dtype(cd))
    return b1, 1 - b1, b2, 1 - b2


def adam_coefficients(v, t, cd, with_root: bool):
    """An Adam step's scalars at ``t = count + 1``: :func:`betas`, ``1 / bc1``,
    ``1 / sqrt(bc2)``, ``eps``, ``eps_root * bc2`` (or ``None``). Reciprocals make
    an element cost one sqrt and one divide: ``sqrt(v / bc2 + eps_root) =
    sqrt(v + eps_root * bc2) / sqrt(bc2)``."""
    bc2 = 1 - v["b2"] ** t
    inv_bc1 = 1 / (1 - v["b1"] ** t)
    rd = real_dtype(cd)
    root = (v["eps_root"] * bc2).astype(rd) if with_root else None
    return (*betas(v, cd), inv_bc1.astype(cd), jax.lax.rsqrt(bc2).astype(rd), v["eps"].astype(rd), root)


_ADAM_RULES = {**RULES, "eps_root": {"low": 0.0}}


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`.

    Attributes:
        count: updates applied so far (int32, saturating).
        mu: first moment EMA, in ``mu_dtype`` (default: the params' dtype).
        nu: second moment EMA of ``|g|^2``, in ``nu_dtype`` (default: the
            params' real dtype).
        nu_max: running max of ``nu`` (``amsgrad`` only, else ``None``).
        hyperparams: ``b1``, ``b2``, ``eps`` used by the last update.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None
    hyperparams: dict[str, jax.Array]


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
    ``1 - b1(t)^t``, as torch does.

    Args:
        b1: first moment decay in [0, 1); float, traced array or schedule.
        b2: second moment decay in [0, 1); float, traced array or schedule.
        eps: added to the bias-corrected root, >= 0.
        eps_root: added to the bias-corrected second moment inside the root,
            >= 0 (Optax's ``eps_root``; torch has none). Recorded unless it is
            the number 0.
        amsgrad: use the running max of the second moment (static).
        mu_dtype: dtype of ``mu`` for real params (default: the params'
            dtype; a complex param keeps a complex ``mu``).
        nu_dtype: dtype of ``nu`` (default: the params' real dtype; complex
            params have a real second moment of ``|g|^2``, Optax's convention).
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
        nu_max = moment_like(params, nu_dtype, real=True) if amsgrad else None  # its own buffers
        return ScaleByAdamState(zero_count(), moment_like(params, mu_dtype), nu, nu_max, record)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)
        t = as_float(state.count) + 1.0

        coef = per_group(lambda v, cd: adam_coefficients(v, t, cd, with_root))

        def direction(k, m_new, v_used):
            c1, c2, e, root = k[4:]
            if with_root:
                v_used = v_used + root
            return safe_divide(m_new * c1, jnp.sqrt(v_used) * c2 + e, zero_denominator)

        def leaf(hv, g, m, v, v_max):
            cd = compute_dtype(g)
            k = coef(hv, cd)
            m_new, v_new = moments(k, cd, g, m, v)
            if amsgrad:
                v_max_new = jnp.maximum(v_max.astype(v_new.dtype), v_new)
                v_used, v_max_out = v_max_new, v_max_new.astype(v_max.dtype)
            else:
                v_used, v_max_out = v_new, v_max
            out = direction(k, m_new, v_used)
            return out.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype), v_max_out

        def fused(fn, values, leaves, others):
            # The moments of a hyperparameter group and dtype in one kernel
            # (fnopt._fused); the direction per leaf in XLA, which fuses it
            # with the learning rate and apply_updates.
            def group(hv, idx):
                cd = compute_dtype(leaves[idx[0]])
                k = coef(hv, cd)
                m, v = _fused.adam_moments(jnp.stack(k[:4]), [leaves[i] for i in idx], [others[0][i] for i in idx],
                                           [others[1][i] for i in idx])
                return [(direction(k, m[j], v[j]), m[j], v[j], others[2][i]) for j, i in enumerate(idx)]

            return _fused.run_groups(fn, values, leaves, others, group)

        v_max = state.nu_max if amsgrad else state.nu
        use_kernel = not amsgrad and _fused.enabled() and not _fused.suspended()
        out, mu, nu, nu_max = h.map(leaf, 4, updates, state.mu, state.nu, v_max, params=params,
                                    fused=fused if use_kernel else None)
        new_state = ScaleByAdamState(next_count(state.count), mu, nu, nu_max if amsgrad else None, h.record)
        return out, new_state

    return optax.GradientTransformationExtraArgs(init, update)


# ------------------------------------------------------------------ aliases


@friendly
def adam(
    learning_rate: Hyper = 1e-3,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    *,
    amsgrad: bool = False,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
    maximize: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Adam: torch ``Adam``.

    With ``g_t`` the gradient plus ``weight_decay * p_t`` (coupled L2) and
    ``t`` counted from 1::

        m_t = b1 m_{t-1} + (1 - b1) g_t,     v_t = b2 v_{t-1} + (1 - b2) g_t^2
        p_{t+1} = p_t - lr_t / (1 - b1^t) * m_t / (sqrt(v_t) / sqrt(1 - b2^t) + eps)

    With ``amsgrad``, ``v_t`` in the denominator is ``max_{s<=t} v_s`` (the
    max of the raw second moment, bias-corrected afterwards, as torch; Optax's
    ``amsgrad`` takes the max after bias correction). A scheduled ``b1``
    (torch's ``OneCycleLR`` cycling ``betas[0]``) enters the bias correction
    at its current value, as in torch. Same as Optax's ``adam`` (with
    ``eps_root=0``) up to rounding.

    Args:
        learning_rate: >= 0; float, traced array or schedule.
        b1: first moment decay in [0, 1).
        b2: second moment decay in [0, 1).
        eps: added to the bias-corrected root, >= 0.
        amsgrad: AMSGrad variant (static).
        weight_decay: coupled L2 coefficient, >= 0 (for decoupled decay use
            :func:`adamw`).
        mask: which leaves get weight decay, Optax's meaning: a pytree of
            bools (a prefix of the params) or a callable ``params -> bools``;
            ``None`` decays every leaf.
        maximize: ascend the objective instead (torch's ``maximize``): the
            gradient is negated before anything else.
        mu_dtype: dtype of the first moment (default: the params' dtype);
            ``jnp.bfloat16`` halves its memory.
        nu_dtype: dtype of the second moment (default: the params' real dtype).

    Returns:
        ``chain(add_weight_decay, scale_by_adam, scale_by_learning_rate)``;
        moments in the params' dtype.

    References:
        Kingma & Ba, Adam: A Method for Stochastic Optimization, 2014,
        https://arxiv.org/abs/1412.6980 ; Reddi, Kale & Kumar, On the
        Convergence of Adam and Beyond (AMSGrad), 2018,
        https://openreview.net/forum?id=ryQu7f-RZ

    Examples:
        >>> import jax, jax.numpy as jnp, optax, fnopt
        >>> params = jnp.array([1.0, -2.0])
        >>> opt = fnopt.adam(0.1)
        >>> state = opt.init(params)
        >>> updates, state = opt.update(jax.grad(lambda p: p @ p)(params), state, params)
        >>> [round(x, 4) for x in optax.apply_updates(params, updates).tolist()]
        [0.9, -1.9]

        Adam with one-cycle, ``b1`` cycling like torch ``OneCycleLR``'s momentum:

        >>> from fnopt import schedules
        >>> opt = fnopt.adam(schedules.one_cycle(1e-2, 1000), b1=schedules.one_cycle_momentum(1000))
    """
    call = "adam"
    hp = hypers(call, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    check_flag(call, "amsgrad", amsgrad)
    dtypes = moment_dtypes(call, mu_dtype, nu_dtype)
    stages = (flip_sign(call, maximize), coupled_decay(call, weight_decay, mask),
              scale_by_adam(b1, b2, eps, amsgrad=amsgrad, **dtypes), None, scale_by_learning_rate(learning_rate))
    return _adam_step(with_group_check(hp, chain_stages(*stages)), hp, stages, amsgrad, eps, mask)


@friendly
def adamw(
    learning_rate: Hyper = 1e-3,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    weight_decay: Hyper = 1e-2,
    *,
    amsgrad: bool = False,
    mask: Any = None,
    maximize: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """AdamW, Adam with decoupled weight decay: torch ``AdamW``.

    With ``d_t`` the direction of :func:`adam` (computed from the raw gradient)::

        p_{t+1} = p_t - lr_t * weight_decay * p_t - lr_t * d_t

    which is torch's ``p *= 1 - lr * weight_decay`` followed by the Adam
    step. Same as Optax's ``adamw`` (whose default ``weight_decay`` is 1e-4,
    not torch's 1e-2) up to rounding.

    Args:
        learning_rate: >= 0; float, traced array or schedule.
        b1: first moment decay in [0, 1).
        b2: second moment decay in [0, 1).
        eps: added to the bias-corrected root, >= 0.
        weight_decay: decoupled decay coefficient, >= 0.
        mask: which leaves get weight decay, Optax's meaning: a pytree of
            bools (a prefix of the params) or a callable ``params -> bools``;
            ``None`` decays every leaf.
        maximize: ascend the objective instead (torch's ``maximize``): the
            gradient is negated before anything else.
        mu_dtype: dtype of the first moment (default: the params' dtype);
            ``jnp.bfloat16`` halves its memory.
        nu_dtype: dtype of the second moment (default: the params' real dtype).
        amsgrad: AMSGrad variant (static).

    Returns:
        ``chain(scale_by_adam, add_decayed_weights, scale_by_learning_rate)``;
        moments in the params' dtype.

    References:
        Loshchilov & Hutter, Decoupled Weight Decay Regularization, 2017,
        https://arxiv.org/abs/1711.05101

    Examples:
        >>> import jax.numpy as jnp, optax, fnopt
        >>> params = jnp.array([1.0])
        >>> opt = fnopt.adamw(0.1, weight_decay=0.5)
        >>> updates, _ = opt.update(jnp.array([2.0]), opt.init(params), params)
        >>> [round(x, 4) for x in optax.apply_updates(params, updates).tolist()]  # 1 - 0.1 * 0.5 - 0.1
        [0.85]

        fastai's ``fit_one_cycle(n, lr)`` (Adam with decoupled decay, cosine
        one-cycle for the LR and for ``b1``):

        >>> from fnopt import schedules
        >>> T, lr = 1000, 3e-3
        >>> opt = fnopt.adamw(schedules.combined_cos(T, 0.25, lr / 25, lr, lr / 1e5),
        ...                   b1=schedules.combined_cos(T, 0.25, 0.95, 0.85, 0.95),
        ...                   b2=0.99, eps=1e-5, weight_decay=0.01)
    """
    call = "adamw"
    hp = hypers(call, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    check_flag(call, "amsgrad", amsgrad)
    dtypes = moment_dtypes(call, mu_dtype, nu_dtype)
    stages = (flip_sign(call, maximize), None, scale_by_adam(b1, b2, eps, amsgrad=amsgrad, **dtypes),
              decoupled_decay(call, weight_decay, mask), scale_by_learning_rate(learning_rate))
    return _adam_step(with_group_check(hp, chain_stages(*stages)), hp, stages, amsgrad, eps, mask)


def _adam_step(tx, hp: Hypers, stages: tuple, amsgrad: bool, eps: Hyper, mask: Any):
    """``tx`` (stages: flip, coupled decay, Adam, decoupled decay, lr) with its
    ``fnopt.apply_gradients`` route where the kernel's arithmetic is the
    chain's: no param groups, mask or AMSGrad, ``eps`` never 0."""
    if hp.grouped or amsgrad or mask is not None or may_be_zero(eps):
        return tx
    flip, coupled, adam_at, decoupled, lr_at = _step.stage_indices(*stages)

    def coefficients(old, new, cd):
        t = as_float(old[adam_at].count) + 1.0
        b1, c1, b2, c2, ib1, rb2, e, _ = adam_coefficients(new[adam_at].hyperparams, t, cd, False)
        wdc, wdd = _step.recorded(new, coupled, "weight_decay"), _step.recorded(new, decoupled, "weight_decay")
        nlr = -_step.recorded(new, lr_at, "learning_rate").astype(cd)
        return (b1, c1, b2, c2, ib1, rb2, e, nlr, wdc, wdd, *_step.present(flip, coupled, decoupled))

    return _step.register(tx, _step.Route("adam_step", adam_at, ("mu", "nu"), coefficients))
