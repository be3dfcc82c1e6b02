"""AdaBelief: Adam whose second moment tracks the squared *prediction
error* ``g - m`` instead of ``g``, with Optax 0.2.8's defaults and numerics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._common import with_group_check
from ._elementwise import chain_stages, decoupled_decay
from ._base import Hyper, Hypers, next_count, per_group, zero_count
from ._checks import as_float, check_flag
from ._common import RULES, abs2, compute_dtype, may_be_zero, moment_like, safe_divide, storage_dtype
from ._elementwise import scale_by_learning_rate
from ._chain import friendly

BELIEF_RULES = {**RULES, "eps_root": {"low": 0.0}}


class ScaleByBeliefState(NamedTuple):
    """State of :func:`scale_by_belief`.

    Attributes:
        count: updates applied so far (int32, saturating).
        mu: EMA of the gradients, in ``mu_dtype`` (default: the params' dtype;
            complex params keep theirs).
        nu: EMA of ``|g - mu|^2`` plus ``eps_root`` per step, in ``nu_dtype``
            (default: the params' real dtype; Optax keeps complex params'
            ``nu`` complex with a zero imaginary part).
        hyperparams: ``b1``, ``b2``, ``eps``, ``eps_root`` used by the last
            update.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    hyperparams: dict[str, jax.Array]


def _scale_by_belief(call, b1, b2, eps, eps_root, nesterov, mu_dtype, nu_dtype):
    hp = Hypers(call, BELIEF_RULES, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    check_flag(call, "nesterov", nesterov)
    mu_dtype = storage_dtype(call, mu_dtype)
    nu_dtype = storage_dtype(call, nu_dtype, "nu_dtype")
    zero_denominator = may_be_zero(eps) and may_be_zero(eps_root)

    def init(params):
        record = hp.record(zero_count(), params)
        return ScaleByBeliefState(zero_count(), moment_like(params, mu_dtype), moment_like(params, nu_dtype, real=True), record)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)
        t = as_float(state.count) + 1.0

        @per_group
        def coef(v, cd):
            b1, b2 = v["b1"], v["b2"]
            inv_bc1 = 1 / (1 - b1**t)
            if nesterov:  # b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)
                m_scale, g_scale = b1 / (1 - b1 ** (t + 1)), (1 - b1) * inv_bc1
            else:
                m_scale, g_scale = inv_bc1, None
            real = [b2, 1 - b2, v["eps_root"], jax.lax.rsqrt(1 - b2**t), v["eps"]]
            return (
                b1.astype(cd),
                (1 - b1).astype(cd),
                m_scale.astype(cd),
                None if g_scale is None else g_scale.astype(cd),
                *(x.astype(cd).real for x in real),
            )

        def leaf(hv, g, m, s):
            cd = compute_dtype(g)
            b1, c1, m_scale, g_scale, b2, c2, eps_root, inv_bc2_sqrt, e = coef(hv, cd)
            g_c = g.astype(cd)
            m_new = b1 * m.astype(cd) + c1 * g_c
            s_new = b2 * s.astype(b2.dtype) + c2 * abs2(g_c - m_new) + eps_root
            m_hat = m_new * m_scale + g_c * g_scale if nesterov else m_new * m_scale
            out = safe_divide(m_hat, jnp.sqrt(s_new) * inv_bc2_sqrt + e, zero_denominator)
            return out.astype(g.dtype), m_new.astype(m.dtype), s_new.astype(s.dtype)

        out, mu, nu = h.map(leaf, 3, updates, state.mu, state.nu, params=params)
        return out, ScaleByBeliefState(next_count(state.count), mu, nu, h.record)

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_belief(
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-16,
    eps_root: Hyper = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """AdaBelief's direction (without the learning rate): Optax's
    ``scale_by_belief`` (same name, defaults and meaning).

    With ``t = count + 1`` and zero initial moments::

        m_t = b1 m_{t-1} + (1 - b1) g_t
        s_t = b2 s_{t-1} + (1 - b2) |g_t - m_t|^2 + eps_root
        update = (m_t / (1 - b1^t)) / (sqrt(s_t / (1 - b2^t)) + eps)

    ``eps_root`` is added to the stored ``s_t`` every step, as in Optax and
    the paper's Algorithm 2. With ``nesterov``, ``m_t / (1 - b1^t)`` becomes
    ``b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)`` (Optax's).

    Args:
        b1: first moment decay, in [0, 1).
        b2: decay of the prediction error's second moment, in [0, 1).
        eps: added to the bias-corrected root, >= 0.
        eps_root: added to the second moment each step, >= 0.
        nesterov: Nesterov momentum (static).
        mu_dtype: dtype of ``mu`` for real params (default: the params').
        nu_dtype: dtype of ``nu`` (default: the params' real dtype).

    Examples:
        >>> import jax.numpy as jnp
        >>> from fnopt import transforms
        >>> tx = transforms.scale_by_belief(eps=0.0, eps_root=0.0)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([2.0]), state)  # m = 0.2, s = 0.001 * 1.8^2
        >>> [round(x, 4) for x in u.tolist()]
        [1.1111]
    """
    return _scale_by_belief("scale_by_belief", b1, b2, eps, eps_root, nesterov, mu_dtype, nu_dtype)


@friendly
def adabelief(
    learning_rate: Hyper,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-16,
    eps_root: Hyper = 1e-16,
    *,
    nesterov: bool = False,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """AdaBelief: Optax's ``adabelief`` (same defaults, same numerics), plus
    optional decoupled weight decay.

    With ``t`` counted from 1 and zero initial moments::

        m_t = b1 m_{t-1} + (1 - b1) g_t
        s_t = b2 s_{t-1} + (1 - b2) |g_t - m_t|^2 + eps_root
        d_t = (m_t / (1 - b1^t)) / (sqrt(s_t / (1 - b2^t)) + eps)
        p_{t+1} = p_t - lr_t * (d_t + weight_decay * p_t)

    The step is large where the gradient agrees with its prediction ``m_t``
    (small ``s_t``) and small where it does not. Optax's defaults
    ``eps = eps_root = 1e-16`` differ from the paper's (``eps=1e-8``,
    ``eps_root=0``). Optax's ``adabelief`` has no weight decay; fnopt's
    ``weight_decay`` is decoupled (added after the scaling, multiplied by the
    learning rate: the official AdaBelief's ``weight_decouple=True``), default
    0 so that the default chain is Optax's.

    Args:
        learning_rate: >= 0; float, traced array, schedule or group tree
            (required, as in Optax).
        b1: first moment decay, in [0, 1).
        b2: decay of the prediction error's second moment, in [0, 1).
        eps: added to the bias-corrected root, >= 0.
        eps_root: added to the second moment each step, >= 0.
        nesterov: Nesterov momentum (static), Optax's.
        weight_decay: decoupled decay coefficient, >= 0.
        mask: which leaves get weight decay, Optax's meaning: ``None`` (all),
            a pytree of bools (a prefix of the params) or a callable
            ``params -> bools``.
        mu_dtype: dtype of ``mu`` for real params (default: the params').
        nu_dtype: dtype of ``nu`` (default: the params' real dtype). Optax
            has neither option.

    Returns:
        ``chain(scale_by_belief, add_decayed_weights, scale_by_learning_rate)``
        (the decay left out when ``weight_decay`` is the number 0).

    References:
        Zhuang et al., AdaBelief Optimizer: Adapting Stepsizes by the Belief
        in Observed Gradients, NeurIPS 2020, https://arxiv.org/abs/2010.07468

    Examples:
        >>> import jax, jax.numpy as jnp, optax, fnopt
        >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
        >>> params, opt = jnp.zeros(2), fnopt.adabelief(0.1)
        >>> state = opt.init(params)
        >>> for _ in range(300):
        ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < 1e-3)
        True
    """
    call = "adabelief"
    hp = Hypers(call, BELIEF_RULES, learning_rate=learning_rate, weight_decay=weight_decay)
    return with_group_check(hp, chain_stages(
        _scale_by_belief(call, b1, b2, eps, eps_root, nesterov, mu_dtype, nu_dtype),
        decoupled_decay(call, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    ))
