"""Reduce-on-plateau: torch ``ReduceLROnPlateau`` as a multiplicative scale
on the updates, so it composes with any learning-rate schedule.

Also holds what plateau reduction and early stopping share: the validation of
count-valued hyperparameters and the ``window`` average of per-step values.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._base import Hyper, cast_like, check_hyper, next_count, resolve, zero_count
from ._checks import as_float, check_choice, concrete, float_dtype, is_traced

_MAX_COUNT = 2.0**30  # counts beyond this are "never" for any real run


def check_count(call: str, name: str, value: Hyper, low: int) -> None:
    """A concrete count-valued hyperparameter must be an integer >= ``low``."""
    check_hyper(call, name, value, low)
    if callable(value) or is_traced(value):
        return
    arr = concrete(call, name, value)
    if not np.all(arr == np.floor(arr)):
        raise ValueError(f"`{call}({name}=...)` must be an integer, got {value!r}")


def as_count(value: jax.Array) -> jax.Array:
    """A resolved (float) count hyperparameter as int32; a traced non-integer
    is truncated, values beyond ``2**30`` are clipped to ``2**30``."""
    return jnp.floor(jnp.clip(value, 0.0, _MAX_COUNT)).astype(jnp.int32)


def sign_of(mode: str) -> jax.Array:
    """``+1`` for ``mode="min"``, ``-1`` for ``"max"``: ``sign * metric`` is
    always a quantity to minimise."""
    return as_float(1.0 if mode == "min" else -1.0)


def as_metric(call: str, value: Any, axis_name: str | None = None) -> jax.Array:
    """A metric observation as a scalar of the default float dtype; with
    ``axis_name``, its mean over that mapped axis (``pmean``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):  # tracers are jax.Arrays
        raise ValueError(f"`{call}`: the metric must be a real scalar number or array, got {value!r}")
    if jnp.ndim(value) != 0:
        raise ValueError(f"`{call}`: the metric must be a scalar, got shape {jnp.shape(value)}")
    if not jnp.issubdtype(jnp.result_type(value), jnp.number) or jnp.iscomplexobj(value):
        raise ValueError(f"`{call}`: the metric must be a real scalar number, got dtype {jnp.result_type(value)}")
    value = as_float(value)
    return value if axis_name is None else jax.lax.pmean(value, axis_name)


def feed_window(state: Any, value: jax.Array, observe) -> Any:
    """Adds ``value`` to the state's running ``value_sum`` / ``value_count``;
    once ``config.window`` values are in, applies ``observe(state, mean)`` and
    resets the sum. Pure: both branches are computed and selected."""
    total = state.value_sum + value
    seen = next_count(state.value_count)
    ready = seen >= state.config.window
    waiting = state._replace(value_sum=total, value_count=seen)
    mean = total / seen.astype(total.dtype)
    decided = observe(state, mean)._replace(
        value_sum=jnp.zeros_like(total), value_count=jnp.zeros_like(seen)
    )
    return jax.tree.map(lambda a, b: jnp.where(ready, a, b), decided, waiting)


class PlateauConfig(NamedTuple):
    """The decision rule's hyperparameters, kept in the state so that
    ``fnopt.report`` can decide without the transform. Float fields use the
    default float dtype; ``patience``, ``cooldown``, ``window`` are ``int32``;
    ``sign`` is ``+1`` (``mode="min"``) or ``-1`` (``"max"``); ``relative`` is
    a bool (``threshold_mode="rel"``)."""

    factor: jax.Array
    patience: jax.Array
    threshold: jax.Array
    cooldown: jax.Array
    min_scale: jax.Array
    eps: jax.Array
    window: jax.Array
    sign: jax.Array
    relative: jax.Array


class ReduceOnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`.

    Fields (dtypes: ``f`` = default float dtype, float32 or float64 under x64):
        count: int32, updates applied (saturating).
        scale: f, the factor multiplying the updates; starts at 1.
        best: f, best metric seen; ``+inf`` (min) / ``-inf`` (max) before any.
        num_bad: int32, consecutive non-improving observations (torch's
            ``num_bad_epochs``).
        cooldown_counter: int32, observations of cooldown left.
        value_sum: f, sum of the ``value=`` arguments not yet decided on.
        value_count: int32, how many values ``value_sum`` holds.
        observations: int32, observations of the metric received (saturating).
        config: :class:`PlateauConfig`, the hyperparameters last in effect.
        hyperparams: ``{"plateau_scale": scale, "plateau_observations":
            observations}``, for ``fnopt.hyperparams`` (a log then shows a
            plateau that never received a metric, and so never acts).
    """

    count: jax.Array
    scale: jax.Array
    best: jax.Array
    num_bad: jax.Array
    cooldown_counter: jax.Array
    value_sum: jax.Array
    value_count: jax.Array
    observations: jax.Array
    config: PlateauConfig
    hyperparams: dict[str, jax.Array]


def _record(scale: jax.Array, observations: jax.Array) -> dict[str, jax.Array]:
    return {"plateau_scale": scale, "plateau_observations": observations}


def observe_plateau(state: ReduceOnPlateauState, value: Any) -> ReduceOnPlateauState:
    """One observation of the metric: the body of torch's ``step(metrics)``,
    with the relative threshold taken on ``|best|``."""
    c = state.config
    current = jnp.asarray(value, dtype=state.best.dtype)
    m, b = c.sign * current, c.sign * state.best  # minimisation form
    known = jnp.isfinite(b)  # False only before the first finite observation
    margin = jnp.where(c.relative, jnp.abs(jnp.where(known, b, 0.0)) * c.threshold, c.threshold)
    better = jnp.isfinite(m) & (~known | (m < b - margin))
    best = jnp.where(better, current, state.best)
    num_bad = jnp.where(better, 0, next_count(state.num_bad))
    in_cooldown = state.cooldown_counter > 0
    cooldown_counter = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
    num_bad = jnp.where(in_cooldown, 0, num_bad)
    cut = num_bad > c.patience
    reduced = jnp.maximum(state.scale * c.factor, c.min_scale)
    scale = jnp.where(cut & (state.scale - reduced > c.eps), reduced, state.scale)
    observations = next_count(state.observations)
    return state._replace(
        scale=scale,
        best=best,
        num_bad=jnp.where(cut, 0, num_bad),
        cooldown_counter=jnp.where(cut, c.cooldown, cooldown_counter),
        observations=observations,
        hyperparams=_record(scale, observations),
    )


def reduce_on_plateau(
    factor: Hyper = 0.1,
    patience: Hyper = 10,
    threshold: Hyper = 1e-4,
    *,
    mode: str = "min",
    threshold_mode: str = "rel",
    cooldown: Hyper = 0,
    min_scale: Hyper = 0.0,
    eps: Hyper = 1e-8,
    window: Hyper = 1,
    axis_name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Scales the updates down when a monitored metric stops improving.

    The decisions are those of torch ``ReduceLROnPlateau``, applied to a
    ``scale`` (starting at 1) that multiplies the incoming updates, so in
    ``chain(scale_by_adam(), scale_by_learning_rate(schedule),
    reduce_on_plateau())`` the learning rate in effect is
    ``schedule(t) * scale``. For each observation ``a`` of the metric:

    1. ``a`` is an improvement when (``mode="min"``) ``a < best - |best| *
       threshold`` (``threshold_mode="rel"``) or ``a < best - threshold``
       (``"abs"``); in ``mode="max"``, ``a > best + |best| * threshold`` or
       ``a > best + threshold``. An improvement becomes ``best`` and resets
       ``num_bad`` to 0; otherwise ``num_bad`` grows by one. A non-finite
       ``a`` is never an improvement and never becomes ``best``.
    2. During cooldown (``cooldown_counter > 0``) the counter decrements and
       ``num_bad`` is held at 0.
    3. When ``num_bad > patience`` the scale is cut to
       ``max(scale * factor, min_scale)`` (only if that lowers it by more
       than ``eps``), ``cooldown_counter = cooldown`` and ``num_bad = 0``.

    So the first cut comes on the ``patience + 1``-th consecutive
    non-improving observation, and ``patience=0`` cuts on every non-improving
    one (outside cooldown). Two flaws of the anchors are fixed:

    * Optax's ``contrib.reduce_on_plateau`` cuts on the ``patience``-th
      non-improving observation (one early) and, with ``patience=0``, cuts on
      improvements and never on a plateau; fnopt follows torch.
    * **Deliberate deviation from torch:** torch (and Optax) compare against
      ``best * (1 - threshold)``, which for a negative ``best`` *raises* the
      bar, so a worse negative metric counts as an improvement. fnopt uses
      ``best - |best| * threshold``; for ``best >= 0`` this is torch's rule.

    The metric comes in either way, with the same decisions:

    * ``tx.update(updates, state, params, value=loss)`` on each step: values
      are averaged over ``window`` consecutive updates and the mean is one
      observation. The decision is made before scaling, so the update that
      completes a window already uses the new scale (as Optax does). An
      update without ``value`` observes nothing. ``chain`` passes ``value``
      to every member, so every plateau and early-stopping transform in the
      chain observes it.
    * ``fnopt.report(opt_state, metric)``, e.g. the validation loss once per
      epoch: one observation, applied at once (``window`` is not used).

    Every numeric hyperparameter may be a float, a traced array (so a
    ``vmap`` over ``patience`` or ``factor`` works) or a schedule of the
    update count; ``mode`` and ``threshold_mode`` are static. Concrete values
    are validated; traced ones are not (a traced non-integer count is
    truncated). ``eps`` and ``min_scale`` are on the scale (torch's act on
    the LR; with a base LR of 1 they coincide).

    Args:
        factor: the cut multiplies the scale by this, in (0, 1).
        patience: non-improving observations tolerated before a cut, >= 0.
        threshold: improvement margin, >= 0 (relative or absolute).
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: observations after a cut during which ``num_bad`` stays 0.
        min_scale: the scale never goes below this, >= 0.
        eps: a cut that lowers the scale by ``eps`` or less is skipped.
        window: number of ``value=`` arguments averaged per observation, >= 1.
        axis_name: under ``shard_map`` / ``pmap`` (or a named ``vmap``), the
            ``value=`` passed to ``update`` is first averaged over this mapped
            axis (``pmean``), so shards that each pass their local loss all
            take the decision of the global mean. Static; ``None`` (the
            default) uses ``value`` as given.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state
        :class:`ReduceOnPlateauState`.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> tx = fnopt.transforms.reduce_on_plateau(factor=0.5, patience=2, cooldown=1)
        >>> state = tx.init({"w": jnp.zeros(2)})
        >>> scales = []
        >>> for loss in [10, 9, 9, 9, 9, 9, 9, 9, 8.9999]:
        ...     state = fnopt.report(state, loss)
        ...     scales.append(float(state.scale))
        >>> scales
        [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]
        >>> updates, state = tx.update({"w": jnp.ones(2)}, state)
        >>> updates["w"]
        Array([0.25, 0.25], dtype=float32)

    References:
        PyTorch ``torch.optim.lr_scheduler.ReduceLROnPlateau``.
    """
    call = "reduce_on_plateau"
    check_choice(call, "mode", mode, ("min", "max"))
    check_choice(call, "threshold_mode", threshold_mode, ("rel", "abs"))
    check_hyper(call, "factor", factor, 0.0, 1.0, low_open=True, high_open=True)
    check_count(call, "patience", patience, 0)
    check_hyper(call, "threshold", threshold, 0.0)
    check_count(call, "cooldown", cooldown, 0)
    check_hyper(call, "min_scale", min_scale, 0.0)
    check_hyper(call, "eps", eps, 0.0)
    check_count(call, "window", window, 1)

    def config(count: jax.Array) -> PlateauConfig:
        return PlateauConfig(
            factor=resolve(factor, count),
            patience=as_count(resolve(patience, count)),
            threshold=resolve(threshold, count),
            cooldown=as_count(resolve(cooldown, count)),
            min_scale=resolve(min_scale, count),
            eps=resolve(eps, count),
            window=as_count(resolve(window, count)),
            sign=sign_of(mode),
            relative=jnp.asarray(threshold_mode == "rel"),
        )

    def init_fn(params: Any) -> ReduceOnPlateauState:
        del params
        count = zero_count()
        dtype = float_dtype()
        one = jnp.ones([], dtype)
        return ReduceOnPlateauState(
            count=count,
            scale=one,
            best=jnp.asarray(np.inf if mode == "min" else -np.inf, dtype),
            num_bad=zero_count(),
            cooldown_counter=zero_count(),
            value_sum=jnp.zeros([], dtype),
            value_count=zero_count(),
            observations=zero_count(),
            config=config(count),
            hyperparams=_record(jnp.ones([], dtype), zero_count()),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        state = state._replace(config=config(state.count))
        if value is not None:
            state = feed_window(
                state, as_metric("reduce_on_plateau.update(value=...)", value, axis_name), observe_plateau
            )
        scale = state.scale
        updates = jax.tree.map(lambda u: u * cast_like(scale, u), updates)
        return updates, state._replace(count=next_count(state.count), hyperparams=_record(scale, state.observations))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
