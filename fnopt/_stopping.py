"""Early stopping: Keras ``EarlyStopping`` counting as a transform that emits
exactly zero updates once triggered."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._chain import mark_stopping
from ._base import Hyper, check_hyper, is_masked_node, next_count, resolve, zero_count
from ._checks import check_choice, check_flag, concrete, float_dtype
from ._plateau import as_count, as_metric, check_count, feed_window, sign_of


class StoppingConfig(NamedTuple):
    """The rule's hyperparameters, kept in the state for ``fnopt.report``.
    ``patience``, ``window`` and ``start_from_epoch`` are ``int32``; ``min_delta``, ``baseline``
    (``+inf`` / ``-inf`` when ``None``) and ``sign`` (``+1`` for ``mode="min"``,
    ``-1`` for ``"max"``) use the default float dtype."""

    patience: jax.Array
    min_delta: jax.Array
    baseline: jax.Array
    window: jax.Array
    sign: jax.Array
    start_from_epoch: jax.Array


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
        observations: int32, observations received (Keras' epoch index of
            the next one), skipped ones (``start_from_epoch``) included.
        best_observation: int32, index of the observation ``best_params``
            was taken at (Keras' ``best_epoch``); ``-1`` before any.
        best_params: with ``keep_best=True``, a copy of the params at the
            best observation, laid out like the params; ``None`` otherwise.
        config: :class:`StoppingConfig`, the hyperparameters last in effect.
        hyperparams: ``{"early_stopping_observations": observations}``, so
            a log shows an early stopping that never received a metric.
    """

    count: jax.Array
    best: jax.Array
    wait: jax.Array
    stopped: jax.Array
    value_sum: jax.Array
    value_count: jax.Array
    observations: jax.Array
    best_observation: jax.Array
    best_params: Any
    config: StoppingConfig
    hyperparams: dict[str, jax.Array]


def observe_stopping(state: EarlyStoppingState, value: Any, params: Any = None) -> EarlyStoppingState:
    """One observation: the body of Keras' ``EarlyStopping.on_epoch_end``,
    ``params`` being the weights the metric was measured on (needed when the
    state keeps the best params). Once stopped, observations change nothing."""
    c = state.config
    index = state.observations
    current = jnp.asarray(value, dtype=state.best.dtype)
    m, b = c.sign * current, c.sign * state.best  # minimisation form
    better = jnp.isfinite(m) & (m + c.min_delta < b)
    beats_baseline = m + c.min_delta < c.sign * c.baseline
    wait = jnp.where(better & beats_baseline, 0, next_count(state.wait))
    stop = ~better & (wait >= c.patience)
    # Keras: the first monitored epoch's weights are the best until one improves.
    take = better | (state.best_observation < 0)
    observed = state._replace(
        best=jnp.where(better, current, state.best),
        wait=wait,
        stopped=state.stopped | stop,
        best_observation=jnp.where(take, index, state.best_observation),
        best_params=_take(take, params, state.best_params),
    )
    monitored = index >= c.start_from_epoch
    new = jax.tree.map(lambda a, b: jnp.where(monitored, a, b), observed, state)
    new = new._replace(observations=next_count(index))
    new = new._replace(hyperparams={"early_stopping_observations": new.observations})
    return jax.tree.map(lambda old, new: jnp.where(state.stopped, old, new), state, new)


def _take(take: jax.Array, params: Any, best: Any) -> Any:
    """``params`` (cast to the stored dtype) where ``take``, else ``best``.
    Leaves ``init`` saw masked out (``optax.MaskedNode``: the other groups
    of an ``optax.partition`` / ``masked``) stay masked, so ``report`` may
    pass the full params to a state inside a group."""
    if best is None:
        return None
    if params is None:
        raise ValueError(
            "`early_stopping(keep_best=True)` needs the params the metric was measured on: pass "
            "`params` to `update` along with `value=`, or `fnopt.report(opt_state, value, params=params)`"
        )
    kept, treedef = jax.tree_util.tree_flatten_with_path(best, is_leaf=is_masked_node)
    try:
        given = treedef.flatten_up_to(params)
    except (ValueError, TypeError):
        raise ValueError(
            f"`early_stopping(keep_best=True)`: the params given have structure {jax.tree.structure(params)}, "
            f"but `init` saw {jax.tree.structure(best)}"
        ) from None
    out = []
    for (path, old), new in zip(kept, given):
        if is_masked_node(old):
            out.append(old)
            continue
        if jnp.shape(old) != jnp.shape(new):
            raise ValueError(
                f"`early_stopping(keep_best=True)`: the params at {jax.tree_util.keystr(path) or 'the root'} "
                f"have shape {jnp.shape(new)}, but `init` saw {jnp.shape(old)}"
            )
        out.append(jnp.where(take, jnp.asarray(new, old.dtype), old))
    return treedef.unflatten(out)


def keeps_best(state: EarlyStoppingState) -> bool:
    """Whether ``state`` belongs to an ``early_stopping(keep_best=True)``."""
    return state.best_params is not None


def early_stopping(
    patience: Hyper = 10,
    min_delta: Hyper = 0.0,
    *,
    mode: str = "min",
    baseline: Hyper | None = None,
    window: Hyper = 1,
    start_from_epoch: Hyper = 0,
    keep_best: bool = False,
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
    ``tf.keras`` instead started ``best`` at the baseline). The first
    ``start_from_epoch`` observations are ignored altogether (Keras'
    warm-up epochs): they neither count towards ``wait`` nor become ``best``.

    ``keep_best=True`` is Keras' ``restore_best_weights``: the state keeps a
    copy of the params at the best observation (the first monitored
    observation's params until one improves, as in Keras), and
    ``fnopt.best_params(opt_state)`` returns it, at any time (Keras
    restores it only at the end of training). The params kept are those the
    metric was *measured on*: with ``fnopt.report(opt_state, value,
    params=params)``, the ``params`` passed there (a Linen ``TrainState``
    supplies its own); with ``update(grads, state, params, value=loss)``,
    the ``params`` of that call, i.e. the weights the loss and gradients
    were computed at, before this update (with ``window > 1``, those of the
    update that completes the window). The copy costs one params' worth of
    memory, in the params' dtype, laid out (sharded) like them.

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
        start_from_epoch: observations to ignore at the start (Keras'
            ``start_from_epoch``), >= 0.
        keep_best: keep a copy of the params at the best observation, for
            :func:`fnopt.best_params` (static bool).
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
    check_count(call, "start_from_epoch", start_from_epoch, 0)
    check_flag(call, "keep_best", keep_best)
    worst = np.inf if mode == "min" else -np.inf

    def config(count: jax.Array) -> StoppingConfig:
        return StoppingConfig(
            patience=as_count(resolve(patience, count)),
            min_delta=resolve(min_delta, count),
            baseline=resolve(worst if baseline is None else baseline, count),
            window=as_count(resolve(window, count)),
            sign=sign_of(mode),
            start_from_epoch=as_count(resolve(start_from_epoch, count)),
        )

    def init_fn(params: Any) -> EarlyStoppingState:
        count = zero_count()
        dtype = float_dtype()
        return EarlyStoppingState(
            count=count,
            best=jnp.asarray(worst, dtype),
            wait=zero_count(),
            stopped=jnp.asarray(False),
            value_sum=jnp.zeros([], dtype),
            value_count=zero_count(),
            observations=zero_count(),
            best_observation=jnp.asarray(-1, jnp.int32),
            best_params=jax.tree.map(jnp.copy, params) if keep_best else None,
            config=config(count),
            hyperparams={"early_stopping_observations": zero_count()},
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        state = state._replace(config=config(state.count))
        if value is not None:
            metric = as_metric("early_stopping.update(value=...)", value, axis_name)
            state = feed_window(state, metric, lambda s, v: observe_stopping(s, v, params))
        stopped = state.stopped
        updates = jax.tree.map(lambda u: jnp.where(stopped, jnp.zeros_like(u), u), updates)
        return updates, state._replace(count=next_count(state.count))

    return mark_stopping(optax.GradientTransformationExtraArgs(init_fn, update_fn))
