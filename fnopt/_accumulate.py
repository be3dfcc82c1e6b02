"""Gradient accumulation: ``k`` micro-batches make one optimizer step, with
the metric fed by ``value=`` averaged over the same micro-batches."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._base import Hyper, check_shapes, next_count, zero_count
from ._chain import accepts, keywords_of
from ._checks import as_float, check_flag, float_dtype, is_traced
from ._common import compute_dtype, full_like, storage_dtype
from ._plateau import as_count, as_metric
from ._wrappers import _check_inner

_MAX_EVERY_K = 2**30


class AccumulateGradientsState(NamedTuple):
    """State of :func:`accumulate_gradients`.

    Fields (``f`` = default float dtype, float32 or float64 under x64):
        count: int32, real (inner) updates applied so far (saturating).
        micro_step: int32, micro-steps accumulated since the last real
            update, in ``[0, every_k)``; 0 right after a real update.
        grad_sum: the sum of the micro-step gradients since the last real
            update, shaped like the params, in ``accumulator_dtype``.
        value_sum: f, the sum of the ``value=`` arguments not yet passed on.
        value_count: int32, how many values ``value_sum`` holds.
        inner_state: the wrapped optimizer's state, untouched by micro-steps.
        hyperparams: ``{"every_k": k}``, the number of micro-steps of the
            current cycle (as a float, like every recorded value).
    """

    count: jax.Array
    micro_step: jax.Array
    grad_sum: optax.Updates
    value_sum: jax.Array
    value_count: jax.Array
    inner_state: optax.OptState
    hyperparams: dict[str, jax.Array]


def _check_every_k(call: str, every_k: Any) -> None:
    """A concrete ``every_k`` must be an integer (not a bool, not a float) in
    ``[1, 2**30]``; a traced one must not be a bool; schedules pass."""
    where = f"`{call}(every_k=...)`"
    if callable(every_k):
        return
    if is_traced(every_k):
        if jnp.result_type(every_k) == jnp.bool_:
            raise ValueError(f"{where} must be an integer, got a traced bool")
        return
    if isinstance(every_k, (bool, np.bool_)) or not isinstance(every_k, (int, np.integer, np.ndarray, jax.Array)):
        raise ValueError(f"{where} must be an integer >= 1 or a schedule, got {every_k!r}")
    arr = np.asarray(every_k)
    if arr.ndim != 0:
        raise ValueError(f"{where} must be a scalar, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{where} must be an integer, got {every_k!r} (dtype {arr.dtype})")
    if not 1 <= int(arr) <= _MAX_EVERY_K:
        raise ValueError(f"{where} must be in [1, 2**30], got {int(arr)}")


def _micro_steps(every_k: Hyper, count: jax.Array) -> jax.Array:
    """``every_k`` at real update ``count``, as an int32 in ``[1, 2**30]``
    (a traced or scheduled non-integer float is truncated)."""
    k = jnp.asarray(every_k(count) if callable(every_k) else every_k)
    if jnp.issubdtype(k.dtype, jnp.integer):
        return jnp.clip(k, 1, _MAX_EVERY_K).astype(jnp.int32)
    return jnp.maximum(as_count(as_float(k)), 1)


def accumulate_gradients(
    inner: optax.GradientTransformation,
    every_k: Hyper,
    *,
    use_grad_mean: bool = True,
    accumulator_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Gradient accumulation: ``every_k`` micro-steps make one step of ``inner``.

    Each call to ``update`` is a micro-step: its gradients are added to a
    running sum and the update it returns is exactly zero, with the inner
    state untouched. The ``every_k``-th call runs ``inner`` once on the mean
    of the ``every_k`` gradients (the gradient of the mean loss over all the
    micro-batches, i.e. of one ``every_k`` times larger batch) and returns its
    update; the sum then starts again from zero. So everything inside
    ``inner`` counts real updates only: after ``2 * every_k`` micro-steps a
    schedule in ``inner`` has seen 2 steps, Adam's bias correction 2.

    The metric comes along: the numeric scalar ``value=`` arguments of the
    micro-steps are averaged, and the real update passes their mean to
    ``inner`` as ``value=``, so a :func:`reduce_on_plateau` or
    :func:`early_stopping` inside decides on the mean over the ``every_k``
    micro-batches (one observation per real update; their own ``window``
    then averages over real updates). A micro-step without ``value`` adds
    nothing to the mean. Whether ``inner`` gets a ``value`` is decided by the
    call itself, which keeps the program free of branches on data: the real
    update passes ``value=`` exactly when it is called with one, and then
    the mean is over every value received since the last real update that
    passed one on (values of a cycle whose last call had none are carried
    into the next cycle's mean, never dropped). Feed ``value=`` on every
    micro-step (the intended use), or on none. Every other extra keyword
    argument, and ``params``, reaches ``inner`` from the real update's call
    only (those of the other micro-steps are not used).

    **Compared with** ``optax.MultiSteps(inner, every_k)``, which works with
    fnopt optimizers (schedules count real updates there too) and takes the
    same ``use_grad_mean`` and ``accumulator_dtype``: ``MultiSteps`` gives the
    inner update only the *last* micro-step's extra arguments, so a plateau
    or early stopping fed ``value=`` per step decides on the last
    micro-batch's loss alone; it also runs the inner update on every
    micro-step and discards it, and (Optax 0.2.8) fails under
    ``jax_numpy_dtype_promotion="strict"``. Use this wrapper when a plateau or early
    stopping is fed per step. (``fnopt.report(opt_state, v)`` reaches a
    plateau inside either wrapper.)

    Semantics with other libraries: torch's usual loop (``loss / k``,
    ``backward`` ``k`` times, then ``optimizer.step()`` and
    ``scheduler.step()``) and Keras 3's ``gradient_accumulation_steps`` both
    apply the mean gradient, as does the default here; ``use_grad_mean=False``
    applies the sum. The step count is torch's (and ``MultiSteps``'): real
    updates. Keras 3 differs: its schedules and Adam's bias correction read
    ``iterations``, which counts every micro-step.

    ``update`` is pure JAX: the real update is selected with ``lax.cond``
    (under ``vmap`` with a batched counter both sides run and one is
    selected), so it works under ``jit``, ``lax.scan`` and ``vmap`` and
    compiles once per shape (a call with ``value=`` and one without are two
    programs, as for any keyword argument). To skip a bad micro-batch, wrap
    this in :func:`skip_nonfinite`: a skipped micro-step leaves the sum and
    counters as they were.

    Args:
        inner: the optimizer making the real updates, e.g.
            ``fnopt.adam(schedule)``.
        every_k: micro-steps per real update: an integer in ``[1, 2**30]``
            (a bool or float raises), a traced integer (so a ``vmap`` over
            it works; a traced non-integer float is truncated, values below
            1 act as 1), or a schedule of the real-update count (read once
            per cycle, which grows the effective batch over training, like
            ``MultiSteps``' ``every_k_schedule``). ``every_k=1`` is ``inner``.
        use_grad_mean: ``True`` (default) passes the mean of the gradients to
            ``inner``, ``False`` their sum.
        accumulator_dtype: dtype of ``grad_sum``. ``None`` (default) uses
            each parameter's dtype promoted to at least float32: bf16 and
            float16 gradients are summed in float32 (summing ``k`` of them in
            bf16 would lose bits on every micro-step; Optax also defaults to
            float32), float64 stays float64 (Optax's float32 would round it).
            Pass e.g. ``jnp.bfloat16`` to halve the memory of a bf16 model.
            The mean is cast back to the gradients' dtype before ``inner``.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state
        :class:`AccumulateGradientsState`.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> from fnopt import transforms
        >>> opt = transforms.accumulate_gradients(fnopt.sgd(1.0), every_k=2)
        >>> state = opt.init(jnp.zeros(1))
        >>> u1, state = opt.update(jnp.array([1.0]), state)  # micro-step: zero
        >>> u2, state = opt.update(jnp.array([3.0]), state)  # real step: -lr * mean
        >>> u1.tolist(), u2.tolist(), int(state.count)
        ([0.0], [-2.0], 1)

    References:
        Optax ``MultiSteps``; Keras ``Optimizer(gradient_accumulation_steps=)``.
    """
    call = "accumulate_gradients"
    _check_inner(call, inner)
    _check_every_k(call, every_k)
    check_flag(call, "use_grad_mean", use_grad_mean)
    accumulator_dtype = storage_dtype(call, accumulator_dtype, "accumulator_dtype")
    inner = optax.with_extra_args_support(inner)
    inner_keywords = keywords_of(inner)
    keywords = None if inner_keywords is None else inner_keywords | {"value"}

    def init(params):
        grad_sum = jax.tree.map(lambda p: full_like(p, 0.0, accumulator_dtype or compute_dtype(p)), params)
        count = zero_count()
        return AccumulateGradientsState(
            count=count,
            micro_step=zero_count(),
            grad_sum=grad_sum,
            value_sum=jnp.zeros([], float_dtype()),
            value_count=zero_count(),
            inner_state=inner.init(params),
            hyperparams={"every_k": as_float(_micro_steps(every_k, count))},
        )

    def update(updates, state, params=None, *, value=None, **extra_args):
        check_shapes(call, updates, state.grad_sum)
        k = _micro_steps(every_k, state.count)
        grad_sum = jax.tree.map(lambda s, g: s + g.astype(s.dtype), state.grad_sum, updates)
        micro_step = state.micro_step + 1
        emit = micro_step >= k
        value_sum, value_count = state.value_sum, state.value_count
        inner_args = dict(extra_args)
        if value is not None:
            value_sum = value_sum + as_metric(f"{call}.update(value=...)", value)
            value_count = next_count(value_count)
            inner_args["value"] = value_sum / value_count.astype(value_sum.dtype)

        def real_update():
            def grad(s, g):
                total = s / micro_step.astype(s.dtype) if use_grad_mean else s
                return total.astype(g.dtype)

            grads = jax.tree.map(grad, grad_sum, updates)
            return inner.update(grads, state.inner_state, params, **inner_args)

        def micro_update():
            out_spec, _ = jax.eval_shape(real_update)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_spec)
            return zeros, state.inner_state

        out, inner_state = jax.lax.cond(emit, real_update, micro_update)

        def restart(x):
            return jnp.where(emit, jnp.zeros_like(x), x)

        if value is not None:
            value_sum, value_count = restart(value_sum), restart(value_count)
        new_state = AccumulateGradientsState(
            count=jnp.where(emit, next_count(state.count), state.count),
            micro_step=restart(micro_step),
            grad_sum=jax.tree.map(restart, grad_sum),
            value_sum=value_sum,
            value_count=value_count,
            inner_state=inner_state,
            hyperparams={"every_k": as_float(k)},
        )
        return out, new_state

    return accepts(optax.GradientTransformationExtraArgs(init, update), keywords, call)
