"""Schedule-Free learning (Defazio et al. 2024): the interpolation and
averaging stage that replaces momentum, the evaluation params, and the SGD
and AdamW aliases (Optax ``contrib.schedule_free_*`` step for step)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._base import (
    Hyper,
    Hypers,
    check_shapes,
    distinct,
    first_of_groups,
    flatten_like,
    is_group_tree,
    leaf_groups,
    next_count,
    per_group,
    zero_count,
)
from ._checks import as_float, check_range, check_scalar, float_dtype, is_traced
from ._common import RULES, storage_dtype, compute_dtype, fill_like, is_zero, may_be_zero, require_params, safe_divide
from ._compose import warmup
from ._elementwise import add_decayed_weights, add_weight_decay, check_mask, scale_by_learning_rate
from ._report import records
from ._chain import friendly

LOCAL_RULES: dict[str, dict[str, Any]] = {
    "b1": {"low": 0.0, "high": 1.0, "low_open": True},  # (0, 1]: the eval params divide by b1
    "weight_lr_power": {"low": 0.0},
    "r": {"low": 0.0},
}


def _rules() -> dict[str, dict[str, Any]]:
    return {**RULES, **LOCAL_RULES}


class ScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free`.

    Attributes:
        count: updates applied so far (int32, saturating).
        z: the base optimizer's iterate, in ``state_dtype`` (default: the
            params' dtype).
        b1: per averaging group, the ``b1`` that formed the current params
            ``y = b1 x + (1 - b1) z`` (default float dtype), so that ``x``
            can be recovered exactly (:func:`schedule_free_eval_params`).
        max_lr: per averaging group, the largest learning rate seen.
        weight_sum: per averaging group, the sum of the averaging weights.
        group: int32, shape ``[number of params leaves]``: each leaf's
            averaging group (an index into ``b1``, ``max_lr``,
            ``weight_sum``), in the params' flattening order. The groups are
            the distinct combinations of the groups of ``learning_rate``,
            ``b1``, ``weight_lr_power`` and ``r``, numbered in order of first
            occurrence; ``b1``, ``max_lr`` and ``weight_sum`` are tuples of
            scalars, one per group (one in all when nothing is grouped), as
            Optax keeps one of each: the leaves of a group share their
            values, and one per leaf would cost a kernel per leaf in every step.
        hyperparams: ``b1``, ``weight_lr_power``, ``r`` used by the last update.
    """

    count: jax.Array
    z: optax.Params
    b1: tuple[jax.Array, ...]
    max_lr: tuple[jax.Array, ...]
    weight_sum: tuple[jax.Array, ...]
    group: jax.Array
    hyperparams: dict[str, jax.Array]


def schedule_free(
    learning_rate: Hyper,
    b1: Hyper = 0.9,
    weight_lr_power: Hyper = 2.0,
    r: Hyper = 0.0,
    *,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Schedule-Free interpolation and averaging, as the *last* stage of a
    chain whose earlier stages make the base step (with the learning rate,
    without momentum).

    The params are ``y_t``; the incoming update ``u_t`` is the base step,
    taken by the sequence ``z`` (which starts at the params). With
    ``c_t = w_t / sum_{s<=t} w_s`` and ``w_t = (t+1)^r * max_{s<=t} lr_{s+1}^weight_lr_power``::

        z_{t+1} = z_t + u_t
        x_t     = (y_t - (1 - b1) z_t) / b1                # recomputed, not stored
        x_{t+1} = (1 - c_t) x_t + c_t z_{t+1}
        y_{t+1} = b1 x_{t+1} + (1 - b1) z_{t+1}

    and the emitted update is ``y_{t+1} - y_t``. Evaluate the model at ``x``
    (:func:`schedule_free_eval_params`). As Optax's ``contrib.schedule_free``,
    ``w_t`` reads ``learning_rate`` one step ahead (at ``t + 1``, Optax's
    ``step_count``); pass the same ``learning_rate`` as the base step's.
    ``x_t`` is recomputed with the ``b1`` that formed ``y_t`` (kept in the
    state), so a scheduled ``b1`` stays exact. The averaging is per group of
    every grouped hyperparameter (``learning_rate={"a": .., "b": ..}`` gives
    each group its own ``max_lr`` and weights, like separate optimizers).
    ``update`` needs ``params``. Arithmetic in at least float32.

    Args:
        learning_rate: the base step's learning rate (only its size enters
            the weights), >= 0; number, traced, schedule or group tree.
        b1: interpolation between ``x`` and ``z``, in (0, 1].
        weight_lr_power: exponent of the largest LR in the weights, >= 0.
        r: exponent of ``t + 1`` in the weights (the reference
            implementation's ``r``; Optax has none, i.e. 0), >= 0.
        state_dtype: dtype of ``z`` (default: the params' dtype).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state
        :class:`ScheduleFreeState`.
    """
    return _schedule_free("schedule_free", learning_rate, b1, weight_lr_power, r, state_dtype)


def _state_dtype(call: str, dtype: Any) -> Any:
    return storage_dtype(call, dtype, "state_dtype", complex_ok=True)


def _schedule_free(call, learning_rate, b1, weight_lr_power, r, state_dtype):
    rules = _rules()
    hp = Hypers(call, rules, b1=b1, weight_lr_power=weight_lr_power, r=r)
    lr_hp = Hypers(call, rules, learning_rate=learning_rate)
    state_dtype = _state_dtype(call, state_dtype)

    def init(params):
        start = hp.at(zero_count(), params)
        groups, n_groups = leaf_groups(params, hp, lr_hp)
        z = jax.tree.map(lambda p: jnp.array(p, dtype=state_dtype or p.dtype, copy=True), params)
        b1s = tuple(v["b1"] for v in first_of_groups(groups, n_groups, start.per_leaf(len(groups))))
        zeros = tuple(jnp.zeros([], float_dtype()) for _ in range(n_groups))
        group = jnp.asarray(groups, dtype=jnp.int32).reshape(len(groups))
        return distinct(ScheduleFreeState(zero_count(), z, b1s, zeros, zeros, group, start.record))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        require_params(call, params)
        check_shapes(call, updates, state.z, params)
        h = hp.at(state.count, updates)
        lr_next = lr_hp.at(next_count(state.count), updates)
        leaves, treedef = jax.tree.flatten(updates)
        n = len(leaves)
        groups, n_groups = leaf_groups(updates, hp, lr_hp)
        if not len(state.b1) == len(state.max_lr) == len(state.weight_sum) == n_groups:
            raise ValueError(
                f"`{call}.update`: the state holds {len(state.b1)} averaging groups but the updates make "
                f"{n_groups} groups of learning_rate, b1, weight_lr_power and r; use the state `init` made for these params"
            )
        t1 = as_float(next_count(state.count))

        # The averaging weights are the same for every leaf of a group: once per group.
        def group_step(v, lr_v, max_lr, weight_sum):
            max_lr = jnp.maximum(max_lr, lr_v["learning_rate"])
            w = t1 ** v["r"] * max_lr ** v["weight_lr_power"]
            total = weight_sum + w
            # Optax's guard: a zero total (no weight yet) gives c = 0, not NaN.
            c = jnp.where(jnp.isnan(w) | jnp.isnan(total), jnp.nan, jnp.nan_to_num(w / total, nan=0.0, posinf=jnp.inf))
            return c, max_lr, total

        values = first_of_groups(groups, n_groups, h.per_leaf(n))
        lr_values = first_of_groups(groups, n_groups, lr_next.per_leaf(n))
        steps = [group_step(*args) for args in zip(values, lr_values, state.max_lr, state.weight_sum)]

        def leaf(k, u, z, y):
            cd = compute_dtype(y)
            z_new = (z.astype(cd) + u.astype(cd)).astype(z.dtype)
            zc, yc = z_new.astype(cd), y.astype(cd)
            bp = state.b1[k].astype(cd)
            x = (yc - (1 - bp) * z.astype(cd)) / bp
            cc = steps[k][0].astype(cd)
            x = (1 - cc) * x + cc * zc
            bn = values[k]["b1"].astype(cd)
            y_new = bn * x + (1 - bn) * zc
            return (y_new - yc).astype(u.dtype), z_new

        rest = [flatten_like(call, treedef, tree) for tree in (state.z, params)]
        outs = [leaf(k, u, *(r_[i] for r_ in rest)) for i, (k, u) in enumerate(zip(groups, leaves))]
        out, z = (treedef.unflatten([o[j] for o in outs]) for j in range(2))
        b1s = tuple(v["b1"] for v in values)
        max_lr = tuple(s_[1] for s_ in steps)
        weight_sum = tuple(s_[2] for s_ in steps)
        return out, ScheduleFreeState(next_count(state.count), z, b1s, max_lr, weight_sum, state.group, h.record)

    return optax.GradientTransformationExtraArgs(init, update)


def schedule_free_eval_params(opt_state: Any, params: optax.Params) -> optax.Params:
    """The params to evaluate a Schedule-Free model at: the average ``x``,
    ``(y - (1 - b1) z) / b1`` (``optax.contrib.schedule_free_eval_params``).

    Args:
        opt_state: a state holding exactly one :class:`ScheduleFreeState` at
            any depth (a plain state, an ``nnx.Optimizer`` or its state, a
            Linen ``TrainState``).
        params: the current params ``y`` (what training updates).

    Returns:
        ``x``, shaped and typed like ``params``.

    Examples:
        >>> import jax.numpy as jnp, optax, fnopt
        >>> opt = fnopt.schedule_free_sgd(0.5)
        >>> params = jnp.array([1.0, 2.0])
        >>> state = opt.init(params)
        >>> updates, state = opt.update(params, state, params)  # gradient of |p|^2 / 2
        >>> params = optax.apply_updates(params, updates)
        >>> fnopt.schedule_free_eval_params(state, params).tolist()
        [0.5, 1.0]
    """
    found = records(opt_state, ScheduleFreeState)
    if len(found) != 1:
        raise ValueError(
            "`schedule_free_eval_params(opt_state, params)`: `opt_state` must hold exactly one "
            f"`schedule_free` state, found {len(found)}"
        )
    state = found[0]

    leaves, treedef = jax.tree.flatten(params)
    zs = flatten_like("schedule_free_eval_params", treedef, state.z)
    if jnp.shape(state.group) != (len(leaves),):
        raise ValueError(
            "`schedule_free_eval_params(opt_state, params)`: the state was made for "
            f"{jnp.shape(state.group)[0] if jnp.ndim(state.group) == 1 else '?'} params leaves, "
            f"`params` has {len(leaves)}"
        )
    if is_traced(state.group):  # each leaf's group is known only at run time
        b1s = jnp.stack(state.b1) if state.b1 else None
        per_leaf = [b1s[state.group[i]] for i in range(len(leaves))]
    else:
        per_leaf = [state.b1[k] for k in np.asarray(state.group).tolist()]

    def leaf(y, z, b):
        cd = compute_dtype(y)
        bc = b.astype(cd)
        return ((y.astype(cd) - (1 - bc) * z.astype(cd)) / bc).astype(y.dtype)

    return treedef.unflatten([leaf(y, z, b) for y, z, b in zip(leaves, zs, per_leaf)])


# ------------------------------------------------------------ the AdamW base


class ScaleByRmsDebiasedState(NamedTuple):
    """State of the AdamW base step of :func:`schedule_free_adamw`.

    Attributes:
        count: updates applied so far (int32, saturating).
        nu: EMA of ``|g|^2``, in the params' (real) dtype.
        hyperparams: ``b2`` and ``eps`` used by the last update.
    """

    count: jax.Array
    nu: optax.Updates
    hyperparams: dict[str, jax.Array]


def _scale_by_rms_debiased(call: str, b2: Hyper, eps: Hyper) -> optax.GradientTransformationExtraArgs:
    """Adam without momentum: ``g / (sqrt(nu_t / (1 - b2^t)) + eps)``
    (Optax's ``scale_by_rms(eps_in_sqrt=False, bias_correction=True)``)."""
    hp = Hypers(call, _rules(), b2=b2, eps=eps)
    zero_denominator = may_be_zero(eps)

    def init(params):
        nu = jax.tree.map(lambda p: fill_like(p, 0.0, jnp.finfo(p.dtype).dtype), params)  # real for complex params
        return ScaleByRmsDebiasedState(zero_count(), nu, hp.record(zero_count(), params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)
        t = as_float(next_count(state.count))

        @per_group
        def coef(v, cd):
            b = v["b2"]
            return b.astype(cd), (1 - b).astype(cd), (1 - b**t).astype(cd), v["eps"].astype(cd)

        def leaf(v, g, nu):
            cd = compute_dtype(g)
            rd = jnp.finfo(cd).dtype  # the real dtype of the second moment
            b, c, bc, e = coef(v, rd)
            g_c = g.astype(cd)
            square = jnp.real(g_c * jnp.conj(g_c)) if jnp.iscomplexobj(g_c) else g_c * g_c
            nu_new = b * nu.astype(rd) + c * square
            out = safe_divide(g_c, (jnp.sqrt(nu_new / bc) + e).astype(cd), zero_denominator)
            return out.astype(g.dtype), nu_new.astype(nu.dtype)

        out, nu = h.map(leaf, 2, updates, state.nu, params=params)
        return out, ScaleByRmsDebiasedState(next_count(state.count), nu, h.record)

    return optax.GradientTransformationExtraArgs(init, update)


# ------------------------------------------------------------------- aliases


def _warmed(call: str, learning_rate: Hyper, warmup_steps: Any) -> Hyper:
    """``learning_rate`` (each group's) after a linear warmup from 0."""
    if warmup_steps is None:
        return learning_rate
    check_scalar(call, "warmup_steps", warmup_steps)
    check_range(call, "warmup_steps", warmup_steps, 0.0)
    return jax.tree.map(lambda lr: warmup(lr, warmup_steps), learning_rate, is_leaf=lambda x: not is_group_tree(x))


def _check(call: str, **values: Hyper) -> None:
    """Validates the alias' values under its own name."""
    Hypers(call, _rules(), **values)


@friendly
def schedule_free_sgd(
    learning_rate: Hyper = 1.0,
    warmup_steps: Any = None,
    b1: Hyper = 0.9,
    weight_decay: Hyper = 0.0,
    weight_lr_power: Hyper = 2.0,
    r: Hyper = 0.0,
    *,
    state_dtype: Any = None,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Schedule-Free SGD (Defazio et al. 2024): Optax's
    ``contrib.schedule_free_sgd`` step for step (float32 rounding).

    SGD without momentum makes the base step, at the gradient taken at the
    params ``y_t`` (plus coupled weight decay ``weight_decay * y_t``); the
    averaging of :func:`~fnopt.transforms.schedule_free` replaces momentum::

        z_{t+1} = z_t - lr_t (g(y_t) + weight_decay y_t)
        x_{t+1} = (1 - c_t) x_t + c_t z_{t+1},   c_t = w_t / sum_{s<=t} w_s
        y_{t+1} = b1 x_{t+1} + (1 - b1) z_{t+1}

    with ``w_t = (t+1)^r max_{s<=t} lr_{s+1}^weight_lr_power``. Evaluate (and
    checkpoint for inference) at ``x`` = :func:`fnopt.schedule_free_eval_params`.

    The method is meant for a *constant* learning rate after a warmup
    (``warmup_steps``: linear from 0, Optax's ``warmup_constant_schedule``;
    the step at ``t`` uses ``lr_t``, the weight ``lr_{t+1}``, as in Optax,
    while the reference PyTorch code uses ``lr_{t+1}`` for both). fnopt
    still accepts any schedule or group tree for every hyperparameter (a
    schedule given with ``warmup_steps`` starts after the warmup); a
    decaying schedule gives up the point of the method.

    Args:
        learning_rate: >= 0 (default 1.0, Optax's).
        warmup_steps: ``None`` or the length of a linear warmup from 0, >= 0.
        b1: interpolation / momentum-like coefficient, in (0, 1].
        weight_decay: coupled, multiplied by the learning rate, >= 0.
        weight_lr_power: exponent of the largest LR in the averaging weights.
        r: polynomial weighting ``(t+1)^r`` of the averaging (reference
            implementation; 0 is Optax's).
        state_dtype: dtype of ``z`` (default: the params' dtype).
        mask: which leaves get weight decay (Optax's meaning).

    Returns:
        ``chain(add_weight_decay, scale_by_learning_rate, schedule_free)``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax, fnopt
        >>> opt = fnopt.schedule_free_sgd(0.1, warmup_steps=10)
        >>> params = jnp.array([1.0, 2.0])
        >>> state = opt.init(params)
        >>> for _ in range(50):
        ...     updates, state = opt.update(params, state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(jnp.abs(fnopt.schedule_free_eval_params(state, params)).max() < 0.05)
        True

    References:
        Defazio et al., The Road Less Scheduled, NeurIPS 2024,
        https://arxiv.org/abs/2405.15682
    """
    call = "schedule_free_sgd"
    _check(call, learning_rate=learning_rate, b1=b1, weight_decay=weight_decay, weight_lr_power=weight_lr_power, r=r)
    check_mask(call, mask)
    lr = _warmed(call, learning_rate, warmup_steps)
    return optax.chain(
        *([] if is_zero(weight_decay) else [add_weight_decay(weight_decay, mask=mask)]),
        scale_by_learning_rate(lr),
        _schedule_free(call, lr, b1, weight_lr_power, r, state_dtype),
    )


@friendly
def schedule_free_adamw(
    learning_rate: Hyper = 0.0025,
    warmup_steps: Any = None,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    weight_decay: Hyper = 0.0,
    weight_lr_power: Hyper = 2.0,
    r: Hyper = 0.0,
    *,
    state_dtype: Any = None,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Schedule-Free AdamW (Defazio et al. 2024): Optax's
    ``contrib.schedule_free_adamw`` step for step (float32 rounding).

    The base step is AdamW without momentum, at the params ``y_t``, with
    ``t`` counted from 1::

        v_t = b2 v_{t-1} + (1 - b2) |g_t|^2
        z_{t+1} = z_t - lr_t (g_t / (sqrt(v_t / (1 - b2^t)) + eps) + weight_decay y_t)

    then the averaging of :func:`fnopt.schedule_free_sgd` (``b1`` is the
    interpolation, not a moment decay). Evaluate at
    :func:`fnopt.schedule_free_eval_params`. The learning rate is meant to
    be constant after ``warmup_steps`` (see :func:`fnopt.schedule_free_sgd`;
    schedules and group trees are accepted anyway). Complex params use
    ``|g|^2``. It won the self-tuning track of AlgoPerf 2024.

    Args:
        learning_rate: >= 0 (default 0.0025, Optax's and the reference's).
        warmup_steps: ``None`` or the length of a linear warmup from 0, >= 0.
        b1: interpolation coefficient, in (0, 1].
        b2: second moment decay, in [0, 1).
        eps: added to the bias-corrected root, >= 0.
        weight_decay: decoupled (multiplied by the learning rate), >= 0.
        weight_lr_power: exponent of the largest LR in the averaging weights.
        r: polynomial weighting ``(t+1)^r`` of the averaging (0 is Optax's).
        state_dtype: dtype of ``z`` (default: the params' dtype).
        mask: which leaves get weight decay (Optax's meaning).

    Returns:
        ``chain(rms (bias-corrected, no momentum), add_decayed_weights,
        scale_by_learning_rate, schedule_free)``; ``v`` in the params' dtype.

    Examples:
        >>> import jax.numpy as jnp, optax, fnopt
        >>> opt = fnopt.schedule_free_adamw(0.1, warmup_steps=5, weight_decay=1e-4)
        >>> params = {"w": jnp.ones(3)}
        >>> state = opt.init(params)
        >>> updates, state = opt.update({"w": jnp.ones(3)}, state, params)
        >>> sorted(fnopt.hyperparams(state))[:3]
        ['b1', 'b2', 'effective_learning_rate']

    References:
        Defazio et al., The Road Less Scheduled, NeurIPS 2024,
        https://arxiv.org/abs/2405.15682
    """
    call = "schedule_free_adamw"
    _check(
        call, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
        weight_lr_power=weight_lr_power, r=r,
    )
    check_mask(call, mask)
    lr = _warmed(call, learning_rate, warmup_steps)
    return optax.chain(
        _scale_by_rms_debiased(call, b2, eps),
        *([] if is_zero(weight_decay) else [add_decayed_weights(weight_decay, mask=mask)]),
        scale_by_learning_rate(lr),
        _schedule_free(call, lr, b1, weight_lr_power, r, state_dtype),
    )
