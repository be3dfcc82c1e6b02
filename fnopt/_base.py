"""What every fnopt transform shares: hyperparameters that may be numbers,
traced arrays or schedules; a saturating step counter; the record of the
hyperparameter values used by the last update; and ``hyperparams()``, which
collects those records from any (nested) optimizer state for logging.

Convention: a transform's state is a ``NamedTuple`` with an ``int32`` field
``count`` (updates applied so far, saturating at ``2**31 - 1``) and a field
``hyperparams``: a dict from hyperparameter name to the scalar value used by
the most recent update (at ``init``: the value at step 0).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from ._checks import as_float, check_range, is_traced

Hyper = Any  # float | jax.Array | Callable[[step], value]

_INT32_MAX = jnp.iinfo(jnp.int32).max


def check_hyper(
    call: str,
    name: str,
    value: Hyper,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Validates a concrete hyperparameter; schedules and traced values pass.

    A schedule's values cannot be checked at construction (it may depend on
    traced arguments); the schedule factories validate their own arguments.
    """
    if callable(value) or is_traced(value):
        return
    check_range(call, name, value, low, high, low_open=low_open, high_open=high_open)


def resolve(value: Hyper, count: jax.Array) -> jax.Array:
    """The value of a hyperparameter at step ``count``, as a float array."""
    return as_float(value(count) if callable(value) else value)


def resolve_all(hypers: Mapping[str, Hyper], count: jax.Array) -> dict[str, jax.Array]:
    return {name: resolve(value, count) for name, value in hypers.items()}


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def next_count(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the int32 maximum instead of wrapping."""
    return jnp.where(count < _INT32_MAX, count + 1, count).astype(jnp.int32)


def cast_like(value: jax.Array, like: jax.Array) -> jax.Array:
    """A scalar hyperparameter in the dtype of the array it multiplies
    (explicit, so strict dtype promotion holds and bf16 stays bf16)."""
    return jnp.asarray(value, dtype=jnp.result_type(like))


def _has_record(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields") and "hyperparams" in node._fields


def hyperparams(opt_state: Any) -> dict[str, jax.Array]:
    """The hyperparameter values in effect, as a flat dict, for logging.

    Collects the ``hyperparams`` record of every fnopt transform inside a
    (nested) optimizer state, in chain order. A name that occurs more than
    once gets a suffix ``_1``, ``_2``, ... from its second occurrence on. When
    a ``learning_rate`` is present, ``effective_learning_rate`` is added: the
    learning rate times every ``plateau_scale`` in the state (the LR actually
    applied by the last update). Pure and jittable.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> opt = fnopt.sgd(0.1, momentum=0.9)
        >>> sorted(fnopt.hyperparams(opt.init({"w": jnp.zeros(3)})))
        ['dampening', 'effective_learning_rate', 'learning_rate', 'momentum']
    """
    out: dict[str, jax.Array] = {}
    scales: list[jax.Array] = []

    def visit(node: Any) -> None:
        if _has_record(node):
            for name, value in node.hyperparams.items():
                if name == "plateau_scale":
                    scales.append(value)
                key, k = name, 0
                while key in out:
                    k += 1
                    key = f"{name}_{k}"
                out[key] = value
        if isinstance(node, (tuple, list)):
            for child in node:
                visit(child)
        elif isinstance(node, dict):
            for child in node.values():
                visit(child)

    visit(opt_state)
    if "learning_rate" in out:
        effective = out["learning_rate"]
        for scale in scales:
            effective = effective * scale
        out["effective_learning_rate"] = effective
    return out


def map_records(opt_state: Any, kind: type, fn: Callable[[Any], Any]) -> tuple[Any, int]:
    """Replaces every state of type ``kind`` inside ``opt_state`` by ``fn(state)``.

    Returns the new state and how many were replaced. Walks tuples,
    NamedTuples, lists and dicts (the containers ``chain`` and the wrappers
    use), so it reaches states at any depth.
    """
    found = 0

    def walk(node: Any) -> Any:
        nonlocal found
        if isinstance(node, kind):
            found += 1
            return fn(node)
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(walk(child) for child in node))
        if isinstance(node, (tuple, list)):
            return type(node)(walk(child) for child in node)
        if isinstance(node, dict):
            return {key: walk(child) for key, child in node.items()}
        return node

    return walk(opt_state), found
