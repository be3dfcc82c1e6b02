"""``fnopt.flat_params``: the params themselves as one flat array per dtype (issue 15).

:func:`fnopt.packed` packs an optimizer's state, but the params and the
gradients stay the user's tree, so a jitted step on a model of thousands of
small leaves still passes thousands of arrays in and out (JAX's cost per
array, a few microseconds each, is then most of the step). Here the model owns
the layout instead: the training state holds ``{dtype name: 1-D array}``, the
loss cuts it into the tree (``view(flat)``), and ``jax.grad`` of that loss is
already flat. Any optimizer then steps a few big arrays.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _leaf_info(leaf: Any, i: int, call: str) -> tuple[tuple[int, ...], str]:
    is_array = hasattr(leaf, "shape") and hasattr(leaf, "dtype")
    if not (is_array or isinstance(leaf, (bool, int, float, complex, np.number))):
        raise TypeError(f"{call}: leaf {i} is {type(leaf).__name__} {leaf!r}, not an array")
    return tuple(np.shape(leaf)), np.dtype(jnp.result_type(leaf)).name


class FlatView:
    """The layout :func:`flat_params` chose: ``view(flat)`` cuts a flat dict
    into the params' tree, ``view.pack(tree)`` does the reverse.

    Views of the same layout compare equal and hash alike, so a view can be a
    static argument of ``jax.jit``.
    """

    def __init__(self, treedef: Any, shapes: tuple, keys: tuple, labelled: bool):
        self._treedef, self._shapes, self._keys, self._labelled = treedef, shapes, keys, labelled
        self._index: dict[tuple, list[int]] = {}  # (label, dtype name) -> leaf indices, in leaf order
        for i, key in enumerate(keys):
            self._index.setdefault(key, []).append(i)
        self._sizes = {key: [int(np.prod(shapes[i], dtype=np.int64)) for i in idx] for key, idx in self._index.items()}

    def _layout(self) -> tuple:
        return (self._treedef, self._shapes, self._keys, self._labelled)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlatView) and self._layout() == other._layout()

    def __hash__(self) -> int:
        return hash(self._layout())

    def __repr__(self) -> str:
        sizes = {self._name(key): sum(s) for key, s in self._sizes.items()}
        return f"FlatView({len(self._shapes)} leaves, sizes={sizes})"

    @staticmethod
    def _name(key: tuple) -> str:
        return "/".join(k for k in key if k is not None)

    def _expected(self) -> Any:
        out: dict = {}
        for (label, dtype) in self._index:
            (out.setdefault(label, {}) if self._labelled else out)[dtype] = None
        return jax.tree.structure(out, is_leaf=lambda x: x is None)

    def __call__(self, flat: Any) -> Any:
        """The params' tree, its leaves cut (``lax.split``) from ``flat``.

        Differentiable: the gradient of a loss of ``view(flat)`` with respect
        to ``flat`` is flat, one array per dtype (the split's transpose is a
        concatenation). Traceable under ``jit``, ``grad`` and ``vmap``.
        """
        got = jax.tree.structure(flat)
        if got != self._expected():
            raise ValueError(f"fnopt.flat_params view(flat=...): the flat dict's structure {got} is not "
                             f"the layout's {self._expected()}")
        leaves: list[Any] = [None] * len(self._shapes)
        for key, idx in self._index.items():
            buf = flat[key[0]][key[1]] if self._labelled else flat[key[1]]
            sizes = self._sizes[key]
            if np.ndim(buf) != 1 or np.shape(buf)[0] != sum(sizes) or np.dtype(buf.dtype).name != key[1]:
                raise ValueError(f"fnopt.flat_params view(flat=...): {self._name(key)!r} must be a 1-D "
                                 f"{key[1]} array of {sum(sizes)} elements, got {buf.dtype} {np.shape(buf)}")
            parts = jax.lax.split(buf, sizes) if len(sizes) > 1 else [buf]
            for i, part in zip(idx, parts):
                leaves[i] = part.reshape(self._shapes[i])
        return self._treedef.unflatten(leaves)

    def pack(self, tree: Any) -> Any:
        """A tree with the params' structure, shapes and dtypes (gradients, a
        checkpoint of tree params) in this layout: the inverse of the view."""
        try:
            leaves = self._treedef.flatten_up_to(tree)
        except (TypeError, ValueError) as err:
            raise ValueError(f"fnopt.flat_params view.pack(tree=...): the tree's structure is not the "
                             f"params' ({err})") from None
        out: dict = {}
        for (label, dtype), idx in self._index.items():
            for i in idx:
                shape, name = _leaf_info(leaves[i], i, "fnopt.flat_params view.pack(tree=...)")
                if shape != self._shapes[i] or name != dtype:
                    raise ValueError(f"fnopt.flat_params view.pack(tree=...): leaf {i} is {name} {shape}, "
                                     f"the layout's is {dtype} {self._shapes[i]}")
            buf = jnp.concatenate([jnp.ravel(jnp.asarray(leaves[i])) for i in idx])
            (out.setdefault(label, {}) if self._labelled else out)[dtype] = buf
        return out


def flat_params(params: Any, labels: Any = None) -> tuple[Any, FlatView]:
    """The params as one flat array per dtype, and the view that cuts them back.

    ``flat, view = fnopt.flat_params(params)`` concatenates the leaves of each
    dtype, raveled, in the tree's leaf order: ``flat`` is
    ``{dtype name: 1-D array}`` and ``view(flat)`` returns ``params``' tree.
    Train ``flat`` instead of ``params``, with the loss calling the view::

        grads = jax.grad(lambda f: loss(view(f), batch))(flat)
        flat, state = fnopt.apply_gradients(opt, grads, state, flat)

    The gradient comes out flat, so any optimizer's step runs on a few big
    arrays: on a model of thousands of small leaves a jitted step passes a
    handful of arrays in and out instead of thousands (params and every state
    buffer), and :func:`fnopt.apply_gradients` reaches its fused kernel with
    one call per dtype. The model pays for the layout: the forward pass cuts
    the leaves out (XLA:CPU copies each before a matrix product), the
    backward pass writes the gradient into one buffer (a concatenation), and
    XLA:CPU compiles a kernel per cut leaf. BENCHMARKS.md measures both
    sides: on 300 leaves the whole training step took about half of Optax's
    time, on 3,000 it tied with :func:`fnopt.packed` and compiled 3x slower,
    so prefer it up to about a thousand leaves.

    The arithmetic of an elementwise optimizer (Adam, SGD, Lion, ...) is
    unchanged. A statistic over a whole leaf (Adafactor's factored moments,
    LAMB / LARS trust ratios, Muon, per-leaf clipping) and masks or param
    groups given as trees see a buffer instead of the leaves: give ``labels``
    so that each group is a buffer of its own, and a mask or an
    ``optax.partition`` by label applies to the outer keys. ``flat`` is a
    plain dict of arrays (checkpoints, ``vmap``, a flax ``TrainState``'s
    ``params``). It can be split over a mesh axis for data parallelism (the
    state follows its sharding), but the leaves' own shardings (model
    parallelism) do not carry over, and on an ``Explicit`` mesh axis the
    view's leaves carry the buffer's sharding into the model: reshard them
    there, or use an ``Auto`` axis.

    Like ``jax.flatten_util.ravel_pytree``, but one buffer per dtype (float32
    and bfloat16 leaves keep their dtypes), optional groups, and a view whose
    backward pass is a concatenation.

    Args:
        params: a pytree of arrays (``None`` leaves hold no place; an empty tree
            gives ``{}``).
        labels: ``None``, or a tree with ``params``' structure of ``str``
            labels, or a function of ``params`` returning one (as in
            ``optax.partition``). With labels, ``flat`` is
            ``{label: {dtype name: 1-D array}}``.

    Returns:
        ``(flat, view)``: the flat dict, and the :class:`FlatView` that cuts a
        flat dict of this layout into ``params``' tree (``view.pack`` packs a
        tree of this layout).

    Examples:
        >>> import jax, jax.numpy as jnp, fnopt
        >>> params = {"b": jnp.zeros(2), "w": jnp.ones((2, 2))}
        >>> flat, view = fnopt.flat_params(params)
        >>> flat["float32"].shape
        (6,)
        >>> opt = fnopt.sgd(0.1)
        >>> state = opt.init(flat)
        >>> loss = lambda p: jnp.sum(p["w"] @ jnp.ones(2)) + jnp.sum(p["b"])
        >>> grads = jax.grad(lambda f: loss(view(f)))(flat)
        >>> flat, state = fnopt.apply_gradients(opt, grads, state, flat)
        >>> [round(x, 4) for x in view(flat)["w"].ravel().tolist()]
        [0.9, 0.9, 0.9, 0.9]
    """
    leaves, treedef = jax.tree.flatten(params)
    info = [_leaf_info(leaf, i, "fnopt.flat_params(params=...)") for i, leaf in enumerate(leaves)]
    if labels is None:
        label_leaves: list[Any] = [None] * len(leaves)
    else:
        tree = labels(params) if callable(labels) else labels
        try:
            label_leaves = treedef.flatten_up_to(tree)
        except (TypeError, ValueError) as err:
            raise ValueError(f"fnopt.flat_params(labels=...): the labels' structure is not the params' "
                             f"({err})") from None
        for i, label in enumerate(label_leaves):
            if not isinstance(label, str):
                raise TypeError(f"fnopt.flat_params(labels=...): label {i} is {label!r}, not a str")
    keys = tuple((label, name) for label, (_, name) in zip(label_leaves, info))
    view = FlatView(treedef, tuple(shape for shape, _ in info), keys, labels is not None)
    return view.pack(params), view

