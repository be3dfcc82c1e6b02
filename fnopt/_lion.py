"""Lion (EvoLved Sign Momentum): the sign of an interpolation between the
momentum and the gradient, with Optax 0.2.8's defaults and numerics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._common import with_group_check
from ._elementwise import chain_stages, decoupled_decay
from ._base import Hyper, Hypers, next_count, per_group, zero_count
from ._checks import check_choice
from ._common import RULES, compute_dtype, moment_like, storage_dtype
from ._elementwise import scale_by_learning_rate
from ._chain import friendly

LION_RULES = {**RULES, "smooth_beta": {"low": 0.0, "low_open": True}}
MODES = ("hard", "smooth", "refined")


class ScaleByLionState(NamedTuple):
    """State of :func:`scale_by_lion`.

    Attributes:
        count: updates applied so far (int32, saturating).
        mu: the momentum (EMA of gradients with ``b2``), in ``mu_dtype``
            (default: the params' dtype; complex params keep theirs).
        hyperparams: ``b1``, ``b2`` (and ``smooth_beta`` in ``"smooth"``
            mode) used by the last update.
    """

    count: jax.Array
    mu: optax.Updates
    hyperparams: dict[str, jax.Array]


def _scale_by_lion(call: str, b1: Hyper, b2: Hyper, mode: str, smooth_beta: Hyper, mu_dtype: Any):
    check_choice(call, "mode", mode, MODES)
    smooth = Hypers(call, LION_RULES, smooth_beta=smooth_beta).values  # validated in every mode
    hp = Hypers(call, LION_RULES, b1=b1, b2=b2, **(smooth if mode == "smooth" else {}))
    mu_dtype = storage_dtype(call, mu_dtype)

    def init(params):
        return ScaleByLionState(zero_count(), moment_like(params, mu_dtype), hp.record(zero_count(), params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)

        @per_group
        def coef(v, cd):
            b1, b2 = v["b1"].astype(cd), v["b2"].astype(cd)
            beta = v["smooth_beta"].astype(cd) if mode == "smooth" else None
            return b1, 1 - b1, b2, 1 - b2, beta

        def leaf(v, g, m):
            cd = compute_dtype(g)
            b1, c1, b2, c2, beta = coef(v, cd)
            g_c, m_c = g.astype(cd), m.astype(cd)
            x = c1 * g_c + b1 * m_c
            if mode == "hard":
                out = jnp.sign(x)
            elif mode == "smooth":
                out = jnp.tanh(beta * x)
            else:
                out = jnp.where(jnp.abs(x) < 1, x, jnp.sign(x))
            m_new = c2 * g_c + b2 * m_c
            return out.astype(g.dtype), m_new.astype(m.dtype)

        out, mu = h.map(leaf, 2, updates, state.mu, params=params)
        return out, ScaleByLionState(next_count(state.count), mu, h.record)

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_lion(
    b1: Hyper = 0.9,
    b2: Hyper = 0.99,
    mu_dtype: Any = None,
    *,
    mode: str = "hard",
    smooth_beta: Hyper = 1.0,
) -> optax.GradientTransformationExtraArgs:
    """Lion's direction (without the learning rate): Optax's ``scale_by_lion``.

    ``c_t = (1 - b1) g_t + b1 m_{t-1}``, update ``sign(c_t)``, then
    ``m_t = (1 - b2) g_t + b2 m_{t-1}`` (``m_{-1} = 0``). The ``mode``
    replaces the sign: ``"smooth"`` gives ``tanh(smooth_beta * c_t)``,
    ``"refined"`` keeps ``c_t`` where ``|c_t| < 1`` and its sign elsewhere.
    For complex params ``sign(c) = c / |c|`` (JAX's, as in Optax).

    Args:
        b1: interpolation between momentum and gradient, in [0, 1).
        b2: momentum decay, in [0, 1).
        mu_dtype: dtype of the momentum for real params (default: the params').
        mode: ``"hard"`` (sign, the paper's), ``"smooth"`` or ``"refined"``
            (static).
        smooth_beta: > 0, the tanh sharpness of ``"smooth"`` mode (recorded
            only in that mode).

    Examples:
        >>> import jax.numpy as jnp
        >>> from fnopt import transforms
        >>> tx = transforms.scale_by_lion()
        >>> u, _ = tx.update(jnp.array([0.5, -2.0, 0.0]), tx.init(jnp.zeros(3)))
        >>> u.tolist()
        [1.0, -1.0, 0.0]
    """
    return _scale_by_lion("scale_by_lion", b1, b2, mode, smooth_beta, mu_dtype)


@friendly
def lion(
    learning_rate: Hyper,
    b1: Hyper = 0.9,
    b2: Hyper = 0.99,
    mu_dtype: Any = None,
    weight_decay: Hyper = 1e-3,
    mask: Any = None,
    *,
    mode: str = "hard",
    smooth_beta: Hyper = 1.0,
) -> optax.GradientTransformationExtraArgs:
    """Lion: Optax's ``lion`` (same defaults, same numerics).

    With ``lambda`` the weight decay and ``m_{-1} = 0``::

        c_t = (1 - b1) g_t + b1 m_{t-1}
        p_{t+1} = p_t - lr_t * (sign(c_t) + lambda * p_t)
        m_t = (1 - b2) g_t + b2 m_{t-1}

    Only the sign of ``c_t`` is used, so every coordinate moves by ``lr``:
    a learning rate 3-10x smaller than AdamW's and a weight decay 3-10x
    larger keep ``lr * weight_decay`` comparable (the paper's advice). The
    decay is decoupled and multiplied by the learning rate, as in Optax and
    torch's AdamW. Complex params: ``sign(c) = c / |c|``, as in Optax.

    Args:
        learning_rate: >= 0; float, traced array, schedule or group tree
            (required, as in Optax).
        b1: interpolation between momentum and gradient, in [0, 1).
        b2: momentum decay, in [0, 1).
        mu_dtype: dtype of the momentum for real params (default: the
            params'); ``jnp.bfloat16`` halves the state.
        weight_decay: decoupled decay coefficient, >= 0 (Optax's default 1e-3).
        mask: which leaves get weight decay, Optax's meaning: ``None`` (all),
            a pytree of bools (a prefix of the params) or a callable
            ``params -> bools``.
        mode: the sign variant of :func:`fnopt.transforms.scale_by_lion`
            (static; Optax's ``lion`` always uses ``"hard"``).
        smooth_beta: > 0, the tanh sharpness in ``"smooth"`` mode.

    Returns:
        ``chain(scale_by_lion, add_decayed_weights, scale_by_learning_rate)``
        (the decay left out when ``weight_decay`` is the number 0). ``update``
        needs ``params`` when there is weight decay.

    References:
        Chen et al., Symbolic Discovery of Optimization Algorithms, 2023,
        https://arxiv.org/abs/2302.06675

    Examples:
        >>> import jax, jax.numpy as jnp, optax, fnopt
        >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
        >>> params, opt = jnp.zeros(2), fnopt.lion(0.01, weight_decay=0.0)
        >>> state = opt.init(params)
        >>> for _ in range(3):
        ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> [round(x, 4) for x in params.tolist()]  # each step moves lr = 0.01
        [0.03, 0.03]
    """
    call = "lion"
    hp = Hypers(call, LION_RULES, learning_rate=learning_rate, weight_decay=weight_decay)
    return with_group_check(hp, chain_stages(
        _scale_by_lion(call, b1, b2, mode, smooth_beta, mu_dtype),
        decoupled_decay(call, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    ))
