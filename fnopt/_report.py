"""Reading and feeding optimizer states from outside ``update``: ``report``
a metric to the plateau / early-stopping states, ``should_stop``, and
``hyperparams`` for logging.

Each accepts a plain optimizer state, a ``flax.nnx.Optimizer`` (or its
``opt_state``, whose arrays sit in NNX variables) and a Linen ``TrainState``
(anything with ``opt_state``, ``tx`` and ``replace``), and reaches through
``chain``, Optax's wrappers (``partition`` / ``multi_transform``, ``masked``,
``MultiSteps``, ``inject_hyperparams``, ``apply_if_finite``, ``named_chain``)
and fnopt's own.
"""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from ._base import map_records
from ._checks import is_traced
from ._cooldown import CooldownState, begin, observe_cooldown
from ._plateau import ReduceOnPlateauState, as_metric, observe_plateau
from ._stopping import EarlyStoppingState, keeps_best, observe_stopping

# Record names that scale the learning rate of every group in their scope.
SCALE_NAMES = ("plateau_scale", "cooldown_scale")
# Step sizes learned by learning-rate-free methods (Prodigy's ``d``): the
# learning rate acts as a multiplier of them, so they multiply it exactly
# like a scale. A new LR-free method records its estimate under one of these.
LR_ESTIMATE_NAMES = ("d",)


def _variable_type() -> type | None:
    """``flax.nnx.Variable`` when Flax is already imported (never imports it)."""
    if "flax.nnx" not in sys.modules:
        return None
    return sys.modules["flax.nnx"].Variable


def _is_nnx_optimizer(obj: Any) -> bool:
    variable = _variable_type()
    return variable is not None and isinstance(obj, sys.modules["flax.nnx"].Optimizer)


def _is_train_state(obj: Any) -> bool:
    return all(hasattr(obj, name) for name in ("opt_state", "tx", "replace", "apply_gradients"))


def _opt_state(obj: Any) -> Any:
    """The optimizer state inside an NNX optimizer or a Linen train state."""
    return obj.opt_state if (_is_nnx_optimizer(obj) or _is_train_state(obj)) else obj


def _variables(state: Any) -> list[Any]:
    """The NNX variables inside ``state`` (empty for a plain state)."""
    variable = _variable_type()
    if variable is None:
        return []
    leaves = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, variable))
    return [leaf for leaf in leaves if isinstance(leaf, variable)]


def plain_state(obj: Any) -> Any:
    """The optimizer state of ``obj`` with every NNX variable replaced by its
    array: what ``tx.init`` returned, whatever wrapped it."""
    state = _opt_state(obj)
    return unwrap_variables(state) if _variables(state) else state


def report(opt_state: Any, value: Any, *, axis_name: str | None = None, params: Any = None) -> Any:
    """Feeds one observation of a metric to every plateau, early-stopping and
    plateau-triggered cooldown state inside ``opt_state``.

    Typically the validation loss at the end of an epoch. Each
    :func:`~fnopt.transforms.reduce_on_plateau`,
    :func:`~fnopt.transforms.early_stopping` and
    :func:`~fnopt.transforms.cooldown` (with ``patience``) state found at any
    depth of ``chain``s and wrappers takes ``value`` as one observation, at
    once (their ``window`` only applies to ``value=`` passed to ``update``). Nothing else
    in the state changes. Pure and jittable; ``value`` may be traced, and
    under ``vmap`` each member decides on its own.

    Args:
        opt_state: an optimizer state (any nesting of tuples, NamedTuples,
            lists and dicts, Optax's wrapper states included), a Linen
            ``TrainState`` (a new one is returned), or a ``flax.nnx.Optimizer``
            or its ``opt_state`` (updated in place, NNX style, and returned).
        value: a scalar metric.
        axis_name: under ``shard_map`` / ``pmap`` (or a named ``vmap``), the
            name of the mapped axis over which ``value`` is averaged
            (``pmean``) before it is observed, so shards that each report
            their local metric take the decision of the global mean.
        params: the params ``value`` was measured on, kept by an
            ``early_stopping(keep_best=True)`` when this observation is its
            best; required by such a state, unused otherwise. A Linen
            ``TrainState`` supplies its own ``params``; for an
            ``nnx.Optimizer`` pass the model (or ``nnx.state(model,
            nnx.Param)``).

    Returns:
        The new optimizer state (or train state), of the same structure.

    Raises:
        ValueError: when ``opt_state`` holds no plateau, early-stopping or
            ``cooldown(patience=...)`` state, or holds an
            ``early_stopping(keep_best=True)`` and no ``params`` are known.

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
    params = _observed_params(opt_state, params)

    def observe_stop(state: EarlyStoppingState) -> EarlyStoppingState:
        if keeps_best(state) and params is None:
            raise ValueError(
                "`report(opt_state, value)`: `opt_state` holds an `early_stopping(keep_best=True)`, which "
                "needs the params the metric was measured on: `report(opt_state, value, params=params)`"
            )
        return observe_stopping(state, value, params if keeps_best(state) else None)

    def observe(state):
        new, plateaus = map_records(state, ReduceOnPlateauState, lambda s: observe_plateau(s, value))
        new, stoppers = map_records(new, EarlyStoppingState, observe_stop)
        new, _ = map_records(new, CooldownState, lambda s: observe_cooldown(s, value))
        if plateaus + stoppers == 0 and not _automatic_cooldowns(new):
            raise ValueError(
                "`report(opt_state, ...)`: `opt_state` holds no `reduce_on_plateau`, "
                "`early_stopping` or `cooldown(patience=...)` state"
            )
        return new

    return _rewrite(opt_state, observe)


def _observed_params(opt_state: Any, params: Any) -> Any:
    """The params for ``report``: given ones with NNX variables (or a whole
    NNX model) turned into arrays, or a Linen train state's own."""
    if params is None:
        if _is_train_state(opt_state) and not _is_nnx_optimizer(opt_state):
            return opt_state.params
        return None
    if "flax.nnx" in sys.modules:
        nnx = sys.modules["flax.nnx"]
        if isinstance(params, nnx.Module):
            wrt = opt_state.wrt if _is_nnx_optimizer(opt_state) else nnx.Param
            params = nnx.state(params, wrt)
        return unwrap_variables(params)
    return params


def unwrap_variables(tree: Any) -> Any:
    """``tree`` with every NNX variable replaced by its array."""
    variable = _variable_type()
    if variable is None:
        return tree
    return jax.tree.map(
        lambda x: x.get_value() if isinstance(x, variable) else x, tree, is_leaf=lambda x: isinstance(x, variable)
    )


def _rewrite(opt_state: Any, fn: Any) -> Any:
    """``fn(plain_state)`` put back where ``opt_state`` came from: a new
    Linen ``TrainState``, an NNX optimizer (or its state) updated in place,
    or the new plain state."""
    if _is_train_state(opt_state) and not _is_nnx_optimizer(opt_state):
        return opt_state.replace(opt_state=_rewrite(opt_state.opt_state, fn))
    new = fn(plain_state(opt_state))
    variables = _variables(_opt_state(opt_state))
    if not variables:
        return new
    # NNX: write the new arrays back into the optimizer's variables.
    for var, leaf in zip(variables, jax.tree.leaves(new)):
        var.set_value(leaf)
    return opt_state


# ------------------------------------------------ cooldown (issue 12)


def _automatic_cooldowns(state: Any) -> int:
    """How many plateau-triggered cooldown states ``state`` holds."""
    found = []
    map_records(state, CooldownState, lambda s: found.append(s.trigger is not None) or s)
    return sum(found)


def start_cooldown(opt_state: Any) -> Any:
    """Starts every :func:`~fnopt.transforms.cooldown` inside ``opt_state``:
    the next update is the first cooldown update. A cooldown that has
    already started is left as it is (it is never restarted).

    Pure and jittable; accepts what :func:`report` accepts (a plain state at
    any depth of ``chain``s and wrappers, a Linen ``TrainState``, an
    ``nnx.Optimizer`` or its state). Under ``vmap``, select per member, e.g.
    ``jax.tree.map(lambda a, b: jnp.where(go, a, b), start_cooldown(s), s)``.

    Returns:
        The new optimizer state (or train state), of the same structure.

    Raises:
        ValueError: when ``opt_state`` holds no cooldown state.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> tx = fnopt.chain(fnopt.sgd(0.1), fnopt.transforms.cooldown(100))
        >>> state = fnopt.start_cooldown(tx.init(jnp.zeros(2)))
        >>> int(state[1].start)
        0
    """

    def start(state):
        new, found = map_records(state, CooldownState, begin)
        if not found:
            raise ValueError("`start_cooldown(opt_state)`: `opt_state` holds no `cooldown` state")
        return new

    return _rewrite(opt_state, start)


def should_stop(opt_state: Any) -> jax.Array:
    """Whether early stopping has triggered: the OR of the flags of every
    :func:`~fnopt.transforms.early_stopping` state inside ``opt_state``
    (a plain state, an ``nnx.Optimizer`` or its state, or a ``TrainState``).

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
    states = records(opt_state, EarlyStoppingState)
    if not states:
        raise ValueError("`should_stop(opt_state)`: `opt_state` holds no `early_stopping` state")
    if any(_never_fed(s) for s in states):
        warnings.warn(
            "`should_stop(opt_state)`: an `early_stopping` has applied updates but never received a metric, so "
            "it can never stop; pass `value=loss` to `update` or call `fnopt.report(opt_state, metric)`",
            stacklevel=2,
        )
    return functools.reduce(jnp.logical_or, [jnp.asarray(s.stopped) for s in states])


def _never_fed(state: EarlyStoppingState) -> bool:
    """Whether a concrete state has applied updates without any metric (a
    traced one cannot be told here)."""
    counts = (state.count, state.observations, state.value_count)
    if any(is_traced(c) for c in counts):
        return False
    return bool(jnp.all((state.count > 0) & (state.observations == 0) & (state.value_count == 0)))


def records(opt_state: Any, kind: type) -> list[Any]:
    """Every state of type ``kind`` inside ``opt_state`` (at any depth of
    chains and wrappers; NNX optimizers and Linen train states included)."""
    found: list[Any] = []
    map_records(plain_state(opt_state), kind, lambda s: found.append(s) or s)
    return found


def best_params(opt_state: Any) -> Any:
    """The params kept by :func:`~fnopt.transforms.early_stopping` with
    ``keep_best=True``: those of the best observation so far (Keras'
    ``restore_best_weights``), laid out like the params ``init`` saw.

    Accepts what :func:`report` accepts (a plain state at any depth of
    ``chain``s and wrappers, a Linen ``TrainState``, an ``nnx.Optimizer`` or
    its state; for NNX the result is an ``nnx.State`` of arrays, so
    ``nnx.update(model, fnopt.best_params(optimizer))`` restores them).
    Before the first monitored observation it returns the copy ``init``
    made of the initial params. Pure and jittable; batched under ``vmap``.

    Raises:
        ValueError: when ``opt_state`` holds no ``early_stopping(keep_best=True)``
            state, or more than one.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> tx = fnopt.chain(fnopt.sgd(1.0), fnopt.transforms.early_stopping(patience=1, keep_best=True))
        >>> params = jnp.zeros(2)
        >>> state = tx.init(params)
        >>> for loss in [3.0, 1.0, 2.0]:  # measured at params 1, 2, 3
        ...     updates, state = tx.update(-jnp.ones(2), state, params)
        ...     params = params + updates
        ...     state = fnopt.report(state, loss, params=params)
        >>> fnopt.best_params(state), bool(fnopt.should_stop(state))
        (Array([2., 2.], dtype=float32), True)
    """
    found = records(opt_state, EarlyStoppingState)
    keeping = [s for s in found if keeps_best(s)]
    if len(keeping) != 1:
        what = "more than one" if keeping else "no"
        raise ValueError(
            f"`best_params(opt_state)`: `opt_state` holds {what} `early_stopping(keep_best=True)` state"
            + (f" ({len(found)} early_stopping without keep_best)" if found and not keeping else "")
        )
    return keeping[0].best_params


# ------------------------------------------------------------ hyperparams


def _is_named(node: Any, *names: str) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields") and type(node).__name__ in names


def _has_record(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields") and "hyperparams" in node._fields


class _Collector:
    """Walks a state, collecting ``(scope, name, value)`` records and the
    LR scales, each tagged with its scope (the ``partition`` labels above it)."""

    def __init__(self):
        self.records: list[tuple[tuple, str, jax.Array]] = []
        self.scales: list[tuple[tuple, jax.Array]] = []

    def add(self, scope: tuple, name: str, value: jax.Array) -> None:
        self.records.append((scope, name, value))
        if name in SCALE_NAMES or name in LR_ESTIMATE_NAMES:
            self.scales.append((scope, value))

    def visit(self, node: Any, scope: tuple = ()) -> None:
        if _is_named(node, "PartitionState", "MultiTransformState"):
            for label, inner in node.inner_states.items():
                self.visit(inner, scope + (str(label),))
            return
        if _is_named(node, "ReduceLROnPlateauState"):  # Optax's contrib plateau
            self.add(scope, "plateau_scale", node.scale)
            return
        if _is_named(node, "InjectHyperparamsState", "InjectStatefulHyperparamsState"):
            # The inner transform records the injected values itself when it
            # is an fnopt one: list each name once.
            before = len(self.records)
            self.visit(node.inner_state, scope)
            seen = {name for s, name, _ in self.records[before:] if s == scope}
            for name, value in node.hyperparams.items():
                if name not in seen and jnp.ndim(value) == 0:
                    self.add(scope, name, value)
            return
        if _has_record(node):
            for name, value in node.hyperparams.items():
                self.add(scope, name, value)
        if isinstance(node, (tuple, list)):
            for child in node:
                self.visit(child, scope)
        elif isinstance(node, dict):
            for child in node.values():
                self.visit(child, scope)


def hyperparams(opt_state: Any) -> dict[str, jax.Array]:
    """The hyperparameter values in effect, as a flat dict, for logging.

    Collects the ``hyperparams`` record of every fnopt transform inside a
    (nested) optimizer state, in chain order, as plain arrays. Accepts a
    plain state, an ``nnx.Optimizer`` or its ``opt_state``, or a Linen
    ``TrainState``.

    Names:

    * A hyperparameter given as a group tree is reported per group,
      ``"<group>/<name>"``, the group being the key path of its node joined
      with ``"."`` (``"backbone/learning_rate"``, ``"encoder.0/weight_decay"``).
    * Under ``optax.partition`` / ``multi_transform``, names inside a group
      are prefixed with its label (``"head/learning_rate"``).
    * A name that still occurs more than once gets a suffix ``_1``, ``_2``,
      ... from its second occurrence on. Under ``optax.inject_hyperparams``
      of an fnopt optimizer each name appears once.

    Effective learning rate: for every learning rate (per group), the
    learning rate times every plateau / cooldown scale acting on it (and
    the step size ``d`` a learning-rate-free method such as
    :func:`fnopt.prodigy` has learned, which the learning rate multiplies), named
    ``"<group>/effective_learning_rate"`` (``"effective_learning_rate"``
    without groups): a scale inside a ``partition`` group acts on that
    group only, one outside acts on all. Optax's
    ``contrib.reduce_on_plateau`` scale counts too (it is also reported as
    ``plateau_scale``). When one scope holds several learning rates for the
    same group (two ``scale_by_learning_rate`` in a chain), the first is used.

    Pure and jittable.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> opt = fnopt.sgd(0.1, momentum=0.9)
        >>> sorted(fnopt.hyperparams(opt.init({"w": jnp.zeros(3)})))
        ['dampening', 'effective_learning_rate', 'learning_rate', 'momentum']
        >>> opt = fnopt.adamw({"backbone": 1e-4, "head": 1e-3})
        >>> hp = fnopt.hyperparams(opt.init({"backbone": jnp.zeros(3), "head": jnp.zeros(2)}))
        >>> round(float(hp["head/effective_learning_rate"]), 6)
        0.001
    """
    collector = _Collector()
    collector.visit(plain_state(opt_state))
    out: dict[str, jax.Array] = {}
    effective: dict[str, jax.Array] = {}
    for scope, name, value in collector.records:
        qualified = "/".join(scope + (name,))
        key, k = qualified, 0
        while key in out:
            k += 1
            key = f"{qualified}_{k}"
        out[key] = value
        group, _, base = qualified.rpartition("/")
        if base == "learning_rate":
            target = f"{group}/effective_learning_rate" if group else "effective_learning_rate"
            if target not in effective:
                scale = _product(s for sc, s in collector.scales if scope[: len(sc)] == sc)
                effective[target] = value if scale is None else value * jnp.asarray(scale, jnp.result_type(value))
    out.update(effective)
    return out


def _product(values) -> jax.Array | None:
    values = list(values)
    return functools.reduce(lambda a, b: a * b, values) if values else None

