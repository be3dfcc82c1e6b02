"""Early stopping: Keras ``EarlyStopping`` counting as a transform that emits
exactly zero updates once triggered."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._chain import mark_stopping
from ._base import Hyper, check_hyper, next_count, resolve, zero_count
from ._checks import check_choice, concrete, float_dtype
from ._plateau import as_count, as_metric, check_count, feed_window, sign_of


class StoppingConfig(NamedTuple):
    """The rule's hyperparameters, kept in the state for ``fnopt.report``.
    ``patience`` and ``window`` are ``int32``; ``min_delta``, ``baseline``
    (``+inf`` / ``-inf`` when ``None``) and ``sign`` (``+1`` for ``mode="min"``,
    ``-1`` for ``"max"``) use the default float dtype."""

    patience: jax.Array
    min_delta: jax.Array
    baseline: jax.Array
    window: jax.Array
    sign: jax.Array


class EarlyStoppingState(NamedTuple):
    """State of :func:`early_stopping`.

    Fields (``f`` = default float dtype, float32 or float64 under x64):
        count: int32, updates applied (saturating).
        best: f, best metric seen; ``+inf`` (min) / ``-inf`` (max) before any.
        wait: int32, Keras' ``wait``: observations since the last one that
            improved on both ``best`` and ``baseline``.
        stopped: bool, set once triggered; never cleared.
        value_sum: f, sum of the ``value=`` arguments not yet decided on.
        value_count: int32, how many values ``value_sum`` holds.
        config: :class:`StoppingConfig`, the hyperparameters last in effect.
        hyperparams: ``{}`` (no hyperparameter to log).
    """

    count: jax.Array
    best: jax.Array
    wait: jax.Array
    stopped: jax.Array
    value_sum: jax.Array
    value_count: jax.Array
    config: StoppingConfig
    hyperparams: dict[str, jax.Array]


def observe_stopping(state: EarlyStoppingState, value: Any) -> EarlyStoppingState:
    """One observation: the body of Keras' ``EarlyStopping.on_epoch_end``.
    Once stopped, observations change nothing."""
    c = state.config
    current = jnp.asarray(value, dtype=state.best.dtype)
    m, b = c.sign * current, c.sign * state.best  # minimisation form
    better = jnp.isfinite(m) & (m + c.min_delta < b)
    beats_baseline = m + c.min_delta < c.sign * c.baseline
    wait = jnp.where(better & beats_baseline, 0, next_count(state.wait))
    stop = ~better & (wait >= c.patience)
    observed = state._replace(
        best=jnp.where(better, current, state.best), wait=wait, stopped=state.stopped | stop
    )
    return jax.tree.map(lambda old, new: jnp.where(state.stopped, old, new), state, observed)


def early_stopping(
    patience: Hyper = 10,
    min_delta: Hyper = 0.0,
    *,
    mode: str = "min",
    baseline: Hyper | None = None,
    window: Hyper = 1,
    axis_name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Stops training, by zeroing every update, when a metric stops improving.

    The counting is that of Keras ``EarlyStopping`` (Keras 3). For each
    observation ``a`` of the metric, with ``best`` starting at ``+inf``
    (``mode="min"``) or ``-inf`` (``"max"``):

    1. ``wait += 1``.
    2. ``a`` improves on ``best`` when ``a + min_delta < best`` (min) or
       ``a - min_delta > best`` (max). Then ``best = a``, and ``wait = 0`` if
       ``a`` also improves, by the same rule, on ``baseline`` (always, when
       ``baseline`` is None). An improving observation never stops.
    3. Otherwise, if ``wait >= patience``, training stops.

    So without a baseline, training stops on the ``patience``-th consecutive
    non-improving observation (``patience`` 0 and 1 both stop on the first).
    With a baseline, ``best`` still follows the metric, but ``wait`` is reset
    only by an observation that beats the baseline too (Keras 3; older
    ``tf.keras`` instead started ``best`` at the baseline). Keras'
    ``restore_best_weights`` and ``start_from_epoch`` are not provided.

    A non-finite metric is never an improvement and never becomes ``best``
    (Keras would take ``-inf`` as a best loss, and never stops on its very
    first epoch, which only matters when that first metric is non-finite).

    Once stopped, the flag stays set, later observations change nothing, and
    every update this transform emits is exactly zero (even for a non-finite
    incoming update), so a ``lax.scan`` or a ``vmap``-ed sweep whose members
    stop at different times keeps running with frozen parameters. Put it
    *last* in a ``chain``: a stateful transform after it (momentum, Adam)
    would turn zeros back into steps. ``fnopt.should_stop(opt_state)`` reads
    the flag so a Python loop can break.

    The metric comes in as for :func:`reduce_on_plateau`: ``tx.update(...,
    value=loss)`` on each step (the mean over ``window`` updates is one
    observation; the update that triggers the stop is already zero), or
    ``fnopt.report(opt_state, metric)`` (one observation, ``window`` unused).

    Args:
        patience: non-improving observations before stopping, >= 0.
        min_delta: minimum change that counts as an improvement, >= 0.
        mode: ``"min"`` or ``"max"``.
        baseline: a value the metric must beat to reset ``wait``, or None.
        window: number of ``value=`` arguments averaged per observation, >= 1.
        axis_name: under ``shard_map`` / ``pmap`` (or a named ``vmap``), the
            ``value=`` passed to ``update`` is first averaged over this mapped
            axis (``pmean``), so every shard stops on the global mean. Static;
            ``None`` uses ``value`` as given.

    Numeric hyperparameters may be floats, traced arrays or schedules of the
    update count; concrete ones are validated.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state
        :class:`EarlyStoppingState`.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> tx = fnopt.transforms.early_stopping(patience=2)
        >>> state = tx.init({"w": jnp.zeros(2)})
        >>> stops = []
        >>> for loss in [3.0, 2.0, 2.5, 2.1, 1.0]:
        ...     state = fnopt.report(state, loss)
        ...     stops.append(bool(fnopt.should_stop(state)))
        >>> stops
        [False, False, False, True, True]
        >>> tx.update({"w": jnp.ones(2)}, state)[0]["w"]
        Array([0., 0.], dtype=float32)

    References:
        Keras ``keras.callbacks.EarlyStopping``.
    """
    call = "early_stopping"
    check_choice(call, "mode", mode, ("min", "max"))
    check_count(call, "patience", patience, 0)
    check_hyper(call, "min_delta", min_delta, 0.0)
    if baseline is not None and not callable(baseline):
        concrete(call, "baseline", baseline)
    check_count(call, "window", window, 1)
    worst = np.inf if mode == "min" else -np.inf

    def config(count: jax.Array) -> StoppingConfig:
        return StoppingConfig(
            patience=as_count(resolve(patience, count)),
            min_delta=resolve(min_delta, count),
            baseline=resolve(worst if baseline is None else baseline, count),
            window=as_count(resolve(window, count)),
            sign=sign_of(mode),
        )

    def init_fn(params: Any) -> EarlyStoppingState:
        del params
        count = zero_count()
        dtype = float_dtype()
        return EarlyStoppingState(
            count=count,
            best=jnp.asarray(worst, dtype),
            wait=zero_count(),
            stopped=jnp.asarray(False),
            value_sum=jnp.zeros([], dtype),
            value_count=zero_count(),
            config=config(count),
            hyperparams={},
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        state = state._replace(config=config(state.count))
        if value is not None:
            state = feed_window(
                state, as_metric("early_stopping.update(value=...)", value, axis_name), observe_stopping
            )
        stopped = state.stopped
        updates = jax.tree.map(lambda u: jnp.where(stopped, jnp.zeros_like(u), u), updates)
        return updates, state._replace(count=next_count(state.count))

    return mark_stopping(optax.GradientTransformationExtraArgs(init_fn, update_fn))
