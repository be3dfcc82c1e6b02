"""The LR range test (Smith 2015; fastai's ``lr_find``) as one jitted scan.

The learning rate sweeps ``exponential_range(start_lr, end_lr, num_steps)``
while the model trains; the loss is smoothed with fastai's debiased
exponential moving average and recording stops once the smoothed loss
exceeds ``diverge_factor`` times its best. fastai's four suggestion rules
(``valley``, ``steep``, ``minimum``, ``slide``) then pick a learning rate from
the part of the curve before the loss turns up; ``LRFindResult.peak`` (halfway
between ``steep`` and the lowest loss, on the log axis) is the learning rate to
use as the peak of a one-cycle or WSD schedule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._checks import check_positive, check_range, check_scalar
from ._decay import exponential_range

# fastai drops the first tenth and the last five recorded points before suggesting.
_SKIP_END = 5


@dataclasses.dataclass(frozen=True)
class LRFindResult:
    """What the LR range test recorded.

    Attributes:
        lrs: learning rate of each recorded step (the LR of the update that
            followed the loss evaluation, as fastai records it).
        losses: smoothed (debiased EMA) loss at each recorded step.
        raw_losses: the loss of each recorded step's batch.
        suggestions: ``{"valley", "steep", "minimum", "slide"} -> lr``, each
            computed on ``lrs[considered[0]:considered[1]]`` only; empty when
            that holds fewer than 2 points.
        diverged: whether the sweep stopped on divergence before the end.
        considered: ``(start, stop)``, the indices of the record the
            suggestions looked at: the first tenth and the last 5 points
            dropped (as fastai does), and everything after the lowest
            smoothed loss, where the loss rises or blows up.
        optimizer: the name of ``make_optimizer`` when it has one (a
            function or ``functools.partial`` of one, e.g. ``fnopt.adam``),
            None for a lambda; the plot's default title names it.
    """

    lrs: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray
    suggestions: dict[str, float]
    diverged: bool
    considered: tuple[int, int]
    optimizer: str | None

    @property
    def peak(self) -> float | None:
        """The learning rate to use as the peak of a one-cycle or WSD
        schedule: the geometric mean of ``steep`` (where the smoothed loss
        falls fastest) and the LR at the lowest smoothed loss -- halfway
        between them on the log axis. None when there are no suggestions.

        Smith's advice is a peak where the loss still falls, just before it
        turns up. The LR at the lowest loss is that edge itself; ``steep`` is
        well inside it. On MNIST-1D (``examples/compare_schedules.py``: one-cycle
        over 2100 steps, final test accuracy, mean ± std of 5 seeds) the peak
        picked by each rule gave::

            rule                SGD + momentum 0.9      Adam
            valley              86.6 ± 0.8 % (0.030)    84.5 ± 0.5 % (0.0033)
            minimum             87.7 ± 1.4 % (0.036)    88.0 ± 0.8 % (0.0060)
            slide               88.9 ± 1.0 % (0.046)    88.8 ± 0.6 % (0.0076)
            steep               94.8 ± 0.6 % (0.24)     92.7 ± 0.8 % (0.020)
            LR at lowest loss   72.8 ± 32 % (0.36)      94.5 ± 0.4 % (0.060)
            peak (this rule)    95.3 ± 0.4 % (0.30)     94.3 ± 0.4 % (0.035)

        At the lowest loss one SGD seed diverged (9.6 %); ``steep`` leaves
        accuracy unused with Adam. Measured on one problem: treat it as a
        starting point, not a law.
        """
        if not self.suggestions:
            return None
        lowest = float(self.lrs[self.considered[1] - 1])
        return math.sqrt(self.suggestions["steep"] * lowest)

    def plot(self, path: str | None = None, *, title: str | None = None, mark: float | None = None):
        """Loss against LR on a log axis with each suggestion labelled; see
        :func:`fnopt.plot.lr_find`. Saved as PNG when ``path`` is given.
        Returns the matplotlib figure."""
        from .plot import lr_find as plot_lr_find

        return plot_lr_find(self, path=path, title=title, mark=mark)


# ---------------------------------------------------------------- suggestions
# Transcriptions of fastai's documented rules. Each takes the LRs and the
# smoothed losses (already trimmed) and returns a learning rate.


def valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai ``valley``: find the longest decreasing subsequence of the
    losses; with ``length = end - start`` of that valley, suggest the LR at
    ``start + int(length / 3) + int(length / 6)`` (about halfway down)."""
    n = len(losses)
    run = [1] * n
    best_start, best_end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
            if run[best_end] < run[i]:
                best_end = i
                best_start = best_end - run[best_end]
    sections = (best_end - best_start) / 3
    return float(lrs[best_start + int(sections) + int(sections / 2)])


def steep(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai ``steep``: the LR where the loss falls fastest per log-LR."""
    slopes = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    return float(lrs[int(np.argmin(slopes))])


def minimum(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai ``minimum``: a tenth of the LR at the lowest loss."""
    return float(lrs[int(np.argmin(losses))]) / 10.0


def slide(
    lrs: np.ndarray, losses: np.ndarray, lr_diff: int = 15, thresh: float = 0.005, adjust_value: float = 1.0
) -> float:
    """fastai ``slide``: slide a window of ``lr_diff`` points left from the end
    until the loss gradient at its two ends differs by at most ``thresh``;
    suggest the LR at the window's left end. (With fewer than ``lr_diff + 1``
    points the window is shortened to the whole record.)"""
    grad = np.gradient(losses) if len(losses) > 1 else np.zeros_like(losses)
    lr_diff = min(lr_diff, len(losses) - 1)
    right, left = -1, -1 - lr_diff
    suggestion = lrs[left]
    while left >= -len(losses) and abs(grad[right] - grad[left]) > thresh:
        suggestion = lrs[left]
        right -= 1
        left -= 1
    return float(suggestion) * adjust_value


SUGGESTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "valley": valley,
    "steep": steep,
    "minimum": minimum,
    "slide": slide,
}


def considered(losses: np.ndarray, num_steps: int) -> tuple[int, int]:
    """The part of the record the suggestions look at, as ``(start, stop)``
    indices: fastai's trim (the first ``num_steps // 10`` and the last 5
    points dropped), cut before the first non-finite loss and after the
    lowest smoothed loss. Past its lowest point the loss is rising or is the
    noise after a blow-up (the record of a loss that jumps and settles back
    below ``diverge_factor`` x its best goes on), and a rule run there points
    at a learning rate that diverges."""
    losses = np.asarray(losses, np.float64)
    start, stop = num_steps // 10, max(len(losses) - _SKIP_END, 0)
    bad = np.flatnonzero(~np.isfinite(losses[start:stop]))
    if bad.size:
        stop = start + int(bad[0])
    if stop - start >= 2:
        stop = start + int(np.argmin(losses[start:stop])) + 1
    return start, max(stop, start)


def suggest(lrs: np.ndarray, losses: np.ndarray, num_steps: int) -> dict[str, float]:
    """Runs every suggestion rule on the :func:`considered` part of the record;
    empty when it holds fewer than 2 points."""
    start, stop = considered(losses, num_steps)
    lrs = np.asarray(lrs, np.float64)[start:stop]
    losses = np.asarray(losses, np.float64)[start:stop]
    if len(losses) < 2:
        return {}
    return {name: rule(lrs, losses) for name, rule in SUGGESTIONS.items()}


# ---------------------------------------------------------------- the sweep


def _stack_batches(batches: Any, num_steps: int) -> Any:
    # A dict, tuple or array is a pytree of stacked steps; a list or any other
    # iterable is a sequence of batches.
    is_pytree = isinstance(batches, (dict, tuple)) or hasattr(batches, "shape")
    leaves = jax.tree_util.tree_leaves(batches) if is_pytree else []
    if leaves and all(hasattr(leaf, "shape") for leaf in leaves):
        steps = {int(np.shape(leaf)[0]) if np.ndim(leaf) else 0 for leaf in leaves}
        if len(steps) != 1:
            raise ValueError("`lr_find(batches=...)`: every array needs the same leading (step) axis")
        (available,) = steps
        if available < num_steps:
            raise ValueError(
                f"`lr_find(batches=...)` has {available} steps on its leading axis, "
                f"fewer than num_steps={num_steps}"
            )
        return jax.tree_util.tree_map(lambda leaf: leaf[:num_steps], batches)
    if not isinstance(batches, Iterable):
        raise ValueError("`lr_find(batches=...)` must be a pytree of arrays or an iterable of batches")
    taken = []
    for batch in batches:
        taken.append(batch)
        if len(taken) == num_steps:
            break
    if len(taken) < num_steps:
        raise ValueError(
            f"`lr_find(batches=...)` yielded {len(taken)} batches, fewer than num_steps={num_steps}"
        )
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *taken)


def lr_find(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batches: Any,
    make_optimizer: Callable[[Callable[[Any], jax.Array]], optax.GradientTransformation],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
) -> LRFindResult:
    """The LR range test: train briefly while the LR grows exponentially.

    Step ``i`` evaluates ``loss_fn(params, batch_i)`` and applies one update
    with learning rate ``start_lr * (end_lr / start_lr) ** (i / num_steps)``
    (the optimizer is built by ``make_optimizer(schedule)``, so its own step
    count drives the sweep). The recorded loss is fastai's debiased moving
    average ``avg_i / (1 - smoothing ** (i + 1))`` with
    ``avg_i = smoothing * avg_{i-1} + (1 - smoothing) * loss_i``. Recording
    stops after the first step whose smoothed loss exceeds ``diverge_factor``
    times the best so far, or is not finite (fastai does not stop on NaN; it
    drops NaNs afterwards). The whole sweep is one jitted ``lax.scan``;
    ``params`` are not modified.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: initial parameters (a pytree).
        batches: a pytree (dict, tuple or array) of arrays whose leading
            axis is the step (at least ``num_steps`` long), or a list /
            iterable of at least ``num_steps`` batches.
        make_optimizer: ``make_optimizer(learning_rate)`` builds the optimizer
            to probe, e.g. ``lambda lr: fnopt.sgd(lr, momentum=0.9)``.
        start_lr: first learning rate, > 0.
        end_lr: learning rate the sweep reaches at ``num_steps``, > start_lr.
        num_steps: number of steps, >= 6.
        smoothing: EMA coefficient of the loss, in [0, 1).
        diverge_factor: stop once the smoothed loss exceeds this multiple of
            its best; any finite number > 1.

    Returns:
        An :class:`LRFindResult` with ``lrs``, ``losses`` (smoothed),
        ``raw_losses``, ``suggestions`` (fastai's ``valley``, ``steep``,
        ``minimum``, ``slide``, computed on the record without its first tenth
        and last five points, as fastai does, and without what follows the
        lowest smoothed loss), ``peak`` (the suggestion for a one-cycle / WSD
        peak) and ``plot(path=None, *, title=None, mark=None)``.

    Raises:
        ValueError: for invalid arguments, too few batches, or a loss that is
            not finite at the very first step.

    Examples:
        >>> import jax.numpy as jnp, numpy as np, fnopt
        >>> x = np.random.default_rng(0).normal(size=(100, 32, 4)).astype(np.float32)
        >>> loss_fn = lambda w, xb: jnp.mean((xb @ w - xb.sum(1)) ** 2)
        >>> result = fnopt.lr_find(loss_fn, jnp.zeros(4), x, fnopt.sgd, start_lr=1e-4, end_lr=10.0)
        >>> result.optimizer, sorted(result.suggestions)
        ('sgd', ['minimum', 'slide', 'steep', 'valley'])
        >>> # the one-cycle / WSD peak: between steep and the LR at the lowest loss
        >>> result.suggestions["steep"] <= result.peak <= 10 * result.suggestions["minimum"]
        True

    References:
        Smith, Cyclical Learning Rates for Training Neural Networks, 2015,
        https://arxiv.org/abs/1506.01186

        Smith, A disciplined approach to neural network hyper-parameters,
        2018, https://arxiv.org/abs/1803.09820

        fastai ``LRFinder`` and its suggestion functions,
        https://docs.fast.ai/callback.schedule.html
    """
    call = "lr_find"
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr), ("smoothing", smoothing),
                        ("diverge_factor", diverge_factor)):
        check_scalar(call, name, value)
        if isinstance(value, (bool, np.bool_)):
            raise ValueError(f"`lr_find({name}=...)` must be a number, got {value!r}")
    check_positive(call, "start_lr", start_lr)
    check_positive(call, "end_lr", end_lr)
    if not float(end_lr) > float(start_lr):
        raise ValueError(f"`lr_find(end_lr=...)` must be > start_lr={start_lr!r}, got {end_lr!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 6:
        raise ValueError(f"`lr_find(num_steps=...)` must be an integer >= 6, got {num_steps!r}")
    check_range(call, "smoothing", smoothing, 0.0, 1.0, high_open=True)
    check_range(call, "diverge_factor", diverge_factor, 1.0, low_open=True)
    num_steps = int(num_steps)
    stacked = _stack_batches(batches, num_steps)
    schedule = exponential_range(start_lr, end_lr, num_steps)
    optimizer = make_optimizer(schedule)

    lrs, smooth, raw, recorded = _sweep(loss_fn, optimizer, schedule, params, stacked, smoothing,
                                        float(diverge_factor))
    recorded = np.asarray(recorded)
    n = int(recorded.sum())
    raw = np.asarray(raw)[:n]
    if not np.isfinite(raw[0]):
        raise ValueError(
            f"`lr_find`: the loss is not finite at the first step (got {raw[0]}); "
            "check loss_fn, params and batches"
        )
    lrs, smooth = np.asarray(lrs)[:n], np.asarray(smooth)[:n]
    return LRFindResult(
        lrs=lrs,
        losses=smooth,
        raw_losses=raw,
        suggestions=suggest(lrs, smooth, num_steps),
        diverged=n < num_steps,
        considered=considered(smooth, num_steps),
        optimizer=_name(make_optimizer),
    )


def _name(make_optimizer) -> str | None:
    """``fnopt.adam`` -> "adam"; a ``functools.partial`` names its function;
    a lambda has no name."""
    func = getattr(make_optimizer, "func", make_optimizer)
    name = getattr(func, "__name__", None)
    return None if name in (None, "<lambda>") else name


def _sweep(loss_fn, optimizer, schedule, params, batches, smoothing, diverge_factor):
    # ``smooth > diverge_factor * best`` with the factor split as m * 2**e
    # (frexp): no overflow for any finite factor (in x64 mode one past
    # float32's range is valid too), and the product is exact for powers of
    # two such as fastai's 4.
    mantissa, exponent = math.frexp(diverge_factor)

    @jax.jit
    def run(params, batches):
        beta = jnp.asarray(smoothing, jnp.float32)

        def step(carry, inputs):
            params, opt_state, avg, best, stopped = carry
            i, batch = inputs
            loss, grads = jax.value_and_grad(loss_fn)(params, batch)
            loss = jnp.asarray(loss, jnp.float32)
            avg = beta * avg + (1.0 - beta) * loss
            smooth = avg / (1.0 - beta ** (i + 1).astype(jnp.float32))
            record = ~stopped
            best = jnp.where(record & (smooth < best), smooth, best)
            threshold = jnp.ldexp(jnp.float32(mantissa) * best, jnp.int32(exponent))
            diverged = ~jnp.isfinite(smooth) | (smooth > threshold)
            stopped = stopped | (record & diverged)
            updates, new_state = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            keep = lambda new, old: jnp.where(stopped, old, new)  # noqa: E731
            params = jax.tree_util.tree_map(keep, new_params, params)
            opt_state = jax.tree_util.tree_map(keep, new_state, opt_state)
            return (params, opt_state, avg, best, stopped), (schedule(i), smooth, loss, record)

        carry = (
            params,
            optimizer.init(params),
            jnp.zeros([], jnp.float32),
            jnp.asarray(jnp.inf, jnp.float32),
            jnp.zeros([], bool),
        )
        steps = jnp.arange(jax.tree_util.tree_leaves(batches)[0].shape[0], dtype=jnp.int32)
        _, outputs = jax.lax.scan(step, carry, (steps, batches))
        return outputs

    return run(params, batches)
