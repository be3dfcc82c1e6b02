"""Prodigy (Mishchenko & Defazio 2023): Adam whose step size ``d`` is
estimated on the fly, so the learning rate stays at 1 (or a schedule with
1 as its peak). Optax ``contrib.prodigy`` step for step."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._base import Hyper, Hypers, check_shapes, distinct, flatten_like, next_count, zero_count
from ._checks import as_float, check_flag, float_dtype
from ._common import RULES, compute_dtype, full_like, is_zero, require_params, storage_dtype
from ._elementwise import check_mask, scale_by_learning_rate
from ._chain import friendly

_BETA = {"low": 0.0, "high": 1.0, "high_open": True, "groups": False}
LOCAL_RULES: dict[str, dict[str, Any]] = {
    # d is one estimate for the whole update: what enters it is one value.
    "b1": _BETA,
    "b2": _BETA,
    "beta3": _BETA,
    "estim_lr0": {"low": 0.0, "low_open": True, "groups": False},
    "estim_lr_coef": {"low": 0.0, "low_open": True, "groups": False},
}


class ScaleByProdigyState(NamedTuple):
    """State of :func:`scale_by_prodigy`.

    Attributes:
        count: updates applied so far (int32, saturating).
        exp_avg: EMA of ``d * g``, in ``mu_dtype`` (default: the params' dtype).
        exp_avg_sq: EMA of ``(d * g)^2``, in the params' dtype.
        grad_sum: the weighted sum ``s`` of the gradients, in the params' dtype.
        params0: the params given to ``init`` (the estimate's origin).
        d: the step-size estimate (default float dtype); starts at ``estim_lr0``.
        numerator_weighted: the estimate's numerator (default float dtype).
        hyperparams: ``d`` and the hyperparameters used by the last update
            (``d`` multiplies the learning rate in ``effective_learning_rate``).
    """

    count: jax.Array
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    grad_sum: optax.Updates
    params0: optax.Params
    d: jax.Array
    numerator_weighted: jax.Array
    hyperparams: dict[str, jax.Array]


def _leaf_mask(mask: Any, params: Any) -> list[bool]:
    """Optax's ``masked`` meaning, one bool per leaf of ``params``."""
    if mask is None:
        return [True] * len(jax.tree.leaves(params))
    tree = mask(params) if callable(mask) else mask
    spread = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), tree, params)
    return jax.tree.leaves(spread)


def scale_by_prodigy(
    learning_rate: Hyper = 1.0,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    beta3: Hyper | None = None,
    eps: Hyper = 1e-8,
    estim_lr0: Hyper = 1e-6,
    estim_lr_coef: Hyper = 1.0,
    weight_decay: Hyper = 0.0,
    *,
    safeguard_warmup: bool = False,
    mask: Any = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Prodigy's direction, ``d`` times the Adam step on ``d``-scaled
    gradients (without the learning rate, which only enters the estimate).

    ``learning_rate`` must be the one the chain applies afterwards
    (:func:`fnopt.prodigy` passes it to both). See :func:`fnopt.prodigy` for
    the algorithm and the arguments.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state
        :class:`ScaleByProdigyState`; ``update`` needs ``params``.
    """
    return _scale_by_prodigy(
        "scale_by_prodigy", learning_rate, b1, b2, beta3, eps, estim_lr0, estim_lr_coef, weight_decay,
        safeguard_warmup, mask, mu_dtype,
    )


def _scale_by_prodigy(call, learning_rate, b1, b2, beta3, eps, estim_lr0, estim_lr_coef, weight_decay,
                      safeguard_warmup, mask, mu_dtype):
    rules = {**RULES, **LOCAL_RULES}
    values = dict(b1=b1, b2=b2, eps=eps, estim_lr0=estim_lr0, estim_lr_coef=estim_lr_coef, weight_decay=weight_decay)
    if beta3 is not None:
        values["beta3"] = beta3
    hp = Hypers(call, rules, **values)
    lr_hp = Hypers(call, rules, learning_rate=learning_rate)
    check_flag(call, "safeguard_warmup", safeguard_warmup)
    check_mask(call, mask)
    mu_dtype = storage_dtype(call, mu_dtype)

    def init(params):
        if any(jnp.iscomplexobj(p) for p in jax.tree.leaves(params)):
            raise ValueError(f"`{call}`: complex params are not supported (Prodigy's estimate is defined for real params)")
        record = hp.record(zero_count(), params)
        lr_hp.layout(params)
        d = as_float(record["estim_lr0"])
        zeros = full_like(params)
        state = ScaleByProdigyState(
            zero_count(), full_like(params, 0.0, mu_dtype), zeros, zeros, jax.tree.map(jnp.copy, params), d, jnp.zeros([], float_dtype()), {}
        )
        return distinct(state._replace(hyperparams={**record, "d": d}))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        require_params(call, params)
        check_shapes(call, updates, state.exp_avg, state.params0, params)
        h = hp.at(state.count, updates)
        lr = lr_hp.at(state.count, updates)
        single = h.single
        b1_, b2_, d0, coef = single["b1"], single["b2"], single["estim_lr0"], single["estim_lr_coef"]
        b3 = single["beta3"] if beta3 is not None else jnp.sqrt(b2_)
        t = as_float(next_count(state.count))
        bc = (1 - b2_**t) ** 0.5 / (1 - b1_**t)  # as Optax writes it
        d = state.d

        leaves, treedef = jax.tree.flatten(updates)
        n = len(leaves)
        rest = [flatten_like(call, treedef, x) for x in (state.exp_avg, state.exp_avg_sq, state.grad_sum, state.params0, params)]
        decayed = _leaf_mask(mask, params)
        numerator = jnp.zeros([], float_dtype())
        moments, sums = [], []
        for i, (v, lv, g) in enumerate(zip(h.per_leaf(n), lr.per_leaf(n), leaves)):
            ea, eas, s, p0, p = (r[i] for r in rest)
            cd = compute_dtype(g)
            dlr = d * lv["learning_rate"] * bc
            g_c = g.astype(cd)
            numerator = numerator + dlr * as_float(jnp.sum(g_c * (p0.astype(cd) - p.astype(cd))))
            dg = d.astype(cd) * g_c
            ea_new = b1_.astype(cd) * ea.astype(cd) + (1 - b1_).astype(cd) * dg
            eas_new = b2_.astype(cd) * eas.astype(cd) + (1 - b2_).astype(cd) * dg * dg
            weight = (d if safeguard_warmup else dlr) / d0
            s_new = b3.astype(cd) * s.astype(cd) + weight.astype(cd) * dg
            moments.append((ea_new, eas_new, v, dlr))
            sums.append(s_new)
        numerator_weighted = b3 * state.numerator_weighted + (d / d0) * numerator
        denominator = sum((as_float(jnp.sum(jnp.abs(s))) for s in sums), jnp.zeros([], float_dtype()))
        # Optax divides 0 by 0 (NaN) while every gradient so far was zero; d then stays.
        estimate = jnp.where(denominator > 0, coef * numerator_weighted / jnp.where(denominator > 0, denominator, 1.0), 0.0)
        d_new = jnp.maximum(d, estimate)

        outs = []
        for i, ((ea_new, eas_new, v, dlr), g) in enumerate(zip(moments, leaves)):
            cd = compute_dtype(g)
            step = (d * bc).astype(cd)
            out = step * ea_new / (jnp.sqrt(eas_new) + (d_new * v["eps"]).astype(cd))  # the new d, as Optax
            if decayed[i] and not is_zero(weight_decay):
                out = out + step * v["weight_decay"].astype(cd) * rest[4][i].astype(cd)
            outs.append(out.astype(g.dtype))
        unflat = treedef.unflatten
        new_state = ScaleByProdigyState(
            next_count(state.count),
            unflat([m[0].astype(e.dtype) for m, e in zip(moments, rest[0])]),
            unflat([m[1].astype(e.dtype) for m, e in zip(moments, rest[1])]),
            unflat([s.astype(e.dtype) for s, e in zip(sums, rest[2])]),
            state.params0,
            d_new,
            numerator_weighted,
            {**h.record, "d": d_new},
        )
        return unflat(outs), new_state

    return optax.GradientTransformationExtraArgs(init, update)


@friendly
def prodigy(
    learning_rate: Hyper = 1.0,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    beta3: Hyper | None = None,
    eps: Hyper = 1e-8,
    estim_lr0: Hyper = 1e-6,
    estim_lr_coef: Hyper = 1.0,
    weight_decay: Hyper = 0.0,
    *,
    safeguard_warmup: bool = False,
    mask: Any = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Prodigy: AdamW with a learned step size ``d`` (learning-rate free):
    ``optax.contrib.prodigy`` step for step (float32 rounding), with
    Optax's ``betas=(b1, b2)`` as ``b1``, ``b2``.

    With ``t`` counted from 1, ``lr_t`` the learning rate (a multiplier,
    1 by default), ``bc_t = sqrt(1 - b2^t) / (1 - b1^t)``,
    ``dlr_t = d_t lr_t bc_t`` and ``x_0`` the params at ``init``::

        m_t = b1 m_{t-1} + (1 - b1) d_t g_t,    v_t = b2 v_{t-1} + (1 - b2) d_t^2 g_t^2
        s_t = b3 s_{t-1} + (dlr_t / d_0) d_t g_t          (safeguard_warmup: d_t instead of dlr_t)
        r_t = b3 r_{t-1} + (d_t / d_0) dlr_t <g_t, x_0 - x_t>
        d_{t+1} = max(d_t, estim_lr_coef * r_t / ||s_t||_1)
        x_{t+1} = x_t - dlr_t (m_t / (sqrt(v_t) + d_{t+1} eps) + weight_decay x_t)

    with ``d_1 = d_0 = estim_lr0`` and ``b3 = sqrt(b2)`` unless given.
    ``d`` never decreases; while every gradient has been zero it stays
    (Optax computes 0/0 there). ``d`` is recorded in the state's
    ``hyperparams`` and multiplies the learning rate in
    ``fnopt.hyperparams``' ``effective_learning_rate`` (``lr_t * d``).

    ``learning_rate``, ``eps`` and ``weight_decay`` may be group trees: the
    estimate ``d`` is shared (as in the reference implementation's param
    groups), each group steps with its own ``lr * d``. ``b1``, ``b2``,
    ``beta3``, ``estim_lr0`` and ``estim_lr_coef`` enter the shared
    estimate, so each is one value (number, traced or schedule). Complex
    params raise (the estimate is defined for real params).

    Args:
        learning_rate: a multiplier of the learned step, >= 0 (1.0; a warmup
            / decay schedule with peak 1 is the recommended use).
        b1: first moment decay, in [0, 1).
        b2: second moment decay, in [0, 1).
        beta3: decay of the estimate's sums, in [0, 1) (``None``: ``sqrt(b2)``).
        eps: added to the root, scaled by ``d``, >= 0.
        estim_lr0: the initial (under-)estimate ``d_0``, > 0.
        estim_lr_coef: multiplies the estimates, > 0.
        weight_decay: decoupled (AdamW) decay, multiplied by ``dlr``, >= 0.
        safeguard_warmup: leave ``lr`` out of ``s`` (for warmups, static).
        mask: which leaves get weight decay (Optax's meaning).
        mu_dtype: dtype of ``m`` (default: the params' dtype).

    Returns:
        ``chain(scale_by_prodigy, scale_by_learning_rate)``; ``update`` needs
        ``params``. The state keeps a copy of the initial params.

    Examples:
        >>> import jax, jax.numpy as jnp, optax, fnopt
        >>> opt = fnopt.prodigy()
        >>> params = jnp.array([1.0, -2.0])
        >>> state = opt.init(params)
        >>> for _ in range(30):
        ...     updates, state = opt.update(jax.grad(lambda p: p @ p)(params), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> hp = fnopt.hyperparams(state)
        >>> bool(hp["d"] > 1e-3), bool(hp["effective_learning_rate"] == hp["d"])
        (True, True)

    References:
        Mishchenko & Defazio, Prodigy: An Expeditiously Adaptive
        Parameter-Free Learner, ICML 2024, https://arxiv.org/abs/2306.06101
    """
    call = "prodigy"
    Hypers(call, {**RULES, **LOCAL_RULES}, learning_rate=learning_rate)
    return optax.chain(
        _scale_by_prodigy(
            call, learning_rate, b1, b2, beta3, eps, estim_lr0, estim_lr_coef, weight_decay,
            safeguard_warmup, mask, mu_dtype,
        ),
        scale_by_learning_rate(learning_rate),
    )
