"""Layer-wise trust ratios: each leaf's update rescaled by
``||param|| / ||update||``, and the two optimizers built on it, LARS (SGD
with momentum) and LAMB (Adam), with Optax 0.2.8's defaults and numerics."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from ._adam import scale_by_adam
from ._common import with_group_check
from ._elementwise import chain_stages, decoupled_decay
from ._base import Hyper, Hypers, Resolved, per_group
from ._checks import check_flag
from ._common import RULES, abs2, compute_dtype, is_zero, require_params, storage_dtype
from ._elementwise import _recording, apply_mask, check_mask, scale_by_learning_rate
from ._momentum import scale_by_momentum
from ._chain import friendly

TRUST_RULES = {
    **RULES,
    "min_norm": {"low": 0.0},
    "trust_coefficient": {"low": 0.0},
    "eps_root": {"low": 0.0},
}


def _norm(x):
    """The L2 norm of a whole leaf, as ``jnp.linalg.norm`` computes it."""
    return jnp.sqrt(jnp.sum(abs2(x)))


def _trust_ratio(call: str, mask: Any, mask_name: str, **values: Hyper) -> optax.GradientTransformationExtraArgs:
    """The trust-ratio scaling; a hyperparameter left out of ``values`` takes
    Optax's default (``min_norm=0``, ``trust_coefficient=1``, ``eps=0``) as a
    constant and is not recorded."""
    hp = Hypers(call, TRUST_RULES, **values)
    check_mask(call, mask, mask_name)

    @per_group
    def coef(v, rd):
        return tuple(v[name].astype(rd) if name in v else None for name in ("min_norm", "trust_coefficient", "eps"))

    def apply(updates, params, h: Resolved):
        require_params(call, params)

        def leaf(v, u, p):
            cd = compute_dtype(u)
            rd = jnp.finfo(cd).dtype
            min_norm, coefficient, eps = coef(v, rd)
            p_norm, u_norm = _norm(p.astype(compute_dtype(p))).astype(rd), _norm(u.astype(cd))
            if min_norm is not None:
                p_norm, u_norm = jnp.maximum(p_norm, min_norm), jnp.maximum(u_norm, min_norm)
            numerator = p_norm if coefficient is None else coefficient * p_norm
            ratio = numerator / (u_norm if eps is None else u_norm + eps)
            # A zero param or update norm leaves the update as it is (Optax's rule).
            ratio = jnp.where((p_norm == 0) | (u_norm == 0), jnp.ones_like(ratio), ratio)
            return (u.astype(cd) * ratio.astype(cd)).astype(u.dtype)

        return h.map(leaf, None, updates, params)

    return apply_mask(_recording(hp, apply), mask)


def scale_by_trust_ratio(
    min_norm: Hyper = 0.0,
    trust_coefficient: Hyper = 1.0,
    eps: Hyper = 0.0,
    *,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Rescales each leaf's update by its trust ratio: Optax's
    ``scale_by_trust_ratio``.

    For every leaf, with ``P = max(||p||, min_norm)`` and
    ``U = max(||u||, min_norm)`` (L2 norms over the whole leaf)::

        u <- u * trust_coefficient * P / (U + eps)     if P > 0 and U > 0
        u <- u                                         otherwise

    The ratio is 1 (not ``trust_coefficient``) where either norm is zero, as
    in Optax: a zero-initialized leaf (a bias) then takes the plain update.
    ``update`` needs ``params``.

    Args:
        min_norm: lower bound for both norms, >= 0.
        trust_coefficient: multiplier of the ratio, >= 0.
        eps: added to the update norm, >= 0.
        mask: which leaves are rescaled, Optax's meaning (``optax.masked``):
            ``None`` (all), a pytree of bools (a prefix of the params) or a
            callable ``params -> bools``; the others pass through unchanged.
            Optax's ``lars(trust_ratio_mask=...)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from fnopt import transforms
        >>> tx = transforms.scale_by_trust_ratio()
        >>> params = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(1)}
        >>> u, _ = tx.update({"w": jnp.array([0.1, 0.0]), "b": jnp.ones(1)}, tx.init(params), params)
        >>> u["w"].tolist(), u["b"].tolist()  # ||w|| / ||u|| = 50; ||b|| = 0 keeps the update
        ([5.0, 0.0], [1.0])
    """
    return _trust_ratio(
        "scale_by_trust_ratio", mask, "mask", min_norm=min_norm, trust_coefficient=trust_coefficient, eps=eps
    )


@friendly
def lars(
    learning_rate: Hyper,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
    trust_coefficient: Hyper = 0.001,
    eps: Hyper = 0.0,
    trust_ratio_mask: Any = None,
    momentum: Hyper = 0.9,
    nesterov: bool = False,
    *,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """LARS: Optax's ``lars`` (same defaults, same order of stages).

    For each leaf (a layer's weight or bias), with ``lambda`` the weight decay::

        d_t = g_t + lambda * p_t
        r_t = trust_coefficient * ||p_t|| / (||d_t|| + eps)   (1 if a norm is 0)
        b_t = momentum * b_{t-1} + lr_t * r_t * d_t           (b_{-1} = 0)
        p_{t+1} = p_t - b_t                                   (nesterov: - lr_t r_t d_t - momentum b_t)

    As in Optax the learning rate is applied *before* the momentum, so the
    buffer holds past steps (a scheduled learning rate weighs each past
    gradient by its own step's rate), and the decay enters the trust ratio.
    The momentum is Optax's ``trace`` (``b_0 = g_0``, no dampening), which is
    :func:`fnopt.transforms.scale_by_momentum`.

    Mapping from Optax: ``weight_decay_mask`` is ``mask``; ``trust_ratio_mask``
    is ``trust_ratio_mask``; ``None`` means every leaf (Optax's default
    ``True``, which fnopt also accepts). A common choice spares biases and
    norms from both: ``mask = trust_ratio_mask = lambda p:
    jax.tree.map(lambda x: x.ndim > 1, p)``.

    Args:
        learning_rate: >= 0; float, traced array, schedule or group tree
            (required, as in Optax).
        weight_decay: decay coefficient, >= 0, added to the gradient before
            the trust ratio.
        mask: which leaves get weight decay (Optax's ``weight_decay_mask``):
            ``None`` (all), a pytree of bools (a prefix of the params) or a
            callable ``params -> bools``.
        trust_coefficient: multiplier of the trust ratio, >= 0.
        eps: added to the update norm in the trust ratio, >= 0.
        trust_ratio_mask: which leaves are rescaled by the trust ratio (same
            forms as ``mask``).
        momentum: in [0, 1); the number 0 leaves the momentum out.
        nesterov: Nesterov momentum (static).
        mu_dtype: dtype of the momentum buffer (default: the params').

    Returns:
        ``chain(add_decayed_weights, scale_by_trust_ratio,
        scale_by_learning_rate, scale_by_momentum)``. ``update`` needs
        ``params``.

    References:
        You, Gitman & Ginsburg, Large Batch Training of Convolutional
        Networks, 2017, https://arxiv.org/abs/1708.03888

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> params = jnp.array([3.0, 4.0])
        >>> opt = fnopt.lars(0.1, trust_coefficient=0.01)
        >>> updates, _ = opt.update(jnp.array([0.0, 0.5]), opt.init(params), params)
        >>> [round(x, 4) for x in updates.tolist()]  # -0.1 * 0.01 * 5 / 0.5 * g
        [0.0, -0.005]
    """
    call = "lars"
    hp = Hypers(call, TRUST_RULES, learning_rate=learning_rate, weight_decay=weight_decay, momentum=momentum)
    check_flag(call, "nesterov", nesterov)
    storage_dtype(call, mu_dtype)
    return with_group_check(hp, chain_stages(
        decoupled_decay(call, weight_decay, mask),
        _trust_ratio(call, trust_ratio_mask, "trust_ratio_mask", trust_coefficient=trust_coefficient, eps=eps),
        scale_by_learning_rate(learning_rate),
        None if is_zero(momentum) else scale_by_momentum(momentum, nesterov=nesterov, mu_dtype=mu_dtype),
    ))


@friendly
def lamb(
    learning_rate: Hyper,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-6,
    eps_root: Hyper = 0.0,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """LAMB: Optax's ``lamb`` (same defaults, same order of stages).

    With ``t`` counted from 1, zero initial moments and ``lambda`` the weight
    decay, for each leaf::

        m_t = b1 m_{t-1} + (1 - b1) g_t,      v_t = b2 v_{t-1} + (1 - b2) |g_t|^2
        d_t = (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t) + eps_root) + eps) + lambda * p_t
        r_t = ||p_t|| / ||d_t||                                 (1 if a norm is 0)
        p_{t+1} = p_t - lr_t * r_t * d_t

    The decay is added to the Adam direction before the trust ratio (only on
    the leaves ``mask`` selects); the trust ratio acts on every leaf, with
    Optax's ``scale_by_trust_ratio`` defaults (no ``min_norm``, coefficient
    1, no ``eps``). Complex params: ``v`` is the EMA of ``|g|^2``, as in Optax.

    Args:
        learning_rate: >= 0; float, traced array, schedule or group tree
            (required, as in Optax).
        b1: first moment decay, in [0, 1).
        b2: second moment decay, in [0, 1).
        eps: added to the bias-corrected root, >= 0.
        eps_root: added to the bias-corrected second moment inside the root,
            >= 0.
        weight_decay: decay coefficient, >= 0.
        mask: which leaves get weight decay, Optax's meaning: ``None`` (all),
            a pytree of bools (a prefix of the params) or a callable
            ``params -> bools``.
        mu_dtype: dtype of the first moment for real params (default: the
            params'); Optax's ``lamb`` lacks it.
        nu_dtype: dtype of the second moment (default: the params' real dtype).

    Returns:
        ``chain(scale_by_adam, add_decayed_weights, scale_by_trust_ratio,
        scale_by_learning_rate)``. ``update`` needs ``params``.

    References:
        You et al., Large Batch Optimization for Deep Learning: Training BERT
        in 76 minutes, ICLR 2020, https://arxiv.org/abs/1904.00962

    Examples:
        Each step has length ``lr * ||p||`` whatever the gradient's scale, so
        a decaying learning rate lets it settle:

        >>> import jax, jax.numpy as jnp, optax, fnopt
        >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
        >>> params, opt = jnp.ones(2), fnopt.lamb(fnopt.schedules.cosine_decay(0.05, 300))
        >>> state = opt.init(params)
        >>> for _ in range(300):
        ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < 1e-3)
        True
    """
    call = "lamb"
    hp = Hypers(
        call, TRUST_RULES, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay
    )
    storage_dtype(call, mu_dtype)
    storage_dtype(call, nu_dtype, "nu_dtype")
    return with_group_check(hp, chain_stages(
        scale_by_adam(b1, b2, eps, eps_root=eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        decoupled_decay(call, weight_decay, mask),
        _trust_ratio(call, None, "mask"),
        scale_by_learning_rate(learning_rate),
    ))
