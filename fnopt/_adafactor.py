"""Adafactor with torch ``Adafactor``'s semantics: a factored second moment
(row and column means of ``g^2``) for tensors with two or more dimensions, a
full one for vectors and scalars, a relative step size scaled by the
parameters' RMS, and update clipping.

Every numeric hyperparameter may be a number, a traced array, a schedule of
the step or a group tree of those. Arithmetic runs in at least float32.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._base import Hyper, Hypers, check_shapes, flatten_like, next_count, per_group, zero_count
from ._checks import as_float
from ._common import (
    RULES,
    hypers,
    with_group_check,
    compute_dtype,
    fill_like,
    may_be_zero,
    require_params,
    safe_divide,
    storage_dtype,
)
from ._elementwise import chain_stages, decoupled_decay, flip_sign, scale_by_learning_rate
from ._chain import friendly

LOCAL_RULES: dict[str, dict[str, Any]] = {
    "beta2_decay": {"high": 0.0},
    "eps1": {"low": 0.0},
    "eps2": {"low": 0.0},
    "d": {"low": 1.0},
}


class ScaleByAdafactorState(NamedTuple):
    """State of :func:`scale_by_adafactor`.

    Attributes:
        count: updates applied so far (int32, saturating).
        row: per leaf with ``ndim >= 2``, the EMA of ``mean(g^2, axis=-1)``
            (shape ``(..., m, 1)``); ``None`` for vectors and scalars.
        col: per leaf with ``ndim >= 2``, the EMA of ``mean(g^2, axis=-2)``
            (shape ``(..., 1, n)``); ``None`` for vectors and scalars.
        nu: per vector or scalar leaf, the EMA of ``g^2``; ``None`` for
            factored leaves. All three in ``nu_dtype`` (default: the params').
        hyperparams: ``relative_step_size`` (torch's ``rho_t =
            min(learning_rate, 1/sqrt(t))``), ``beta2_decay``, ``eps1`` (when
            given), ``eps2`` and ``d`` used by the last update.
    """

    count: jax.Array
    row: optax.Updates
    col: optax.Updates
    nu: optax.Updates
    hyperparams: dict[str, jax.Array]


def _nu_dtype(call: str, dtype: Any) -> Any:
    try:
        return storage_dtype(call, dtype)
    except ValueError:
        raise ValueError(f"`{call}(nu_dtype=...)` must be None or a floating dtype, got {dtype!r}") from None


def _check_real(call: str, params: Any) -> None:
    for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.iscomplexobj(p):
            raise ValueError(
                f"`{call}`: complex parameters are not supported (at {jax.tree_util.keystr(path) or 'the root'}); "
                "Adafactor has no complex form here (torch's Adafactor raises too)"
            )


def _rms(x: jax.Array) -> jax.Array:
    """``sqrt(mean(x^2))``, 0 for an empty array."""
    return jnp.sqrt(jnp.sum(x * x) / max(x.size, 1))


def _direction(
    call: str, learning_rate: Hyper, beta2_decay: Hyper, eps1: Hyper | None, eps2: Hyper, d: Hyper, nu_dtype: Any
) -> optax.GradientTransformationExtraArgs:
    values = dict(learning_rate=learning_rate, beta2_decay=beta2_decay, eps2=eps2, d=d)
    if eps1 is not None:
        values["eps1"] = eps1
    hp = Hypers(call, {**RULES, **LOCAL_RULES}, **values)
    nu_dtype = _nu_dtype(call, nu_dtype)
    zero_floor = eps1 is not None and may_be_zero(eps1)

    def init(params):
        _check_real(call, params)

        def factor(p, axis):
            if jnp.ndim(p) < 2:
                return None
            shape = list(jnp.shape(p))
            shape[axis] = 1
            return jnp.zeros(shape, nu_dtype or jnp.result_type(p))

        row = jax.tree.map(lambda p: factor(p, -1), params)
        col = jax.tree.map(lambda p: factor(p, -2), params)
        nu = jax.tree.map(lambda p: None if jnp.ndim(p) >= 2 else fill_like(p, 0.0, nu_dtype), params)
        return ScaleByAdafactorState(zero_count(), row, col, nu, _record(hp.record(zero_count(), params), 1.0))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        require_params(call, params)
        h = hp.at(state.count, updates)
        t = as_float(state.count) + 1.0
        check_shapes(call, updates, params)
        leaves, treedef = jax.tree.flatten(updates)
        ps = flatten_like(call, treedef, params)
        rows, cols, nus = (flatten_like(call, treedef, s) for s in (state.row, state.col, state.nu))

        @per_group
        def coef(v, cd):
            # torch: 1 - beta2_t = t^beta2_decay; rho_t = min(lr, 1/sqrt(t)),
            # applied as lr * min(1, 1/(lr sqrt(t))) so that the learning
            # rate itself is applied by `scale_by_learning_rate`.
            weight = t ** v["beta2_decay"]
            cap = jnp.minimum(1.0, jax.lax.rsqrt(t) / v["learning_rate"])
            return weight.astype(cd), cap.astype(cd), v["eps2"].astype(cd), v["d"].astype(cd)

        outs, new_rows, new_cols, new_nus = [], [], [], []
        for v, g, p, row, col, nu in zip(h.per_leaf(len(leaves)), leaves, ps, rows, cols, nus):
            cd = compute_dtype(g)
            weight, cap, e2, clip = coef(v, cd)
            # torch: eps1=None is the machine epsilon of the parameter's dtype.
            e1 = v["eps1"].astype(cd) if eps1 is not None else jnp.asarray(jnp.finfo(p.dtype).eps, cd)
            g_c = g.astype(cd)
            g2 = g_c * g_c
            if g.ndim >= 2:
                row_new = row.astype(cd) + weight * (jnp.mean(g2, axis=-1, keepdims=True) - row.astype(cd))
                col_new = col.astype(cd) + weight * (jnp.mean(g2, axis=-2, keepdims=True) - col.astype(cd))
                var = safe_divide(row_new * col_new, jnp.maximum(jnp.mean(row_new, axis=-2, keepdims=True), e1), zero_floor)
                rows_out, cols_out, nu_out = row_new.astype(row.dtype), col_new.astype(col.dtype), nu
            else:
                nu_new = nu.astype(cd) + weight * (g2 - nu.astype(cd))
                var = nu_new
                rows_out, cols_out, nu_out = row, col, nu_new.astype(nu.dtype)
            u = safe_divide(g_c, jnp.sqrt(jnp.maximum(var, e1 * e1)), zero_floor)
            # Update clipping, and the relative step size max(eps2, RMS(p)).
            scale = jnp.maximum(e2, _rms(p.astype(cd))) * cap / jnp.maximum(1.0, _rms(u) / clip)
            outs.append((u * scale).astype(g.dtype))
            new_rows.append(rows_out)
            new_cols.append(cols_out)
            new_nus.append(nu_out)
        unflat = treedef.unflatten
        new_state = ScaleByAdafactorState(
            next_count(state.count), unflat(new_rows), unflat(new_cols), unflat(new_nus), _record(h.record, t)
        )
        return unflat(outs), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def _record(record: dict[str, jax.Array], t: Any) -> dict[str, jax.Array]:
    """The record with each ``learning_rate`` (only a cap here) replaced by
    the relative step size it gives at step ``t``, torch's ``rho_t``."""
    out = {}
    for name, value in record.items():
        group, _, base = name.rpartition("/")
        if base == "learning_rate":
            key = f"{group}/relative_step_size" if group else "relative_step_size"
            out[key] = jnp.minimum(value, jax.lax.rsqrt(as_float(t)))
        else:
            out[name] = value
    return out


def scale_by_adafactor(
    learning_rate: Hyper = 1e-2,
    beta2_decay: Hyper = -0.8,
    eps1: Hyper | None = None,
    eps2: Hyper = 1e-3,
    d: Hyper = 1.0,
    *,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """torch ``Adafactor``'s direction, to be followed by
    ``scale_by_learning_rate(learning_rate)``.

    With ``t = count + 1`` and ``w_t = t^beta2_decay`` (torch's
    ``1 - beta2_t``): for a leaf with ``ndim >= 2`` (the last two axes
    factored, leading axes batched)::

        R_t = R_{t-1} + w_t (mean(g^2, axis=-1) - R_{t-1})
        C_t = C_{t-1} + w_t (mean(g^2, axis=-2) - C_{t-1})
        V_t = R_t C_t / max(mean(R_t, axis=-2), eps1)

    and ``V_t = V_{t-1} + w_t (g^2 - V_{t-1})`` for vectors and scalars. Then
    ``U_t = g / sqrt(max(V_t, eps1^2))``, clipped to
    ``U_t / max(1, RMS(U_t) / d)``, and scaled by ``max(eps2, RMS(p_t))``
    (the parameters before the update) and by ``min(1, 1 / (learning_rate
    sqrt(t)))``: after ``scale_by_learning_rate(learning_rate)`` the step is
    torch's ``rho_t = min(lr, 1/sqrt(t))`` times the rest. ``update`` needs
    ``params``. Complex parameters raise (torch's Adafactor has no complex
    form either).

    Args:
        learning_rate: >= 0, only used as the cap on the relative step size
            (pass the same value to ``scale_by_learning_rate``).
        beta2_decay: <= 0.
        eps1: >= 0, or ``None`` for the machine epsilon of each parameter's
            dtype (torch's default). With ``eps1=0`` a coordinate whose
            gradient was always 0 gets 0, not torch's NaN.
        eps2: >= 0, the floor on the parameter RMS.
        d: >= 1, the clipping threshold on the update RMS.
        nu_dtype: dtype of the factored and full second moments (default:
            the params' dtype).
    """
    return _direction("scale_by_adafactor", learning_rate, beta2_decay, eps1, eps2, d, nu_dtype)


@friendly
def adafactor(
    learning_rate: Hyper = 1e-2,
    beta2_decay: Hyper = -0.8,
    eps1: Hyper | None = None,
    eps2: Hyper = 1e-3,
    d: Hyper = 1.0,
    weight_decay: Hyper = 0.0,
    *,
    maximize: bool = False,
    nu_dtype: Any = None,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Adafactor: torch ``Adafactor`` (2.13), step for step.

    With ``g_t`` the gradient (negated with ``maximize``), ``t`` counted from
    1, ``w_t = t^beta2_decay`` and, for tensors with ``ndim >= 2``, the last
    two axes factored (leading axes are a batch of matrices)::

        R_t = (1 - w_t) R_{t-1} + w_t mean(g_t^2, axis=-1)       (rows)
        C_t = (1 - w_t) C_{t-1} + w_t mean(g_t^2, axis=-2)       (columns)
        V_t = R_t C_t / max(mean(R_t, axis=-2), eps1)
        V_t = (1 - w_t) V_{t-1} + w_t g_t^2                      (vectors, scalars)
        U_t = g_t / sqrt(max(V_t, eps1^2)),   U_t <- U_t / max(1, RMS(U_t) / d)
        rho_t = min(lr, 1 / sqrt(t)),   alpha_t = max(eps2, RMS(p_t)) rho_t
        p_{t+1} = p_t - lr weight_decay p_t - alpha_t U_t

    torch's ``eps=(eps1, eps2)`` pair is two arguments here (a tuple would
    read as a group tree); ``eps1=None`` is the machine epsilon of the
    parameter's dtype (1.19e-7 for float32; torch takes the first
    parameter's dtype for all of them, fnopt each leaf's own). As in torch,
    ``lr`` caps the relative step size and multiplies the decoupled weight
    decay, and the paper's constant 0.01 cap is the default ``lr``. Unlike
    Optax's and Hugging Face's Adafactor there is no first-moment option,
    ``eps1`` enters after the factored estimate (they add it to ``g^2``),
    and every tensor with two or more dimensions is factored over its last
    two axes whatever their size (Optax factors the two largest axes, only
    when both are at least 128).
    torch's ``foreach`` is an implementation switch with the same numbers:
    not needed here. Complex parameters raise ``ValueError``: torch's
    Adafactor has no complex form and neither has this one.

    Args:
        learning_rate: >= 0 (default 1e-2, torch's); float, traced array,
            schedule or group tree.
        beta2_decay: <= 0, the exponent of ``1 - beta2_t = t^beta2_decay``.
        eps1: >= 0 or ``None`` (see above), floor of the variance estimate.
        eps2: >= 0, floor of the parameter RMS in the relative step size.
        d: >= 1, update clipping threshold.
        weight_decay: decoupled decay coefficient, >= 0 (multiplied by
            ``lr``, as torch).
        maximize: ascend the objective instead (static).
        nu_dtype: dtype of the second-moment factors (default: the params').
        mask: which leaves get weight decay, Optax's meaning.

    Returns:
        ``chain(scale_by_adafactor, add_decayed_weights,
        scale_by_learning_rate)`` (a negation first with ``maximize``).
        ``update`` needs ``params``.

    References:
        Shazeer & Stern, Adafactor: Adaptive Learning Rates with Sublinear
        Memory Cost, 2018, https://arxiv.org/abs/1804.04235

    Examples:
        >>> import jax.numpy as jnp, optax, fnopt
        >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
        >>> opt = fnopt.adafactor()
        >>> state = opt.init(params)
        >>> grads = {"w": jnp.full((2, 3), 0.5), "b": jnp.ones(3)}
        >>> updates, state = opt.update(grads, state, params)
        >>> [round(x, 6) for x in updates["w"][0].tolist()]  # -0.01 * RMS(w) * sign(g)
        [-0.01, -0.01, -0.01]
        >>> [round(x, 6) for x in updates["b"].tolist()]  # RMS(b) = 0: eps2 = 1e-3 instead
        [-1e-05, -1e-05, -1e-05]
        >>> state[0].row["w"].shape, state[0].col["w"].shape, state[0].nu["w"]
        ((2, 1), (1, 3), None)
    """
    call = "adafactor"
    direction = _direction(call, learning_rate, beta2_decay, eps1, eps2, d, nu_dtype)
    hp = hypers(call, learning_rate=learning_rate, weight_decay=weight_decay)
    return with_group_check(hp, chain_stages(
        flip_sign(call, maximize),
        direction,
        decoupled_decay(call, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    ))
