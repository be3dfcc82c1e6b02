"""Rprop (resilient backpropagation) with torch's numerics: a primitive and
its alias.

Rprop uses only the signs of the gradients: every coordinate has its own
step size, grown while the gradient keeps its sign and shrunk when it flips.
Complex params are two real params each (real and imaginary part with their
own step sizes), as in torch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._base import Hyper, Hypers, next_count, per_group, zero_count
from ._checks import check_flag
from ._elementwise import chain_stages, flip_sign
from ._common import RULES, _concrete_or_none, compute_dtype, fill_like, real_dtype
from ._chain import friendly

LOCAL_RULES = {
    **RULES,
    "eta_minus": {"low": 0.0, "high": 1.0, "low_open": True, "high_open": True},
    "eta_plus": {"low": 1.0, "low_open": True},
    "min_step_size": {"low": 0.0},
    "max_step_size": {"low": 0.0},
}


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`.

    Attributes:
        count: updates applied so far (int32, saturating).
        prev_sign: the sign of the previous gradient, 0 where it flipped
            (torch's ``prev``, of which only the sign is ever used): int8 for
            real params; for complex params, ``sign(re) + i sign(im)`` in the
            params' dtype.
        step_size: per-coordinate step sizes, in the params' dtype (complex
            params: the real part's in the real part, the imaginary part's in
            the imaginary part, as torch).
        hyperparams: ``learning_rate`` (the initial step size, used at init),
            ``eta_minus``, ``eta_plus``, ``min_step_size``, ``max_step_size``
            used by the last update.
    """

    count: jax.Array
    prev_sign: optax.Updates
    step_size: optax.Updates
    hyperparams: dict[str, jax.Array]


def _check_step_bounds(call: str, min_step_size: Hyper, max_step_size: Hyper) -> None:
    low, high = _concrete_or_none(min_step_size), _concrete_or_none(max_step_size)
    if low is not None and high is not None and low.size == high.size == 1 and low[0] > high[0]:
        raise ValueError(
            f"`{call}(max_step_size=...)` must be >= min_step_size, got max_step_size={max_step_size!r}, "
            f"min_step_size={min_step_size!r}"
        )


def _signed_step(g, prev, step, k, from_int8):
    """One real coordinate set: the update, the sign to remember, the new step sizes."""
    eta_minus, eta_plus, low, high = k
    sign = jnp.sign(g)
    agreement = sign * prev
    factor = jnp.where(agreement > 0, eta_plus, jnp.where(agreement < 0, eta_minus, 1))
    step_new = jnp.clip(step * factor, low, high)
    if from_int8:
        # Divide by 1 computed from the data (prev, read from int8, is -1, 0
        # or 1), which XLA cannot fold: exact, and XLA does not duplicate a
        # division into other kernels, so the new step sizes are computed
        # once and the update applied to the params reads them. Recomputed
        # there from the old, donated step sizes (which another kernel
        # overwrites in place), they cost XLA:CPU a copy of the old step
        # sizes every step: about twice the CPU time of the step. (Complex
        # params keep their signs in floats, which may be NaN.)
        square = prev * prev
        step_new = step_new / (square + (1 - square))
    # After a sign flip the gradient counts as 0: no move now, no verdict next step.
    kept = jnp.where(agreement < 0, 0, sign)
    return kept * step_new, kept, step_new


def _rprop(call, learning_rate, eta_minus, eta_plus, min_step_size, max_step_size):
    start_hp = Hypers(call, LOCAL_RULES, learning_rate=learning_rate)
    hp = Hypers(
        call, LOCAL_RULES, eta_minus=eta_minus, eta_plus=eta_plus, min_step_size=min_step_size, max_step_size=max_step_size
    )
    _check_step_bounds(call, min_step_size, max_step_size)

    def init(params):
        start = start_hp.at(zero_count(), params)

        def first_step(v, p):
            lr = v["learning_rate"]
            return fill_like(p, jax.lax.complex(lr, lr) if jnp.iscomplexobj(p) else lr)

        def no_sign(p):
            return fill_like(p, 0, None if jnp.iscomplexobj(p) else jnp.int8)

        steps = start.map(first_step, None, params)
        record = {**start.record, **hp.record(zero_count(), params)}
        return ScaleByRpropState(zero_count(), jax.tree.map(no_sign, params), steps, record)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        h = hp.at(state.count, updates)
        coef = per_group(lambda v, rd: tuple(v[k].astype(rd) for k in ("eta_minus", "eta_plus", "min_step_size", "max_step_size")))

        def leaf(v, g, prev, step):
            cd = compute_dtype(g)
            rd = real_dtype(cd)
            k = coef(v, rd)
            g_c = g.astype(cd)
            if jnp.iscomplexobj(g_c):
                prev_c, step_c = prev.astype(cd), step.astype(cd)
                re = _signed_step(g_c.real, prev_c.real, step_c.real, k, False)
                im = _signed_step(g_c.imag, prev_c.imag, step_c.imag, k, False)
                out, kept, step_new = (jax.lax.complex(a, b) for a, b in zip(re, im))
            else:
                out, kept, step_new = _signed_step(g_c, prev.astype(rd), step.astype(rd), k, True)
            return out.astype(g.dtype), kept.astype(prev.dtype), step_new.astype(step.dtype)

        out, prev, steps = h.map(leaf, 3, updates, state.prev_sign, state.step_size, params=params)
        # The learning rate is only used at init: record it as it was then.
        record = {**{k: x for k, x in state.hyperparams.items() if k.endswith("learning_rate")}, **h.record}
        return out, ScaleByRpropState(next_count(state.count), prev, steps, record)

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_rprop(
    learning_rate: Hyper = 1e-2,
    eta_minus: Hyper = 0.5,
    eta_plus: Hyper = 1.2,
    min_step_size: Hyper = 1e-6,
    max_step_size: Hyper = 50.0,
) -> optax.GradientTransformationExtraArgs:
    """torch ``Rprop``'s step, ``sign(g_t) * s_t`` per coordinate (to be negated).

    Each coordinate's step size starts at ``learning_rate``; with ``q`` the
    sign of the last remembered gradient (0 at first)::

        s_t = clip(s_{t-1} * (eta_plus if sign(g_t) q > 0, eta_minus if < 0, else 1),
                   min_step_size, max_step_size)
        update = 0 where the sign flipped (sign(g_t) q < 0), else sign(g_t) * s_t
        q = 0 where the sign flipped, else sign(g_t)

    Optax's ``scale_by_rprop`` leaves the step size unclipped when the sign
    product is 0 and remembers the step instead of the sign; the two differ
    after a flip. See :func:`fnopt.rprop`.

    Args:
        learning_rate: the initial step size, >= 0 (read at init: a schedule
            is evaluated at step 0, as torch reads ``lr`` when the state is
            created); float, traced array, schedule or group tree.
        eta_minus: step-size factor after a sign flip, in (0, 1).
        eta_plus: step-size factor while the sign holds, > 1.
        min_step_size: lower clip of the step sizes, >= 0.
        max_step_size: upper clip of the step sizes, >= ``min_step_size``.
    """
    return _rprop("scale_by_rprop", learning_rate, eta_minus, eta_plus, min_step_size, max_step_size)


@friendly
def rprop(
    learning_rate: Hyper = 1e-2,
    eta_minus: Hyper = 0.5,
    eta_plus: Hyper = 1.2,
    min_step_size: Hyper = 1e-6,
    max_step_size: Hyper = 50.0,
    *,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Rprop, resilient backpropagation: torch ``Rprop``.

    With ``g_t`` the gradient (negated with ``maximize``), per coordinate a
    step size ``s`` starting at ``learning_rate`` and the remembered sign
    ``q`` starting at 0::

        s_t = clip(s_{t-1} * (eta_plus if sign(g_t) q > 0, eta_minus if < 0, else 1),
                   min_step_size, max_step_size)
        g_t = 0 where sign(g_t) q < 0                 (a flip: no move, no verdict next step)
        p_{t+1} = p_t - sign(g_t) * s_t,   q = sign(g_t)

    torch's ``etas=(eta_minus, eta_plus)`` and
    ``step_sizes=(min_step_size, max_step_size)`` are four schedulable
    hyperparameters here (Optax's names). ``learning_rate`` only seeds the
    step sizes: torch reads ``lr`` when the state is created, so a schedule
    is evaluated at step 0 (and recorded as such); the step sizes are the
    effective per-coordinate learning rates. torch has no weight decay for
    Rprop; chain ``transforms.add_weight_decay`` first for one.

    Deviation: torch takes the sign of the product ``g_t * prev``, which
    underflows to 0 for ``|g_t * prev|`` below the smallest float (then the
    step size is kept); fnopt multiplies the signs, which never underflows,
    and stores only the sign (int8), a quarter of torch's ``prev``. Complex
    params are two real params each (real and imaginary parts with their
    own step sizes), exactly as torch.

    Args:
        learning_rate: initial step size, >= 0 (default 1e-2, torch's);
            float, traced array, schedule (read at step 0) or group tree.
        eta_minus: step-size factor after a sign flip, in (0, 1) (torch ``etas[0]``).
        eta_plus: step-size factor while the sign holds, > 1 (torch ``etas[1]``).
        min_step_size: lower clip, >= 0 (torch ``step_sizes[0]``).
        max_step_size: upper clip, >= ``min_step_size`` (torch ``step_sizes[1]``).
        maximize: ascend the objective instead (static).

    Returns:
        ``chain(scale_by_rprop, scale(-1))``; ``maximize`` prepends a
        negation. Step sizes are in the params' dtype.

    References:
        Riedmiller & Braun, A direct adaptive method for faster backpropagation
        learning: the RPROP algorithm, ICNN 1993,
        https://doi.org/10.1109/ICNN.1993.298623

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> params = jnp.array([1.0, 1.0])
        >>> opt = fnopt.rprop(0.1)
        >>> state = opt.init(params)
        >>> for g in ([2.0, 2.0], [3.0, -1.0], [1.0, -1.0]):
        ...     updates, state = opt.update(jnp.array(g), state, params)
        >>> [round(x, 4) for x in updates.tolist()]  # 0.1 * 1.2 * 1.2; the flipped one restarts at 0.05
        [-0.144, 0.05]
    """
    call = "rprop"
    check_flag(call, "maximize", maximize)
    return chain_stages(
        flip_sign(call, maximize),
        _rprop(call, learning_rate, eta_minus, eta_plus, min_step_size, max_step_size),
        optax.scale(-1.0),
    )
