"""``fnopt.apply_gradients``: a whole optimizer step, params included (issue 15).

``tx.update`` returns one update array per leaf and ``optax.apply_updates``
adds it to the params, so XLA:CPU runs at least one loop per leaf for the
params whatever the optimizer does with its state. On a tree of thousands of
small leaves that loop's fixed cost, not memory, sets the step time.
:func:`apply_gradients` is the step as one call: the same result as
``update`` + ``apply_updates``, and for the aliases whose arithmetic the fused
CPU kernel knows (``adam``, ``adamw``, ``sgd`` with momentum; see
:mod:`fnopt._fused`), the params and the state buffers of every eligible leaf
are updated in place by the kernel, a call per dtype and 64 leaves.

How it stays exact: the alias registers a :class:`Route` (which chain stage
holds the buffers, and how the kernel's scalars follow from the states); the
step runs the alias's own ``update`` for everything else (counts, the
recorded hyperparameters, leaves the kernel does not take), and replaces the
params and buffers of the leaves it does take with the kernel's. XLA removes
the per-leaf loops whose results are replaced (dead code).
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _fused

_ROUTES: "weakref.WeakKeyDictionary[Callable, Route]" = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class Route:
    """How :func:`apply_gradients` runs an alias through a whole-step kernel.

    Attributes:
        kernel: ``"adam_step"`` or ``"momentum_step"`` (:func:`fnopt._fused.whole_step`).
        stage: index, in the alias's chain state, of the stage holding the buffers.
        buffers: that stage state's fields updated with the params, in the kernel's order.
        coefficients: ``(old_state, new_state, dtype) -> scalars``, the kernel's
            coefficient vector (from the states' counts and recorded hyperparameters).
        packed: the buffers are ``{dtype name: flat array}`` (:func:`fnopt.packed`).
    """

    kernel: str
    stage: int
    buffers: tuple[str, ...]
    coefficients: Callable[[Any, Any, Any], Sequence[Any]]
    packed: bool = False


def stage_indices(*stages: Any) -> list[int | None]:
    """The index of each stage in ``chain_stages(*stages)``'s state (``None``
    for a stage left out)."""
    out, n = [], 0
    for s in stages:
        out.append(None if s is None else n)
        n += s is not None
    return out


def recorded(state: Any, at: int | None, name: str) -> Any:
    """The value of ``name`` that stage ``at`` of a chain state recorded for
    its last update (0 for a stage left out)."""
    return 0.0 if at is None else state[at].hyperparams[name]


def present(*indices: int | None) -> tuple[float, ...]:
    """The kernel's flags: 1.0 for each stage in the chain, 0.0 for one left out."""
    return tuple(float(i is not None) for i in indices)


def register(tx: Any, route: Route | None) -> Any:
    """``tx``, with ``route`` recorded for :func:`apply_gradients` (keyed by
    ``tx.init``, which fnopt's wrappers keep)."""
    if route is not None:
        _ROUTES[tx.init] = route
    return tx


def _route_of(tx: Any) -> Route | None:
    try:
        return _ROUTES.get(tx.init)
    except TypeError:  # an init that cannot be weakly referenced: not an fnopt alias
        return None


def apply_gradients(tx: Any, grads: Any, opt_state: Any, params: Any, **extra_args: Any) -> tuple[Any, Any]:
    """One optimizer step: ``(new_params, new_opt_state)``.

    The same as::

        updates, opt_state = tx.update(grads, opt_state, params, **extra_args)
        params = optax.apply_updates(params, updates)

    for any Optax-compatible ``tx``, and the way to reach the fused CPU kernel's
    whole step (``FNOPT_FUSED=auto`` or ``1``, see BENCHMARKS.md): for
    ``fnopt.adam`` / ``fnopt.adamw`` (without ``amsgrad``, param groups or a
    weight-decay ``mask``, with ``eps`` a nonzero number) and ``fnopt.sgd``
    with momentum (without param groups or ``mask``), on the CPU backend with
    one device, the params and the moments of every float32 / float64 leaf
    whose state has its dtype are updated in place, a kernel call per dtype
    and 64 leaves, instead of an XLA loop per leaf and buffer. Everything else
    (other optimizers, ``tx`` wrapped in ``optax.chain`` or ``MultiSteps``,
    GPUs, other dtypes) takes the two lines above. ``fnopt.packed(tx)`` of
    those aliases takes the kernel too, its state one flat array per dtype
    (fewer arrays per step on a tree of many small leaves). Results equal them up to
    float reassociation (the kernel contracts ``a * b + c`` into fused
    multiply-adds as XLA:CPU does).

    Donate ``params`` and ``opt_state`` to the jitted step
    (``jax.jit(..., donate_argnums=...)``) so that "in place" needs no copies.

    Args:
        tx: an ``optax.GradientTransformation``.
        grads: gradients with the structure of ``params``.
        opt_state: ``tx``'s state.
        params: the params (required: the step updates them).
        **extra_args: forwarded to ``tx.update`` (e.g. ``value=loss``).

    Examples:
        >>> import jax, jax.numpy as jnp, fnopt
        >>> opt = fnopt.adam(0.1)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = opt.init(params)
        >>> grads = jax.grad(lambda p: p["w"] @ p["w"])(params)
        >>> params, state = fnopt.apply_gradients(opt, grads, state, params)
        >>> [round(x, 4) for x in params["w"].tolist()]
        [0.9, -1.9]
    """
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(f"fnopt.apply_gradients(tx=...) needs an optax.GradientTransformation, got {tx!r}")
    if params is None:
        raise ValueError("fnopt.apply_gradients(params=None): the step needs the params it updates")
    route = _route_of(tx)
    if route is None or not _fused.enabled(whole_step=True):
        updates, new_state = tx.update(grads, opt_state, params, **extra_args)
        return optax.apply_updates(params, updates), new_state
    with _fused.suspend():
        updates, new_state = tx.update(grads, opt_state, params, **extra_args)
    whole = _whole_step_packed if route.packed else _whole_step
    return whole(route, grads, opt_state, params, updates, new_state)


def _whole_step(route: Route, grads, opt_state, params, updates, new_state):
    new_params = optax.apply_updates(params, updates)
    g, treedef = jax.tree.flatten(grads)
    p = treedef.flatten_up_to(params)
    p_new = treedef.flatten_up_to(new_params)
    old_stage, new_stage = opt_state[route.stage], new_state[route.stage]
    bufs = [treedef.flatten_up_to(getattr(old_stage, f)) for f in route.buffers]
    bufs_new = [treedef.flatten_up_to(getattr(new_stage, f)) for f in route.buffers]
    groups: dict[np.dtype, list[int]] = {}
    for i, leaf in enumerate(g):
        if _fused._eligible(leaf, p[i], *(b[i] for b in bufs)):  # shapes: checked by tx.update
            groups.setdefault(np.dtype(jnp.result_type(leaf)), []).append(i)
    if not groups:
        return new_params, new_state
    for dtype, idx in groups.items():
        coef = jnp.stack([jnp.asarray(c).astype(dtype) for c in route.coefficients(opt_state, new_state, dtype)])
        for start in range(0, len(idx), _fused.CHUNK):
            chunk = idx[start:start + _fused.CHUNK]
            out = _fused.whole_step(route.kernel, coef, [jnp.asarray(g[i]) for i in chunk],
                                    [[jnp.asarray(p[i]) for i in chunk], *([b[i] for i in chunk] for b in bufs)])
            for j, i in enumerate(chunk):
                p_new[i] = out[0][j]
                for k, b in enumerate(bufs_new):
                    b[i] = out[1 + k][j]
    return treedef.unflatten(p_new), _with_buffers(route, new_state,
                                                   {f: treedef.unflatten(b) for f, b in zip(route.buffers, bufs_new)})


def _with_buffers(route: Route, state: tuple, buffers: dict[str, Any]) -> tuple:
    """The chain state ``state`` with the route's stage's buffer fields replaced."""
    stage = state[route.stage]._replace(**buffers)
    return tuple(stage if k == route.stage else s for k, s in enumerate(state))


def _whole_step_packed(route: Route, grads, opt_state, params, updates, new_state):
    """:func:`_whole_step` for :func:`fnopt.packed`: the stage's buffers are
    ``{dtype name: flat array}``, the leaves of a dtype back to back in leaf
    order; a dtype's leaves go through the kernel together or not at all (the
    flat arrays are replaced whole)."""
    from . import _packed

    new_params = optax.apply_updates(params, updates)
    g, treedef = jax.tree.flatten(grads)
    p = treedef.flatten_up_to(params)
    p_new = treedef.flatten_up_to(new_params)
    old_stage, new_stage = opt_state[route.stage], new_state[route.stage]
    fields = {f: dict(getattr(new_stage, f)) for f in route.buffers}  # dtypes the kernel skips keep XLA's
    for name, idx in _packed.groups(g).items():
        dtype = np.dtype(name)
        flats = [getattr(old_stage, f).get(name) for f in route.buffers]
        if dtype not in _fused._DTYPES or any(
                f is None or f.ndim != 1 or np.dtype(f.dtype) != dtype for f in flats) or any(
                np.dtype(jnp.result_type(p[i])) != dtype for i in idx):
            continue  # XLA's result stands for this dtype
        coef = jnp.stack([jnp.asarray(c).astype(dtype) for c in route.coefficients(opt_state, new_state, dtype)])
        offsets = np.cumsum([0] + [int(np.size(g[i])) for i in idx])  # where each leaf starts in the flat arrays
        for start in range(0, len(idx), _fused.CHUNK):
            chunk = [i for i in idx[start:start + _fused.CHUNK] if np.size(g[i]) > 0]  # empty: no place, no work
            if chunk:
                out, flats = _fused.whole_step_packed(route.kernel, coef, [jnp.asarray(g[i]) for i in chunk],
                                                      [jnp.asarray(p[i]) for i in chunk], flats, int(offsets[start]))
                for j, i in enumerate(chunk):
                    p_new[i] = out[j]
        for f, flat in zip(route.buffers, flats):
            fields[f][name] = flat
    return treedef.unflatten(p_new), _with_buffers(route, new_state, fields)
