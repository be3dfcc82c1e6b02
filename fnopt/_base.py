"""What every fnopt transform shares: hyperparameters that may be numbers,
traced arrays, schedules or *group trees* of those; a saturating step counter;
and the record of the hyperparameter values used by the last update.

Convention: a transform's state is a ``NamedTuple`` with an ``int32`` field
``count`` (updates applied so far, saturating at ``2**31 - 1``) and a field
``hyperparams``: a dict from hyperparameter name to the scalar value used by
the most recent update (at ``init``: the value at step 0). A hyperparameter
given as a group tree records one value per group, named ``"<group>/<name>"``.

Group trees
-----------
A group tree is a pytree (dicts, lists, tuples) that is a *prefix* of the
params' structure, whose leaves are numbers, traced scalars or schedules.
Each parameter takes the value of the leaf above it::

    fnopt.adamw(learning_rate={"backbone": 1e-4, "head": schedule},
                weight_decay={"backbone": 0.05, "head": 0.0})

Nodes are matched by their keys (dict keys, sequence indices, attribute
names), not by their container type, so a plain dict matches a Flax
``FrozenDict`` or an NNX ``State`` with the same keys. A group is named by
the key path of its leaf joined with ``"."`` (``"encoder.0"``).

:class:`Hypers` is the one mechanism every family uses: it validates the
values at construction, checks the tree against the params at ``init`` and
``update``, resolves each group's values at the step, and maps a leaf
function over the params with each leaf's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._checks import ArgumentTypeError, as_float, check_range, is_traced

Hyper = Any  # float | jax.Array | Callable[[step], value] | group tree of those

_INT32_MAX = jnp.iinfo(jnp.int32).max


def is_group_tree(value: Any) -> bool:
    """A dict, list or tuple (any ``Mapping``) given for a hyperparameter."""
    return isinstance(value, (Mapping, list, tuple))


def _check_scalar_value(call: str, name: str, value: Any) -> None:
    """A single hyperparameter value must be a schedule or a scalar number
    (concrete or traced), not a bool, string or array of several values."""
    if callable(value):
        return
    if value is None or isinstance(value, (bool, np.bool_, str, bytes)):
        raise ArgumentTypeError(f"`{call}({name}=...)` must be a number, traced scalar or schedule, got {value!r}")
    traced = is_traced(value)
    if not traced and not isinstance(value, (int, float, complex, np.ndarray, np.generic, jax.Array)):
        return  # left to the range check, which names what is wrong
    shape = jnp.shape(value) if traced else np.shape(value)
    if shape != ():
        raise ArgumentTypeError(
            f"`{call}({name}=...)` must be a scalar (or a group tree of scalars), got an array of shape {shape}"
        )
    if traced and jnp.result_type(value) == jnp.bool_:
        raise ArgumentTypeError(f"`{call}({name}=...)` must be a number, got a boolean array")


def check_hyper(
    call: str,
    name: str,
    value: Hyper,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    groups: bool = False,
) -> None:
    """Validates a hyperparameter: a schedule, a scalar (range-checked when
    concrete) or, with ``groups``, a group tree of those.

    A schedule's values cannot be checked at construction (it may depend on
    traced arguments); the schedule factories validate their own arguments.
    Traced values are not range-checked.
    """
    if is_group_tree(value):
        if not groups:
            raise ArgumentTypeError(
                f"`{call}({name}=...)` must be a number, traced scalar or schedule; a group tree is "
                f"not supported here (the value acts on the whole update), got {value!r}"
            )
        entries = _group_leaves(call, name, value)
        for path, leaf in entries:
            check_hyper(call, f"{name}{_keystr(path)}", leaf, low, high, low_open=low_open, high_open=high_open)
        return
    _check_scalar_value(call, name, value)
    if callable(value) or is_traced(value):
        return
    check_range(call, name, value, low, high, low_open=low_open, high_open=high_open)


def resolve(value: Hyper, count: jax.Array) -> jax.Array:
    """The value of a (non-group) hyperparameter at step ``count``, as a float array."""
    return as_float(value(count) if callable(value) else value)


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def next_count(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the int32 maximum instead of wrapping."""
    return jnp.where(count < _INT32_MAX, count + 1, count).astype(jnp.int32)


def distinct(tree: Any) -> Any:
    """``tree`` with every array that occurs more than once replaced by a
    copy from its second occurrence on. An ``init`` returns it so that every
    state leaf is its own buffer: a jitted step may then donate the state
    (XLA refuses to donate one buffer twice)."""
    seen: set[int] = set()

    def leaf(x):
        if isinstance(x, jax.Array) and not is_traced(x):
            if id(x) in seen:
                return jnp.copy(x)
            seen.add(id(x))
        return x

    return jax.tree.map(leaf, tree)


def cast_like(value: jax.Array, like: jax.Array) -> jax.Array:
    """A scalar hyperparameter in the dtype of the array it multiplies
    (explicit, so strict dtype promotion holds and bf16 stays bf16)."""
    return jnp.asarray(value, dtype=jnp.result_type(like))


# ------------------------------------------------------------- group trees


def _key(entry: Any) -> Any:
    """The plain key of a key-path entry (dict key, index, attribute name)."""
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return entry


def _keystr(path: tuple) -> str:
    return "".join(f"[{k!r}]" for k in path)


def group_name(path: tuple) -> str:
    return ".".join(str(k) for k in path)


def _is_hyper_leaf(x: Any) -> bool:
    return not is_group_tree(x)


def _children(node: Any) -> list[tuple[Any, Any]] | None:
    """One level of a pytree node: ``[(key, child), ...]``; ``None`` for a leaf."""
    if node is None:
        return []
    flat, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if len(flat) == 1 and flat[0][0] == ():
        return None
    return [(_key(path[0]), child) for path, child in flat]


def _group_leaves(call: str, name: str, tree: Any) -> list[tuple[tuple, Any]]:
    """The ``(path, value)`` leaves of a group tree, in flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_hyper_leaf)
    out = []
    for path, leaf in flat:
        keys = tuple(_key(k) for k in path)
        if leaf is None:
            raise ArgumentTypeError(
                f"`{call}({name}{_keystr(keys)}=...)` must be a number, traced scalar or schedule, got None"
            )
        out.append((keys, leaf))
    return out


def _assign(call: str, name: str, node: Any, params: Any, path: tuple, index: dict, out: list) -> None:
    """Appends, for each leaf of ``params``, the index of the group-tree leaf above it."""
    if _is_hyper_leaf(node):
        out.extend([index[path]] * len(jax.tree.leaves(params)))
        return
    mine = _children(node)
    theirs = _children(params)
    where = _keystr(path) or "the root"
    if theirs is None:
        raise ValueError(
            f"`{call}({name}=...)` is not a prefix of the params' structure: at {where} the group tree "
            f"has keys {[k for k, _ in mine]} but the params have a single array"
        )
    mine_keys = {k: v for k, v in mine}
    their_keys = [k for k, _ in theirs]
    if set(mine_keys) != set(their_keys) or len(mine_keys) != len(their_keys):
        missing = [k for k in their_keys if k not in mine_keys]
        extra = [k for k in mine_keys if k not in their_keys]
        detail = "; ".join(
            part
            for part in (
                f"the params' keys {missing} are missing from the group tree" if missing else "",
                f"the group tree's keys {extra} are not in the params" if extra else "",
            )
            if part
        )
        raise ValueError(f"`{call}({name}=...)` is not a prefix of the params' structure: at {where}, {detail}")
    for key, child in theirs:
        _assign(call, name, mine_keys[key], child, path + (key,), index, out)


class Hypers:
    """The numeric hyperparameters of one transform, each a number, a traced
    scalar, a schedule, or a group tree of those.

    Built at construction (validates concrete values against ``rules``),
    then used by ``init`` (:meth:`record`) and ``update`` (:meth:`at`).
    """

    def __init__(self, call: str, rules: Mapping[str, Mapping[str, Any]], **values: Hyper):
        self.call = call
        self.values = values
        self._paths: dict[str, list[tuple]] = {}
        self._leaves: dict[str, list[Any]] = {}
        for name, value in values.items():
            rule = dict(rules.get(name, {}))
            check_hyper(call, name, value, groups=rule.pop("groups", True), **rule)
            if is_group_tree(value):
                entries = _group_leaves(call, name, value)
                self._paths[name] = [p for p, _ in entries]
                self._leaves[name] = [v for _, v in entries]
            else:
                self._paths[name] = [None]
                self._leaves[name] = [value]
        self._layouts: dict[Any, dict[str, list[int]]] = {}

    @property
    def grouped(self) -> bool:
        return any(is_group_tree(v) for v in self.values.values())

    def layout(self, tree: Any) -> dict[str, list[int]]:
        """For each grouped hyperparameter, the group index of every leaf of
        ``tree`` (cached per tree structure). Raises ``ValueError`` naming the
        first mismatching path when a group tree is not a prefix of ``tree``."""
        treedef = jax.tree.structure(tree)
        if treedef not in self._layouts:
            layout = {}
            for name, value in self.values.items():
                if is_group_tree(value):
                    index = {p: i for i, p in enumerate(self._paths[name])}
                    out: list[int] = []
                    _assign(self.call, name, value, tree, (), index, out)
                    layout[name] = out
            self._layouts[treedef] = layout
        return self._layouts[treedef]

    def record(self, count: jax.Array, params: Any = None) -> dict[str, jax.Array]:
        """The values at ``count`` as a flat record (``init``); checks the
        group trees against ``params`` when given."""
        if params is not None:
            self.layout(params)
        return self.at(count).record

    def at(self, count: jax.Array, tree: Any = None) -> "Resolved":
        """Every group's values at step ``count``; ``tree`` (the updates)
        fixes which group each leaf belongs to."""
        values = {name: [resolve(v, count) for v in leaves] for name, leaves in self._leaves.items()}
        layout = self.layout(tree) if tree is not None else None
        return Resolved(self, values, layout)


class Resolved:
    """The hyperparameter values of one update: the record for the state,
    and per-leaf values for the leaf function."""

    def __init__(self, hypers: Hypers, values: dict[str, list[jax.Array]], layout: dict[str, list[int]] | None):
        self._hypers = hypers
        self._values = values
        self._layout = layout
        self._combos: dict[tuple, dict[str, jax.Array]] = {}

    @property
    def record(self) -> dict[str, jax.Array]:
        out = {}
        for name, values in self._values.items():
            for path, value in zip(self._hypers._paths[name], values):
                out[name if path is None else f"{group_name(path)}/{name}"] = value
        return out

    @property
    def single(self) -> dict[str, jax.Array]:
        """The values when no hyperparameter is grouped (scalar transforms)."""
        return {name: values[0] for name, values in self._values.items()}

    def per_leaf(self, n: int) -> list[dict[str, jax.Array]]:
        """The values for each of ``n`` leaves: one dict per distinct group
        combination, shared by the leaves of that combination (so
        :func:`per_group` computes each group's coefficients once)."""
        out = []
        for i in range(n):
            combo = tuple(
                self._layout[name][i] if name in (self._layout or {}) else 0 for name in self._values
            )
            if combo not in self._combos:
                self._combos[combo] = {name: self._values[name][j] for name, j in zip(self._values, combo)}
            out.append(self._combos[combo])
        return out

    def map(
        self, fn: Callable[..., Any], n_out: int | None, tree: Any, *rest: Any, params: Any = None,
        fused: Callable[..., list] | None = None,
    ) -> Any:
        """``fn(values, leaf, *rest_leaves)`` for every leaf of ``tree``, with
        the leaf's hyperparameter values. With ``n_out``, ``fn`` returns that
        many arrays and the result is ``n_out`` trees shaped like ``tree``.
        Empty trees and ``None`` leaves are fine; ``rest`` (and ``params``,
        when given, only checked) must have the structure and shapes of
        ``tree``. ``fused(fn, values, leaves, others)``, when given, computes
        the per-leaf results instead (several leaves per kernel, see
        :mod:`fnopt._fused`)."""
        call = self._hypers.call
        check_shapes(call, tree, *rest, *(() if params is None else (params,)))
        leaves, treedef = jax.tree.flatten(tree)
        others = [flatten_like(call, treedef, r) for r in rest]
        values = self.per_leaf(len(leaves))
        if fused is not None:
            results = fused(fn, values, leaves, others)
        else:
            results = [fn(v, leaf, *(o[i] for o in others)) for i, (v, leaf) in enumerate(zip(values, leaves))]
        if n_out is None:
            return treedef.unflatten(results)
        return tuple(treedef.unflatten([r[k] for r in results]) for k in range(n_out))


def flatten_like(call: str, treedef: Any, tree: Any) -> list[Any]:
    """The leaves of ``tree``, which must have the structure ``treedef``."""
    try:
        return treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as err:
        raise ValueError(f"`{call}.update`: the updates differ in pytree structure from the params (and the state made by `init`): {err}") from None


def check_shapes(call: str, updates: Any, *trees: Any) -> None:
    """The updates must have the structure and shapes of the state's buffers
    and params: a mismatch that would broadcast is an error, not a silently
    reshaped state."""
    paths, structure = jax.tree_util.tree_flatten_with_path(updates)
    for tree in trees:
        leaves = flatten_like(call, structure, tree)
        for (path, u), b in zip(paths, leaves):
            if b is not None and jnp.shape(u) != jnp.shape(b):
                raise ValueError(
                    f"`{call}.update`: the updates at {jax.tree_util.keystr(path) or 'the root'} have shape "
                    f"{jnp.shape(u)}, but the params (and the state made by `init`) have {jnp.shape(b)}; "
                    "updates must have the structure and shapes of the params"
                )


def per_group(fn: Callable[[dict[str, jax.Array], Any], Any]) -> Callable[[dict[str, jax.Array], Any], Any]:
    """``fn(values, dtype)`` memoized by group and dtype: the scalar
    coefficients of an update (``1 - b1``, ``-learning_rate``, bias
    corrections) are cast and combined once per group and arithmetic dtype
    instead of once per leaf, which keeps the traced program proportional to
    the number of leaves only through the elementwise work itself."""
    cache: dict[tuple, Any] = {}

    def get(values: dict[str, jax.Array], dtype: Any) -> Any:
        key = (id(values), jnp.dtype(dtype))
        if key not in cache:
            cache[key] = (values, fn(values, jnp.dtype(dtype)))  # keep `values` alive: ids stay unique
        return cache[key][1]

    return get


def leaf_groups(tree: Any, *hypers: "Hypers", names: tuple[str, ...] | None = None) -> tuple[list[int], int]:
    """For each leaf of ``tree``, the index of its group, and the number of
    groups: the distinct combinations of the groups of the grouped
    hyperparameters of ``hypers`` (only those in ``names``, when given),
    numbered in order of first occurrence. The leaves of a group share
    every value of those hyperparameters, so a per-step scalar that depends
    on nothing else (NAdam's momentum product, schedule-free's averaging
    weights) is kept once per group instead of once per leaf."""
    layouts = [
        layout for hp in hypers for name, layout in hp.layout(tree).items() if names is None or name in names
    ]
    index: dict[tuple, int] = {}
    n = len(jax.tree.leaves(tree))
    return [index.setdefault(tuple(layout[i] for layout in layouts), len(index)) for i in range(n)], len(index)


def first_of_groups(groups: list[int], n_groups: int, per_leaf: list[Any]) -> list[Any]:
    """The entry of ``per_leaf`` of the first leaf of each group."""
    first: dict[int, Any] = {}
    for k, v in zip(groups, per_leaf):
        first.setdefault(k, v)
    return [first[k] for k in range(n_groups)]


def is_masked_node(x: Any) -> bool:
    """A leaf another group owns (``optax.masked`` / ``partition`` put an
    ``optax.MaskedNode`` where a group's params are not)."""
    return isinstance(x, optax.MaskedNode)


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
            return type(node)((key, walk(child)) for key, child in node.items())
        return node

    return walk(opt_state), found
