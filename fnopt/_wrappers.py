"""Transforms that wrap another: Lookahead (slow weights kept in the state)
and skipping of steps with non-finite gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._base import Hyper, check_shapes, next_count, zero_count
from ._chain import accepts, keywords_of
from ._checks import as_float
from ._common import compute_dtype, hypers, packed_leaves, require_params


def _check_inner(call: str, inner) -> None:
    if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
        raise ValueError(
            f"`{call}(inner=...)` must be a GradientTransformation (with `init` and `update`), "
            f"got {inner!r}"
        )


# --------------------------------------------------------------- Lookahead


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`.

    Attributes:
        count: updates applied so far (int32, saturating).
        steps_since_sync: inner steps since the last synchronization (int32).
        slow: the slow weights, in the params' dtype.
        inner_state: the wrapped optimizer's state.
        hyperparams: ``sync_period`` and ``alpha`` used by the last update.
    """

    count: jax.Array
    steps_since_sync: jax.Array
    slow: optax.Params
    inner_state: optax.OptState
    hyperparams: dict[str, jax.Array]


def lookahead(
    inner: optax.GradientTransformation, sync_period: Hyper = 6, alpha: Hyper = 0.5
) -> optax.GradientTransformationExtraArgs:
    """Lookahead: the inner optimizer moves fast weights; every ``sync_period``
    steps the slow weights move towards them, ``slow += alpha * (fast - slow)``,
    and the fast weights restart from the slow ones.

    Works on plain params (unlike Optax's ``lookahead``, which needs
    ``LookaheadParams``): the slow weights live in the state, initialized to
    the params given to ``init``, and on a synchronizing step the update
    moves the params to the new slow weights. The inner optimizer's state
    (momentum etc.) carries on across synchronizations, as in the paper's
    and Ranger's implementations. ``update`` needs ``params``.

    Args:
        inner: the optimizer producing the fast updates (learning rate
            included), e.g. ``fnopt.radam(1e-3)``.
        sync_period: ``k``, inner steps between synchronizations, >= 1; a
            number, traced array or schedule (read at each step: a
            synchronization happens once ``k`` steps have passed since the
            last one).
        alpha: slow step size in [0, 1]; float, traced array or schedule.
            ``alpha=1`` is the inner optimizer alone.

    References:
        Zhang, Lucas, Hinton & Ba, Lookahead Optimizer: k steps forward, 1 step
        back, 2019, https://arxiv.org/abs/1907.08610

    Examples:
        >>> import jax.numpy as jnp, optax, fnopt
        >>> from fnopt import transforms
        >>> opt = transforms.lookahead(fnopt.sgd(1.0), sync_period=2, alpha=0.5)
        >>> params = jnp.zeros(1)
        >>> state = opt.init(params)
        >>> for _ in range(2):  # fast: 0 -> -1 -> -2; sync: slow = 0 + 0.5 * (-2 - 0)
        ...     updates, state = opt.update(jnp.ones(1), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> params.tolist()
        [-1.0]
    """
    call = "lookahead"
    _check_inner(call, inner)
    hp = hypers(call, sync_period=sync_period, alpha=alpha)
    inner = optax.with_extra_args_support(inner)
    keywords = keywords_of(inner)

    def init(params):
        slow = jax.tree.map(jnp.copy, params)
        since = jnp.zeros([], jnp.int32)
        return LookaheadState(zero_count(), since, slow, inner.init(params), hp.record(zero_count(), params))

    def update(updates, state, params=None, **extra_args):
        require_params(call, params)
        h = hp.at(state.count, updates)
        fast_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        since = state.steps_since_sync + 1
        sync = as_float(since) >= h.single["sync_period"]

        def leaf(v, u, p, s):
            cd = compute_dtype(p)
            p_c, s_c = p.astype(cd), s.astype(cd)
            new_slow = s_c + v["alpha"].astype(cd) * (p_c + u.astype(cd) - s_c)
            out = jnp.where(sync, (new_slow - p_c).astype(u.dtype), u)
            return out, jnp.where(sync, new_slow.astype(s.dtype), s)

        out, slow = h.map(leaf, 2, fast_updates, params, state.slow)
        since = jnp.where(sync, 0, since).astype(jnp.int32)
        return out, LookaheadState(next_count(state.count), since, slow, inner_state, h.record)

    return accepts(optax.GradientTransformationExtraArgs(init, update), keywords, call)


# ------------------------------------------------------------ non-finite


class SkipNonfiniteState(NamedTuple):
    """State of :func:`skip_nonfinite`.

    Attributes:
        inner_state: the wrapped optimizer's state (untouched by skipped steps).
        total_skips: steps skipped so far (int32, saturating).
        consecutive_skips: skipped steps since the last applied one (int32).
        gave_up: set (and kept) once ``consecutive_skips`` reached
            ``max_consecutive_skips``.
        hyperparams: ``max_consecutive_skips`` when given, else empty.
    """

    inner_state: optax.OptState
    total_skips: jax.Array
    consecutive_skips: jax.Array
    gave_up: jax.Array
    hyperparams: dict[str, jax.Array]


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in packed_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def skip_nonfinite(
    inner: optax.GradientTransformation, max_consecutive_skips: Hyper | None = None
) -> optax.GradientTransformationExtraArgs:
    """Skips steps whose gradients contain a NaN or infinity.

    On such a step the update is zero and the inner state is left exactly as
    it was (its step count does not advance, so its schedules do not either);
    otherwise the inner optimizer runs as usual. The state counts the skipped
    steps, in total and in a row.

    With ``max_consecutive_skips``, the ``gave_up`` flag is set once that many
    steps in a row were skipped, and stays set. It is only a signal for the
    training loop (e.g. ``if state.gave_up: break``): the wrapper keeps
    skipping non-finite steps and applying finite ones. (Optax's
    ``apply_if_finite`` instead applies the non-finite update at that point.)

    Args:
        inner: the optimizer to protect.
        max_consecutive_skips: ``None`` or a number >= 1 (or a traced array)
            of consecutive skips after which ``gave_up`` is set.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> from fnopt import transforms
        >>> opt = transforms.skip_nonfinite(fnopt.sgd(0.1))
        >>> state = opt.init(jnp.zeros(2))
        >>> updates, state = opt.update(jnp.array([1.0, jnp.nan]), state)
        >>> updates.tolist(), int(state.total_skips)
        ([0.0, 0.0], 1)
    """
    call = "skip_nonfinite"
    _check_inner(call, inner)
    limit = {}
    if max_consecutive_skips is not None:
        if callable(max_consecutive_skips):
            raise ValueError(f"`{call}(max_consecutive_skips=...)` must be a number, got a callable")
        limit = {"max_consecutive_skips": max_consecutive_skips}
    hp = hypers(call, **limit)
    inner = optax.with_extra_args_support(inner)
    keywords = keywords_of(inner)

    def init(params):
        return SkipNonfiniteState(
            inner.init(params), zero_count(), zero_count(), jnp.asarray(False), hp.record(zero_count())
        )

    def update(updates, state, params=None, **extra_args):
        if params is not None:
            check_shapes(call, updates, params)
        finite = _all_finite(updates)
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        out = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), new_updates)
        inner_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_inner, state.inner_state)
        total = jnp.where(finite, state.total_skips, next_count(state.total_skips))
        in_a_row = jnp.where(finite, 0, next_count(state.consecutive_skips)).astype(jnp.int32)
        gave_up = state.gave_up
        if max_consecutive_skips is not None:
            gave_up = gave_up | (as_float(in_a_row) >= as_float(max_consecutive_skips))
        return out, SkipNonfiniteState(inner_state, total, in_a_row, gave_up, state.hyperparams)

    return accepts(optax.GradientTransformationExtraArgs(init, update), keywords, call)
