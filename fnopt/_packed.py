"""``fnopt.packed``: an optimizer whose state is one flat array per dtype (issue 15).

On a tree of thousands of small leaves, the cost of a step is mostly per
array, not per byte: JAX hands every donated buffer in and out of a jitted
call (about 4 us each on the 2-core CI machine: 47 ms per call for Adam on
3,000 leaves before any arithmetic), and XLA:CPU runs a loop per array.
:func:`packed` keeps the moments of every leaf of a dtype back to back in one
array, so Adam's state is two arrays per dtype instead of two per leaf.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _step


def groups(leaves: list) -> dict[str, list[int]]:
    """Leaf indices by dtype name (``"float32"``, ...), in leaf order: the
    layout of :func:`pack`."""
    out: dict[str, list[int]] = {}
    for i, leaf in enumerate(leaves):
        out.setdefault(np.dtype(jnp.result_type(leaf)).name, []).append(i)
    return out


def pack(tree: Any) -> dict[str, jax.Array]:
    """``{dtype name: the leaves of that dtype, raveled and concatenated in
    leaf order}`` (``None`` leaves hold no place; an empty tree packs to ``{}``)."""
    leaves = jax.tree.leaves(tree)
    return {name: jnp.concatenate([jnp.ravel(jnp.asarray(leaves[i])) for i in idx])
            for name, idx in groups(leaves).items()}


def unpack(flat: dict[str, jax.Array], like: Any) -> Any:
    """The inverse of :func:`pack`: a tree with ``like``'s structure and leaf
    shapes, its leaves cut from ``flat``."""
    leaves, treedef = jax.tree.flatten(like)
    out: list[Any] = [None] * len(leaves)
    for name, idx in groups(leaves).items():
        at = 0
        for i in idx:
            size = int(np.size(leaves[i]))
            out[i] = jax.lax.slice(flat[name], (at,), (at + size,)).reshape(np.shape(leaves[i]))
            at += size
    return treedef.unflatten(out)


def _check_dtypes(grads: Any, params: Any) -> None:
    g, treedef = jax.tree.flatten(grads)
    try:
        p = treedef.flatten_up_to(params)
    except (TypeError, ValueError) as err:
        raise ValueError(f"fnopt.packed: the gradients and the params have different structures ({err})") from None
    for i, (a, b) in enumerate(zip(g, p)):
        da, db = np.dtype(jnp.result_type(a)), np.dtype(jnp.result_type(b))
        if da != db:
            raise ValueError(f"fnopt.packed: gradient leaf {i} is {da.name} but its param is {db.name}; the packed "
                             "state keeps one array per dtype, so each gradient needs its param's dtype")


def packed(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` run on the params packed into one flat array per dtype.

    ``init`` and ``update`` see ``{dtype name: 1-D array}`` (every leaf of a
    dtype raveled and concatenated in the tree's leaf order) instead of the
    tree, so ``tx``'s state holds one array per dtype and state buffer: on a
    model of thousands of small leaves this halves the arrays a jitted step
    passes in and out (Adam: params + 2 per dtype instead of params + 2 per
    leaf), and :func:`fnopt.apply_gradients` updates the packed moments and
    the params in one fused kernel call per dtype and 64 leaves (``adam``,
    ``adamw``, ``sgd`` with momentum, as for the unpacked aliases). The
    updates ``update`` returns have the tree's structure again.

    The results equal ``tx``'s on the tree for every elementwise optimizer
    (Adam, SGD, Lion, ... : the arithmetic is the same per element). What
    changes with the layout: a statistic over a whole leaf (Adafactor's
    factored moments, LAMB / LARS trust ratios, Muon's orthogonalization,
    per-leaf clipping) sees a dtype's whole packed vector instead, and
    param groups or masks given as trees no longer match the state (``tx``
    rejects them at ``init``). Global-norm clipping is unchanged. The state is
    a plain pytree of arrays (checkpoints, ``vmap``); it is not sharded like
    the params, so use it on one device.

    Like ``optax.flatten``, but per dtype: float32 and bfloat16 leaves keep
    their dtypes. Each gradient leaf must have its param's dtype. To make the
    params and gradients flat as well (a handful of arrays per step instead of
    the tree's), see :func:`fnopt.flat_params`.

    Args:
        tx: an ``optax.GradientTransformation``.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> opt = fnopt.packed(fnopt.adam(0.1))
        >>> params = {"b": jnp.zeros(2), "w": jnp.ones((2, 2))}
        >>> state = opt.init(params)
        >>> state[0].mu["float32"].shape
        (6,)
        >>> grads = {"b": jnp.ones(2), "w": jnp.ones((2, 2))}
        >>> params, state = fnopt.apply_gradients(opt, grads, state, params)
        >>> [round(x, 4) for x in params["w"].ravel().tolist()]
        [0.9, 0.9, 0.9, 0.9]
    """
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(f"fnopt.packed(tx=...) needs an optax.GradientTransformation, got {tx!r}")
    route = _step._route_of(tx)
    tx = optax.with_extra_args_support(tx)  # forwards value=... only to a tx that takes it

    def init_fn(params):
        return tx.init(pack(params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:
            _check_dtypes(updates, params)
        flat_params = None if params is None else pack(params)
        flat_updates, state = tx.update(pack(updates), state, flat_params, **extra_args)
        return unpack(flat_updates, updates), state

    out = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    if route is not None:
        _step.register(out, _step.Route(route.kernel, route.stage, route.buffers, route.coefficients, packed=True))
    return out
