"""Feeding a metric to, and reading the flag of, the plateau and
early-stopping states inside any (nested) optimizer state."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ._base import map_records
from ._plateau import ReduceOnPlateauState, as_metric, observe_plateau
from ._stopping import EarlyStoppingState, observe_stopping


def report(opt_state: Any, value: Any, *, axis_name: str | None = None) -> Any:
    """Feeds one observation of a metric to every plateau and early-stopping
    state inside ``opt_state``.

    Typically the validation loss at the end of an epoch. Each
    :func:`~fnopt.transforms.reduce_on_plateau` and
    :func:`~fnopt.transforms.early_stopping` state found at any depth of
    ``chain``s and wrappers takes ``value`` as one observation, at once (their
    ``window`` only applies to ``value=`` passed to ``update``). Nothing else
    in the state changes. Pure and jittable; ``value`` may be traced, and
    under ``vmap`` each member decides on its own. For a
    ``flax.nnx.Optimizer``, whose state holds NNX variables, use
    ``fnopt.flax.report_nnx(optimizer, value)``.

    Args:
        opt_state: an optimizer state (any nesting of tuples, NamedTuples,
            lists and dicts).
        value: a scalar metric.
        axis_name: under ``shard_map`` / ``pmap`` (or a named ``vmap``), the
            name of the mapped axis over which ``value`` is averaged
            (``pmean``) before it is observed, so shards that each report
            their local metric take the decision of the global mean.

    Returns:
        The new optimizer state, of the same structure.

    Raises:
        ValueError: when ``opt_state`` holds no plateau or early-stopping state.

    Examples:
        >>> import jax.numpy as jnp, optax, fnopt
        >>> tx = optax.chain(optax.sgd(0.1), fnopt.transforms.reduce_on_plateau(patience=0))
        >>> state = tx.init(jnp.zeros(3))
        >>> state = fnopt.report(state, 1.0)
        >>> state = fnopt.report(state, 2.0)  # no improvement: cut
        >>> round(float(fnopt.hyperparams(state)["plateau_scale"]), 6)
        0.1
    """
    value = as_metric("report(opt_state, value)", value, axis_name)
    new, plateaus = map_records(opt_state, ReduceOnPlateauState, lambda s: observe_plateau(s, value))
    new, stoppers = map_records(new, EarlyStoppingState, lambda s: observe_stopping(s, value))
    if plateaus + stoppers == 0:
        raise ValueError(
            "`report(opt_state, ...)`: `opt_state` holds no `reduce_on_plateau` or "
            "`early_stopping` state"
        )
    return new


def should_stop(opt_state: Any) -> jax.Array:
    """Whether early stopping has triggered: the OR of the flags of every
    :func:`~fnopt.transforms.early_stopping` state inside ``opt_state``.

    Returns a boolean array (batched under ``vmap``; use it in a Python
    ``if`` only outside ``jit``). Pure and jittable.

    Raises:
        ValueError: when ``opt_state`` holds no early-stopping state.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> tx = fnopt.transforms.early_stopping(patience=1)
        >>> state = tx.init(jnp.zeros(3))
        >>> bool(fnopt.should_stop(fnopt.report(state, jnp.nan)))
        True
    """
    flags: list[jax.Array] = []

    def collect(state: EarlyStoppingState) -> EarlyStoppingState:
        flags.append(jnp.asarray(state.stopped))
        return state

    map_records(opt_state, EarlyStoppingState, collect)
    if not flags:
        raise ValueError("`should_stop(opt_state)`: `opt_state` holds no `early_stopping` state")
    return functools.reduce(jnp.logical_or, flags)
