"""A cooldown decided at run time: the updates are scaled by 1 until the
cooldown starts, then down to ``min_scale`` with a WSD decay shape.

The start is a value in the state, so it can be decided inside ``jit``: by
:func:`start_cooldown` or by a plateau of a monitored metric (the decision
rule of :func:`~fnopt.transforms.reduce_on_plateau`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._base import Hyper, cast_like, check_hyper, next_count, resolve, zero_count
from ._checks import as_float, check_choice, float_dtype
from ._plateau import PlateauConfig, as_count, as_metric, check_count, feed_window, observe_plateau, sign_of

SHAPES = ("1-sqrt", "linear", "cosine")


class CooldownTrigger(NamedTuple):
    """The plateau detector of an automatic :func:`cooldown`.

    It has the fields :func:`~fnopt._plateau.observe_plateau` and
    ``feed_window`` work on, so the decisions are exactly those of
    :func:`~fnopt.transforms.reduce_on_plateau` (``cooldown=0``): ``scale``
    starts at 1 and is halved on each would-be cut; the cooldown starts at
    the first one (``scale < 1``). ``hyperparams`` stays ``{}`` (the
    detector's scale never acts on the updates).
    """

    scale: jax.Array
    best: jax.Array
    num_bad: jax.Array
    cooldown_counter: jax.Array
    value_sum: jax.Array
    value_count: jax.Array
    observations: jax.Array
    config: PlateauConfig
    hyperparams: dict[str, jax.Array]


class CooldownState(NamedTuple):
    """State of :func:`cooldown`.

    Fields:
        count: int32, updates applied (saturating).
        start: int32, the ``count`` of the first cooldown update; ``-1``
            until the cooldown starts. Never changes once set.
        trigger: :class:`CooldownTrigger` when the start is automatic
            (``patience`` given), else ``None``.
        hyperparams: ``{"cooldown_scale": scale}``, the scale used by the
            last update (for ``fnopt.hyperparams``; it enters
            ``effective_learning_rate``).
    """

    count: jax.Array
    start: jax.Array
    trigger: CooldownTrigger | None
    hyperparams: dict[str, jax.Array]


def begin(state: CooldownState) -> CooldownState:
    """Starts the cooldown at the next update, unless it has started already."""
    return state._replace(start=jnp.where(state.start < 0, state.count, state.start).astype(jnp.int32))


def _observe(trigger: CooldownTrigger, value: jax.Array) -> CooldownTrigger:
    return observe_plateau(trigger, value)._replace(hyperparams={})


def _start_if_fired(state: CooldownState, trigger: CooldownTrigger) -> CooldownState:
    fired = trigger.scale < 1
    start = jnp.where((state.start < 0) & fired, state.count, state.start).astype(jnp.int32)
    return state._replace(start=start, trigger=trigger)


def observe_cooldown(state: CooldownState, value: jax.Array) -> CooldownState:
    """One observation of the metric (``fnopt.report``): a plateau starts the
    cooldown at the next update. A cooldown without a trigger ignores it."""
    if state.trigger is None:
        return state
    return _start_if_fired(state, _observe(state.trigger, value))


def cooldown_scale(shape: str, elapsed: jax.Array, decay_steps: jax.Array, min_scale: jax.Array) -> jax.Array:
    """The scale after ``elapsed`` cooldown updates: Hugging Face's WSD decay
    factor at ``progress = min(elapsed / decay_steps, 1)``, rescaled to end at
    ``min_scale`` (their ``min_lr_ratio``)."""
    elapsed = as_float(elapsed)
    progress = jnp.where(decay_steps > 0, jnp.minimum(elapsed / jnp.where(decay_steps > 0, decay_steps, 1.0), 1.0), 1.0)
    if shape == "linear":
        factor = 1.0 - progress
    elif shape == "cosine":
        factor = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    else:
        factor = 1.0 - jnp.sqrt(progress)
    return min_scale + (1.0 - min_scale) * factor


def cooldown(
    decay_steps: Hyper,
    *,
    shape: str = "1-sqrt",
    min_scale: Hyper = 0.0,
    patience: Hyper | None = None,
    threshold: Hyper = 1e-4,
    mode: str = "min",
    threshold_mode: str = "rel",
    window: Hyper = 1,
    axis_name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Multiplies the updates by a cooldown scale whose start is decided at
    run time.

    The scale is 1 until the cooldown starts. If the first cooldown update is
    the update with ``count = s``, the update with ``count = s + k`` is
    scaled by ``min_scale + (1 - min_scale) * f(p)`` with
    ``p = min(k / decay_steps, 1)`` and

    * ``"1-sqrt"``: ``f(p) = 1 - sqrt(p)`` (Hägele et al. 2024),
    * ``"linear"``: ``f(p) = 1 - p``,
    * ``"cosine"``: ``f(p) = (1 + cos(pi p)) / 2``,

    the decay phase of Hugging Face's ``get_wsd_schedule`` with
    ``min_lr_ratio=min_scale``: 1 on the first cooldown update, ``min_scale``
    from ``decay_steps`` updates later on, held after. Put it after
    ``scale_by_learning_rate`` (it scales whole updates), so "AdamW at a
    constant LR, then a 1-sqrt cooldown" is
    ``chain(fnopt.adamw(lr), cooldown(decay_steps))`` with no total length
    fixed in advance. The scale is recorded as ``cooldown_scale`` and enters
    ``fnopt.hyperparams``' ``effective_learning_rate``.

    The cooldown starts (once; it is never restarted) either

    * by ``fnopt.start_cooldown(opt_state)``: the next update is the first
      cooldown update. Pure and jittable, e.g. under
      ``lax.cond(budget_spent, fnopt.start_cooldown, lambda s: s, state)``
      or a ``jnp.where`` over a ``vmap``-ed sweep; or
    * automatically, only when ``patience`` is given, on a plateau of a
      monitored metric: the decision of
      :func:`~fnopt.transforms.reduce_on_plateau` with the same
      ``patience``, ``threshold``, ``mode``, ``threshold_mode`` (and
      ``cooldown=0``): the cooldown starts where that would make its first
      cut, i.e. on the ``patience + 1``-th consecutive non-improving
      observation. The metric comes in the same two ways:
      ``update(..., value=loss)`` (averaged over ``window`` updates; the
      update that completes the deciding window is the first cooldown
      update) or ``fnopt.report(opt_state, val_loss)`` (the next update is
      the first cooldown update). With ``patience=None`` (the default) the
      metric is ignored and ``fnopt.report`` does not count this state.

    ``decay_steps``, ``min_scale``, ``patience``, ``threshold`` and
    ``window`` may be numbers, traced arrays (a ``vmap`` over ``patience``
    works) or schedules of the update count; they act on the whole update
    (no group trees). Concrete values are validated; traced ones are not.

    Args:
        decay_steps: length of the decay, in updates, > 0.
        shape: ``"1-sqrt"``, ``"linear"`` or ``"cosine"`` (static).
        min_scale: the final scale, in [0, 1].
        patience: ``None`` (start only by ``start_cooldown``) or the
            non-improving observations tolerated before an automatic start,
            an integer >= 0.
        threshold: improvement margin, >= 0 (relative or absolute).
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
        threshold_mode: ``"rel"`` (``best - |best| * threshold``) or ``"abs"``.
        window: number of ``value=`` arguments averaged per observation, >= 1.
        axis_name: a mapped axis over which ``value=`` is averaged first
            (``pmean``), as in :func:`~fnopt.transforms.reduce_on_plateau`.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state
        :class:`CooldownState`.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> tx = fnopt.chain(fnopt.sgd(1.0), fnopt.transforms.cooldown(4, shape="linear"))
        >>> state = tx.init(jnp.zeros(1))
        >>> lrs = []
        >>> for step in range(7):
        ...     if step == 2:
        ...         state = fnopt.start_cooldown(state)
        ...     u, state = tx.update(jnp.ones(1), state)
        ...     lrs.append(float(fnopt.hyperparams(state)["effective_learning_rate"]))
        >>> lrs
        [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]

        Automatic: a 1-sqrt cooldown once the validation loss stalls for
        three evaluations, fed by ``fnopt.report``:

        >>> tx = fnopt.chain(fnopt.adamw(1e-3), fnopt.transforms.cooldown(1000, patience=3))

    References:
        Hägele et al., Scaling Laws and Compute-Optimal Training Beyond Fixed
        Training Durations, NeurIPS 2024, https://arxiv.org/abs/2405.18392

        Hu et al., MiniCPM: Unveiling the Potential of Small Language Models
        with Scalable Training Strategies, 2024, https://arxiv.org/abs/2404.06395
    """
    call = "cooldown"
    check_choice(call, "shape", shape, SHAPES)
    check_choice(call, "mode", mode, ("min", "max"))
    check_choice(call, "threshold_mode", threshold_mode, ("rel", "abs"))
    check_hyper(call, "decay_steps", decay_steps, 0.0, low_open=True)
    check_hyper(call, "min_scale", min_scale, 0.0, 1.0)
    if patience is not None:
        check_count(call, "patience", patience, 0)
    check_hyper(call, "threshold", threshold, 0.0)
    check_count(call, "window", window, 1)
    automatic = patience is not None

    def config(count: jax.Array) -> PlateauConfig:
        dtype = float_dtype()
        return PlateauConfig(
            factor=jnp.asarray(0.5, dtype),
            patience=as_count(resolve(patience, count)),
            threshold=resolve(threshold, count),
            cooldown=zero_count(),
            min_scale=jnp.zeros([], dtype),
            eps=jnp.zeros([], dtype),
            window=as_count(resolve(window, count)),
            sign=sign_of(mode),
            relative=jnp.asarray(threshold_mode == "rel"),
        )

    def init_fn(params: Any) -> CooldownState:
        del params
        count = zero_count()
        dtype = float_dtype()
        trigger = None
        if automatic:
            trigger = CooldownTrigger(
                scale=jnp.ones([], dtype),
                best=jnp.asarray(np.inf if mode == "min" else -np.inf, dtype),
                num_bad=zero_count(),
                cooldown_counter=zero_count(),
                value_sum=jnp.zeros([], dtype),
                value_count=zero_count(),
                observations=zero_count(),
                config=config(count),
                hyperparams={},
            )
        start = jnp.full([], -1, jnp.int32)
        return CooldownState(count, start, trigger, {"cooldown_scale": jnp.ones([], dtype)})

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        if automatic:
            trigger = state.trigger._replace(config=config(state.count))
            if value is not None:
                trigger = feed_window(trigger, as_metric("cooldown.update(value=...)", value, axis_name), _observe)
            state = _start_if_fired(state, trigger)
        started = state.start >= 0
        elapsed = jnp.where(started, state.count - state.start, 0)
        scale = cooldown_scale(shape, elapsed, resolve(decay_steps, state.count), resolve(min_scale, state.count))
        scale = jnp.where(started, scale, 1.0).astype(float_dtype())
        updates = jax.tree.map(lambda u: u * cast_like(scale, u), updates)
        return updates, state._replace(count=next_count(state.count), hyperparams={"cooldown_scale": scale})

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
