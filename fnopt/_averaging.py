"""Weight averaging: an exponential moving average (EMA) or the SWA running
mean of the params, kept in the optimizer state (torch
``swa_utils.AveragedModel``, timm ``ModelEmaV3``); the average read back by
:func:`averaged_params`; and the SWA learning-rate schedule (torch ``SWALR``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._base import Hyper, check_hyper, check_shapes, is_masked_node, next_count, resolve, zero_count
from ._chain import mark_observer
from ._checks import as_float, check_choice, check_flag, check_nonnegative, concrete, is_traced
from ._common import compute_dtype, storage_dtype
from ._decay import ArrayLike, Schedule, as_step, cos_anneal, linear_anneal, phase_position
from ._plateau import as_count, check_count
from ._report import records, unwrap_variables

KINDS = ("ema", "swa")


class AverageParamsState(NamedTuple):
    """State of :func:`average_params`.

    Fields:
        count: int32, updates seen so far (saturating).
        n_averaged: int32, snapshots of the params averaged so far (torch's
            ``AveragedModel.n_averaged``); 0 until the first one.
        average: the average, a tree laid out like the params (same
            structure, shapes and sharding), in ``dtype`` (default: each
            param's dtype). Until the first snapshot it holds a copy of the
            params given to ``init`` (torch's ``deepcopy`` of the model).
        hyperparams: ``{"decay": d}``, the EMA decay used by the last
            update (after warmup; default float dtype); ``{}`` for SWA.
    """

    count: jax.Array
    n_averaged: jax.Array
    average: optax.Params
    hyperparams: dict[str, jax.Array]


def _lerp(a: jax.Array, b: jax.Array, w: jax.Array) -> jax.Array:
    """torch's ``lerp(a, b, w)``: ``a + w (b - a)`` for ``|w| < 0.5``, else
    ``b - (b - a)(1 - w)``."""
    d = b - a
    return jnp.where(jnp.abs(w) < 0.5, a + w * d, b - d * (1 - w))


def _complement(decay: Hyper, count: jax.Array) -> jax.Array:
    """``1 - decay`` at ``count``. A concrete decay is subtracted in float64
    on the host, as torch does in Python (``1 - 0.999`` rounded once to
    float32, not ``1 - float32(0.999)``, which differs by 1e-5 relative)."""
    if callable(decay) or is_traced(decay):
        return 1.0 - resolve(decay, count)
    return as_float(1.0 - np.float64(decay))


def average_params(
    kind: str = "ema",
    *,
    decay: Hyper = 0.999,
    start: Hyper = 0,
    every: Hyper = 1,
    warmup: bool = False,
    warmup_gamma: Hyper = 1.0,
    warmup_power: Hyper = 2.0 / 3.0,
    min_decay: Hyper = 0.0,
    dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Keeps an average of the params in the optimizer state; leaves the
    updates unchanged.

    What is averaged: the params *after* this update, ``params + updates``
    (as ``optax.apply_updates`` forms them). So put it **last** in the
    chain, after the learning rate (and after
    :func:`~fnopt.transforms.early_stopping`, which ``fnopt.chain``
    allows for this transform): ``fnopt.chain(fnopt.sgd(0.1),
    average_params("swa"))`` is torch's ``opt.step();
    swa_model.update_parameters(model)``. ``update`` needs ``params``.

    A snapshot is taken on the update with count ``c`` (updates already
    applied) when ``c >= start`` and ``(c - start) % every == 0``. With
    ``n`` snapshots averaged so far and ``p`` the new params, the first
    snapshot (``n = 0``) copies ``p``, later ones

    * ``kind="ema"``: ``avg = decay * avg + (1 - decay) * p``, torch
      ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))``
      (the same ``lerp(avg, p, 1 - decay)``; in a jitted step, where XLA
      fuses the multiply-add as torch's CPU kernel does, bit for bit in
      float32 for a constant ``decay``);
    * ``kind="swa"``: ``avg = avg + (p - avg) / (n + 1)``, the mean of the
      snapshots, torch ``AveragedModel(model)`` on CPU (its ``get_swa_avg_fn``;
      on GPU torch uses ``lerp`` with weight ``1 / (n + 1)``, which differs
      by rounding). SWA: Izmailov et al. 2018.

    With ``warmup=True`` (EMA only) the decay of snapshot ``n`` (counted
    from 0) is timm ``ModelEmaV3``'s
    ``clip(1 - (1 + n / warmup_gamma) ** -warmup_power, min_decay, decay)``
    (``decay`` may itself be a schedule of the update count), so early
    snapshots, from still-random weights, are forgotten fast; timm counts
    optimizer steps, this counts snapshots (the same when ``every=1``).

    Read the average with :func:`fnopt.averaged_params`. Memory: one params'
    worth, in ``dtype`` (the arithmetic is at least float32: a float32
    average of bf16 params is exact to float32). A step that is not a
    snapshot leaves the average as it is. Under ``optax.partition`` it
    averages its group only. After early stopping the (frozen) params keep
    being averaged.

    Args:
        kind: ``"ema"`` or ``"swa"`` (static).
        decay: EMA decay in [0, 1]; a float, traced scalar or schedule of the
            update count. Unused by SWA.
        start: count of the first update that is averaged, an integer >= 0.
        every: average every ``every`` updates from ``start`` on, an integer
            >= 1 (e.g. the steps per epoch, for SWA's per-epoch snapshots).
        warmup: timm's EMA warmup of the decay (static bool).
        warmup_gamma: timm's ``warmup_gamma``, > 0.
        warmup_power: timm's ``warmup_power``, > 0.
        min_decay: timm's ``min_decay``, in [0, 1]: the warmup's floor.
        dtype: the average's dtype (a floating dtype), default each param's.

    ``start`` and ``every`` may be traced or schedules too (as
    ``early_stopping``'s ``patience``); every numeric argument acts on the
    whole tree (no group trees: average a group with ``optax.partition``).
    Concrete invalid values raise ``ValueError``; traced ones are not checked.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state
        :class:`AverageParamsState`.

    Examples:
        >>> import jax.numpy as jnp, optax, fnopt
        >>> tx = fnopt.chain(fnopt.sgd(1.0), fnopt.transforms.average_params("swa"))
        >>> params = jnp.zeros(1)
        >>> state = tx.init(params)
        >>> for _ in range(3):  # params: -1, -2, -3
        ...     updates, state = tx.update(jnp.ones(1), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> fnopt.averaged_params(state).tolist()
        [-2.0]

    References:
        Izmailov et al., Averaging Weights Leads to Wider Optima and Better
        Generalization, UAI 2018, https://arxiv.org/abs/1803.05407

        PyTorch ``torch.optim.swa_utils.AveragedModel``; timm
        ``timm.utils.ModelEmaV3``.
    """
    call = "average_params"
    check_choice(call, "kind", kind, KINDS)
    check_flag(call, "warmup", warmup)
    if warmup and kind != "ema":
        raise ValueError(f"`{call}(warmup=...)` applies to kind='ema' only, got kind={kind!r}")
    check_hyper(call, "decay", decay, 0.0, 1.0)
    check_count(call, "start", start, 0)
    check_count(call, "every", every, 1)
    check_hyper(call, "warmup_gamma", warmup_gamma, 0.0, low_open=True)
    check_hyper(call, "warmup_power", warmup_power, 0.0, low_open=True)
    check_hyper(call, "min_decay", min_decay, 0.0, 1.0)
    dtype = storage_dtype(call, dtype, "dtype")

    def weight(count: jax.Array, n: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The EMA's lerp weight ``1 - decay`` of the next snapshot (SWA: the
        divisor ``n + 1``) and the record."""
        if kind == "swa":
            return as_float(n + 1), {}
        if not warmup:
            return _complement(decay, count), {"decay": resolve(decay, count)}
        ramp = 1.0 - (1.0 + as_float(n) / resolve(warmup_gamma, count)) ** -resolve(warmup_power, count)
        d = jnp.maximum(jnp.minimum(ramp, resolve(decay, count)), resolve(min_decay, count))
        return 1.0 - d, {"decay": d}

    def init_fn(params):
        average = jax.tree.map(lambda p: jnp.array(p, dtype=dtype or p.dtype, copy=True), params)
        count = zero_count()
        return AverageParamsState(count, zero_count(), average, weight(count, count)[1])

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                f"`{call}.update` needs the params: call `update(updates, state, params)` "
                "(it averages `params + updates`)"
            )
        check_shapes(call, updates, params, state.average)
        count, n = state.count, state.n_averaged
        since = count - as_count(resolve(start, count))
        period = jnp.maximum(as_count(resolve(every, count)), 1)
        take = (since >= 0) & (since % period == 0)
        w, record = weight(count, n)
        first = n == 0  # torch copies the params on the first snapshot

        def leaf(avg, p, u):
            new_p = jnp.asarray(p + u).astype(p.dtype)  # optax.apply_updates
            cd = compute_dtype(avg)
            a, b, wc = avg.astype(cd), new_p.astype(cd), w.astype(jnp.finfo(cd).dtype).astype(cd)
            mixed = a + (b - a) / wc if kind == "swa" else _lerp(a, b, wc)
            mixed = jnp.where(first, b, mixed)
            return jnp.where(take, mixed.astype(avg.dtype), avg)

        average = jax.tree.map(leaf, state.average, params, updates)
        n = jnp.where(take, next_count(n), n).astype(jnp.int32)
        return updates, AverageParamsState(next_count(count), n, average, record)

    return mark_observer(optax.GradientTransformationExtraArgs(init_fn, update_fn))


def averaged_params(opt_state: Any, params: optax.Params | None = None) -> optax.Params:
    """The params averaged by :func:`~fnopt.transforms.average_params`.

    Finds every :class:`~fnopt.transforms.AverageParamsState` at any depth
    of ``opt_state`` (``chain``s and Optax's wrappers: ``partition``,
    ``masked``, ``MultiSteps``, ``inject_hyperparams``, ...).

    * With ``params``: a tree like ``params`` whose averaged leaves are
      replaced by their average (cast to the param's dtype) and whose other
      leaves (groups that ``optax.partition`` does not average) are
      ``params``' own. Before the first snapshot (``n_averaged == 0``) an
      average is its params. Each leaf may be averaged by at most one state.
    * Without ``params``: the one average state's ``average`` as stored (in
      its ``dtype``; before the first snapshot, the copy made by ``init``).
      Raises when there are several states or when the average covers only
      some leaves (under ``partition``): pass ``params`` then.

    Args:
        opt_state: a plain optimizer state, a ``flax.nnx.Optimizer`` or its
            ``opt_state``, or a Linen ``TrainState``.
        params: the current params (optional, see above); for NNX,
            ``nnx.state(model, nnx.Param)``.

    Returns:
        The averaged params. For an ``nnx.Optimizer`` this is an
        ``nnx.State`` of arrays: ``nnx.update(model_copy,
        fnopt.averaged_params(optimizer))`` loads it into a copy of the
        model (``nnx.clone(model)``).

    Raises:
        ValueError: when ``opt_state`` holds no average state, or the
            structures do not match.

    Pure and jittable. A state stacked by ``vmap`` (one member per leading
    index) works outside ``vmap`` too, with params stacked the same way.

    Examples:
        >>> import jax.numpy as jnp, optax, fnopt
        >>> tx = fnopt.chain(fnopt.sgd(0.5), fnopt.transforms.average_params(decay=0.9))
        >>> params = jnp.array([1.0])
        >>> state = tx.init(params)
        >>> fnopt.averaged_params(state, params).tolist()  # no snapshot yet
        [1.0]
        >>> for _ in range(2):  # params: 0.5 (copied), 0.25
        ...     updates, state = tx.update(params, state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> round(float(fnopt.averaged_params(state)[0]), 6)  # 0.9 * 0.5 + 0.1 * 0.25
        0.475
    """
    name = "averaged_params(opt_state, params)"
    found = records(opt_state, AverageParamsState)
    if not found:
        raise ValueError(f"`{name}`: `opt_state` holds no `average_params` state")
    if params is None:
        if len(found) > 1:
            raise ValueError(
                f"`{name}`: `opt_state` holds {len(found)} `average_params` states; pass `params` to "
                "merge them (each must average different leaves), or read `.average` of the one you want"
            )
        average = found[0].average
        if any(is_masked_node(x) for x in jax.tree.leaves(average, is_leaf=is_masked_node)):
            raise ValueError(
                f"`{name}`: the average covers only some of the params (under `optax.partition` or "
                "`masked`); pass `params` to get a full tree"
            )
        return average
    # None leaves count as leaves: a group that partition masked out may hold a MaskedNode there
    leaves, treedef = jax.tree.flatten(unwrap_variables(params), is_leaf=lambda x: x is None)
    out: list[Any] = list(leaves)
    owner: list[int | None] = [None] * len(leaves)
    for k, state in enumerate(found):
        try:
            averages = treedef.flatten_up_to(state.average)
        except (ValueError, TypeError) as err:
            raise ValueError(f"`{name}`: `params` differ in structure from the average: {err}") from None
        for i, (p, a) in enumerate(zip(leaves, averages)):
            if a is None or is_masked_node(a) or not jax.tree.leaves(a):
                continue
            if owner[i] is not None:
                raise ValueError(
                    f"`{name}`: leaf {i} of the params is averaged by two `average_params` states; "
                    "read `.average` of each state instead"
                )
            if jnp.shape(a) != jnp.shape(p):
                raise ValueError(f"`{name}`: a param has shape {jnp.shape(p)} but its average {jnp.shape(a)}")
            owner[i] = k
            n = state.n_averaged  # batched (leading axes) for a stacked, vmap-ed state
            fresh = jnp.reshape(n == 0, jnp.shape(n) + (1,) * (jnp.ndim(p) - jnp.ndim(n)))
            out[i] = jnp.where(fresh, p, a.astype(jnp.result_type(p)))
    return treedef.unflatten(out)


# ---------------------------------------------------------------- schedule


def swa(init_value: ArrayLike, swa_value: ArrayLike, anneal_steps: ArrayLike = 10, anneal: str = "cos") -> Schedule:
    """Anneals from ``init_value`` to ``swa_value`` over ``anneal_steps``,
    then holds it: torch ``SWALR(optimizer, swa_lr=swa_value,
    anneal_epochs=anneal_steps, anneal_strategy=anneal)`` started when the
    optimizer's learning rate is ``init_value``.

    ``swa_value * a + init_value * (1 - a)`` with ``a = f(min(t /
    anneal_steps, 1))``, ``f(x) = (1 - cos(pi x)) / 2`` (``"cos"``) or
    ``x`` (``"linear"``), and ``a = 1`` at every step when
    ``anneal_steps = 0`` (torch sets ``swa_lr`` at once). This is the closed
    form of torch's recursion on the current LR (which recovers the
    starting LR from it at each step); step ``t`` counts ``SWALR.step()``
    calls (step 0 = the scheduler's construction).

    To switch to SWA after a base schedule, join them at the SWA start ``b``
    and begin the annealing from the base schedule's value there. This is
    torch's loop that ends epoch ``i`` with ``swa_scheduler.step()`` if
    ``i >= b`` and ``scheduler.step()`` otherwise (torch's example writes
    ``i > swa_start``: ``b = swa_start + 1``)::

        base = fnopt.schedules.cosine_decay(0.1, 1000)
        lr = fnopt.schedules.join([base, fnopt.schedules.swa(float(base(750)), 0.02, 50)], [750])
        tx = fnopt.chain(fnopt.sgd(lr, momentum=0.9), fnopt.transforms.average_params("swa", start=750))

    Args:
        init_value: the value at step 0 (the learning rate when the SWA
            phase starts).
        swa_value: the value from ``anneal_steps`` on.
        anneal_steps: length of the annealing, >= 0 (torch's
            ``anneal_epochs``, in whatever unit the steps count).
        anneal: ``"cos"`` or ``"linear"`` (static).

    Examples:
        >>> import fnopt
        >>> lr = fnopt.schedules.swa(0.1, 0.05, anneal_steps=2, anneal="linear")
        >>> [round(float(lr(t)), 6) for t in range(4)]
        [0.1, 0.075, 0.05, 0.05]

    References:
        Izmailov et al., Averaging Weights Leads to Wider Optima and Better
        Generalization, UAI 2018, https://arxiv.org/abs/1803.05407;
        PyTorch ``torch.optim.swa_utils.SWALR``.
    """
    call = "swa"
    concrete(call, "init_value", init_value)
    concrete(call, "swa_value", swa_value)
    check_nonnegative(call, "anneal_steps", anneal_steps)
    check_choice(call, "anneal", anneal, ("cos", "linear"))
    shape = cos_anneal if anneal == "cos" else linear_anneal

    def schedule(step):
        remaining, progress = phase_position(as_step(step), as_float(0.0), as_float(anneal_steps))
        return shape(as_float(init_value), as_float(swa_value), remaining, progress)

    return schedule
