"""Optimizers: short chains of the primitives ending in the learning rate.

Defaults are PyTorch's and the numerics follow ``torch.optim`` step for step.
Every numeric hyperparameter may be a float, a traced array or a schedule of
the step; the state records the values used by the last update
(``fnopt.hyperparams(state)``). A hyperparameter given as the Python number
``0`` (e.g. ``weight_decay=0.0``) leaves its stage out of the chain.
"""

from __future__ import annotations

from typing import Any

import optax

from ._adaptive import scale_by_adagrad, scale_by_adam, scale_by_radam, scale_by_rms
from ._base import Hyper
from ._checks import check_flag
from ._common import check_nesterov, hypers, is_zero, with_group_check
from ._elementwise import add_decayed_weights, add_weight_decay, check_mask, scale_by_learning_rate
from ._momentum import scale_by_momentum
from ._wrappers import lookahead


def _chain(*stages) -> optax.GradientTransformationExtraArgs:
    return optax.chain(*(s for s in stages if s is not None))


def _coupled_decay(call: str, weight_decay: Hyper, mask: Any):
    check_mask(call, mask)
    return None if is_zero(weight_decay) else add_weight_decay(weight_decay, mask=mask)


def _decoupled_decay(call: str, weight_decay: Hyper, mask: Any):
    check_mask(call, mask)
    return None if is_zero(weight_decay) else add_decayed_weights(weight_decay, mask=mask)


def sgd(
    learning_rate: Hyper = 1e-3,
    momentum: Hyper = 0.0,
    *,
    nesterov: bool = False,
    dampening: Hyper = 0.0,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
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
    return with_group_check(hp, _chain(
        _coupled_decay(call, weight_decay, mask),
        scale_by_momentum(momentum, nesterov=nesterov, dampening=dampening) if with_momentum else None,
        scale_by_learning_rate(learning_rate),
    ))


def adam(
    learning_rate: Hyper = 1e-3,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    *,
    amsgrad: bool = False,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
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
    return with_group_check(hp, _chain(
        _coupled_decay(call, weight_decay, mask),
        scale_by_adam(b1, b2, eps, amsgrad=amsgrad),
        scale_by_learning_rate(learning_rate),
    ))


def adamw(
    learning_rate: Hyper = 1e-3,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    weight_decay: Hyper = 1e-2,
    *,
    amsgrad: bool = False,
    mask: Any = None,
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
    return with_group_check(hp, _chain(
        scale_by_adam(b1, b2, eps, amsgrad=amsgrad),
        _decoupled_decay(call, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    ))


def radam(
    learning_rate: Hyper = 1e-3,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    *,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
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
    return with_group_check(hp, _chain(
        _coupled_decay(call, weight_decay, mask),
        scale_by_radam(b1, b2, eps),
        scale_by_learning_rate(learning_rate),
    ))


def adagrad(
    learning_rate: Hyper = 1e-2,
    initial_accumulator_value: Hyper = 0.0,
    eps: Hyper = 1e-10,
    *,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
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
    return with_group_check(hp, _chain(
        _coupled_decay(call, weight_decay, mask),
        scale_by_adagrad(initial_accumulator_value, eps),
        scale_by_learning_rate(learning_rate),
    ))


def rmsprop(
    learning_rate: Hyper = 1e-2,
    alpha: Hyper = 0.99,
    eps: Hyper = 1e-8,
    momentum: Hyper = 0.0,
    *,
    centered: bool = False,
    weight_decay: Hyper = 0.0,
    mask: Any = None,
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
    return with_group_check(hp, _chain(
        _coupled_decay(call, weight_decay, mask),
        scale_by_rms(alpha, eps, centered=centered),
        None if is_zero(momentum) else scale_by_momentum(momentum),
        scale_by_learning_rate(learning_rate),
    ))


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
    inner = _chain(
        scale_by_radam(b1, b2, eps),
        _decoupled_decay(call, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
    return with_group_check(hp, lookahead(inner, sync_period, alpha))
