"""Matplotlib figures of schedules (needs the ``plot`` extra: matplotlib).

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot
state, no display needed), so they work on headless machines and in tests.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

Schedules = Callable[[Any], Any] | Sequence[Callable[[Any], Any]] | Mapping[str, Callable[[Any], Any]]


def _named(value: Schedules | None, prefix: str) -> list[tuple[str, Callable[[Any], Any]]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return list(value.items())
    if callable(value):
        return [(prefix, value)]
    return [(f"{prefix} {i}", s) for i, s in enumerate(value)]


def _figure(width: float = 7.0, height: float = 4.0):
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("fnopt.plot needs matplotlib: pip install 'fnopt[plot]'") from err
    return Figure(figsize=(width, height), layout="constrained")


def _draw(ax, left, right, steps, *, lr_colors, momentum_colors, log_scale: bool):
    """LR schedules solid on ``ax``, momentum schedules dashed and lighter on a
    twin axis, in the given colours. Returns the drawn lines."""
    lines = []
    for (label, schedule), color in zip(left, lr_colors):
        lines += ax.plot(steps, np.asarray(schedule(steps)), color=color, label=label)
    if left:
        ax.set_ylabel("learning rate")
    values = _finite(lines)
    if log_scale:
        ax.set_yscale("log")
        positive = values[values > 0]
        if positive.size:  # no stretching down to the 1e-7 dips of warm restarts
            top = float(positive.max())
            ax.set_ylim(max(float(positive.min()), top * 1e-3) / 1.5, top * 1.5)
    elif values.size and values.min() >= 0:  # from 0, headroom above: constant curves do not sit mid-panel
        ax.set_ylim(0.0, 1.15 * float(values.max()) or 1.0)
    if right:
        twin = ax.twinx()
        drawn = []
        for (label, schedule), color in zip(right, momentum_colors):
            drawn += twin.plot(steps, np.asarray(schedule(steps)), "--", color=color, alpha=0.6, label=label)
        twin.set_ylabel(right[0][0] if len(right) == 1 and left else "momentum")
        values = _finite(drawn)
        if values.size:  # a margin of half the range (at least 0.05) on each side
            margin = max(float(values.max() - values.min()), 0.1) / 2
            twin.set_ylim(float(values.min()) - margin, float(values.max()) + margin)
        lines += drawn
    ax.set_xlim(steps[0], steps[-1])
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    return lines


def _finite(lines) -> np.ndarray:
    values = np.concatenate([np.asarray(line.get_ydata(), np.float64) for line in lines] or [np.zeros(0)])
    return values[np.isfinite(values)]


def _shades(color: str, n: int) -> list[tuple[float, float, float]]:
    """``n`` shades of one colour, from the colour itself towards white."""
    from matplotlib.colors import to_rgb

    rgb = np.asarray(to_rgb(color))
    return [tuple(rgb + (1.0 - rgb) * 0.6 * i / max(n - 1, 1)) for i in range(n)]


def _colors(n: int) -> list[str]:
    return [f"C{i % 10}" for i in range(n)]


def schedules(
    lr: Schedules | None,
    num_steps: int,
    *,
    momentum: Schedules | None = None,
    num_points: int = 1000,
    title: str | None = None,
    log_scale: bool = False,
    path: str | None = None,
):
    """Plots one or more schedules over ``[0, num_steps]``.

    Learning-rate schedules go on the left axis; momentum (or any second kind
    of hyperparameter) schedules on a twin right axis, dashed. When there are
    as many momentum as LR schedules, the i-th of each share a colour (a
    recipe's pair). Each argument may be a single schedule, a sequence of
    schedules, or a dict from label to schedule. For several recipes,
    :func:`schedule_panels` (one panel each) reads better.

    Args:
        lr: schedule(s) for the left axis.
        num_steps: last step shown, > 0.
        momentum: schedule(s) for the right axis.
        num_points: sample points (steps are sampled as floats, so fractional
            steps are shown as the schedule defines them).
        title: figure title.
        log_scale: log scale on the left axis (useful for one-cycle's range),
            bounded below at a thousandth of the largest value so that
            near-zero dips do not stretch it.
        path: if given, the figure is saved there as PNG.

    Returns:
        The :class:`matplotlib.figure.Figure`.

    Examples:
        >>> from fnopt import plot, schedules
        >>> fig = plot.schedules(
        ...     {"one-cycle": schedules.one_cycle(0.1, 1000)}, 1000,
        ...     momentum={"momentum": schedules.one_cycle_momentum(1000)})
        >>> len(fig.axes)
        2
    """
    if num_steps <= 0:
        raise ValueError(f"`plot.schedules(num_steps=...)` must be > 0, got {num_steps!r}")
    left, right = _named(lr, "lr"), _named(momentum, "momentum")
    if not left and not right:
        raise ValueError("`plot.schedules(...)`: give at least one schedule in `lr` or `momentum`")
    steps = np.linspace(0.0, float(num_steps), int(num_points))
    fig = _figure()
    ax = fig.add_subplot()
    colors = _colors(len(left) + len(right))
    momentum_colors = colors[: len(right)] if len(left) == len(right) else colors[len(left):]
    lines = _draw(ax, left, right, steps, lr_colors=colors, momentum_colors=momentum_colors, log_scale=log_scale)
    if not left:
        ax.set_yticks([])
    labels = [line.get_label() for line in lines]
    if len(lines) > 4:  # many curves: the legend goes below the axes, not over them
        fig.set_figheight(4.0 + 0.2 * ((len(lines) + 1) // 2))
        fig.legend(lines, labels, loc="outside lower center", ncols=2, fontsize="small")
    else:
        ax.legend(lines, labels, loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def schedule_panels(
    panels: Mapping[str, tuple[Schedules | None, Schedules | None]],
    num_steps: int,
    *,
    ncols: int = 3,
    num_points: int = 1000,
    log_scale: bool = False,
    title: str | None = None,
    path: str | None = None,
):
    """Small multiples: one panel per recipe, its learning rate solid on the
    left axis and its momentum (or Adam's ``b1``) dashed in a lighter shade
    of the same colour on a right axis, each panel on its own linear scale.

    Args:
        panels: ``{panel title: (lr, momentum)}``; each of ``lr`` and
            ``momentum`` is what :func:`schedules` accepts, or None.
        num_steps: last step shown, > 0.
        ncols: panels per row.
        num_points: sample points per curve.
        log_scale: log LR axes (bounded as in :func:`schedules`).
        title: figure title.
        path: if given, the figure is saved there as PNG.

    Returns:
        The :class:`matplotlib.figure.Figure`.

    Examples:
        >>> from fnopt import plot, schedules as S
        >>> fig = plot.schedule_panels({
        ...     "one-cycle": (S.one_cycle(0.1, 1000), S.one_cycle_momentum(1000)),
        ...     "SGDR": (S.cosine_warm_restarts(0.1, first_period=100), None),
        ... }, 1000)
        >>> [ax.get_title() for ax in fig.axes if ax.get_title()]
        ['one-cycle', 'SGDR']
    """
    if num_steps <= 0:
        raise ValueError(f"`plot.schedule_panels(num_steps=...)` must be > 0, got {num_steps!r}")
    if not panels:
        raise ValueError("`plot.schedule_panels(panels=...)`: give at least one panel")
    ncols = max(1, min(int(ncols), len(panels)))
    nrows = -(-len(panels) // ncols)
    fig = _figure(3.6 * ncols, 2.7 * nrows + (0.4 if title else 0.0))
    grid = fig.subplots(nrows, ncols, squeeze=False)
    steps = np.linspace(0.0, float(num_steps), int(num_points))
    for k, (ax, (name, (lr, momentum))) in enumerate(zip(grid.flat, panels.items())):
        left, right = _named(lr, "lr"), _named(momentum, "momentum")
        colors = _shades(f"C{k % 10}", max(len(left), len(right)))
        lines = _draw(ax, left, right, steps, lr_colors=colors, momentum_colors=colors, log_scale=log_scale)
        ax.set_title(name, fontsize="medium")
        if len(left) > 1 or len(right) > 1:  # otherwise the axis labels say what each curve is
            ax.legend(lines, [line.get_label() for line in lines], fontsize="x-small", loc="upper right")
    for ax in list(grid.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


# One style per suggestion: hollow markers of decreasing size, so that two
# suggestions at (nearly) the same LR show as concentric rings, each in the legend.
_SUGGESTION_STYLE = {
    "valley": ("o", 12), "steep": ("s", 10), "minimum": ("D", 7), "slide": ("^", 6),
}


def lr_find(result, *, path: str | None = None, title: str | None = None, mark: float | None = None,
            skip_end: int = 5):
    """Plots an LR range test: smoothed loss against LR on a log axis, each
    suggestion and the one-cycle / WSD ``peak`` labelled in the legend with
    its value.

    The part of the record the suggestions considered is drawn solid; the
    parts they skip (the first tenth, and what follows the lowest loss) are
    drawn faint. The y axis is bounded by the considered part, so a blow-up
    at the end does not flatten the curve.

    Args:
        result: an :class:`fnopt.LRFindResult` (from :func:`fnopt.lr_find`).
        path: if given, the figure is saved there as PNG.
        title: figure title; by default "LR range test", followed by the
            optimizer's name when ``result.optimizer`` knows it.
        mark: a learning rate to mark with a vertical line (e.g. the one
            chosen as a one-cycle peak), labelled with its value.
        skip_end: trailing points left out, as fastai's ``plot_lr_find``
            does (the divergence spike would flatten the curve).

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    lrs, losses = np.asarray(result.lrs), np.asarray(result.losses)
    if skip_end and len(lrs) > skip_end + 1:
        lrs, losses = lrs[:-skip_end], losses[:-skip_end]
    start, stop = result.considered
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(lrs, losses, color="C0", alpha=0.35, label="smoothed loss (not considered)")
    ax.plot(lrs[start:stop], losses[start:stop], color="C0", label="smoothed loss (considered)")
    for i, (name, lr) in enumerate(result.suggestions.items()):
        marker, size = _SUGGESTION_STYLE.get(name, ("v", 6))
        y = np.interp(np.log(lr), np.log(lrs), losses)
        ax.plot([lr], [y], marker, ms=size, mfc="none", mew=2, color=f"C{i + 1}", label=f"{name}: {lr:.3g}")
    if result.peak is not None:
        y = np.interp(np.log(result.peak), np.log(lrs), losses)
        ax.plot([result.peak], [y], "*", ms=12, color="C6", label=f"peak (one-cycle / WSD): {result.peak:.3g}")
    if mark is not None:
        ax.axvline(mark, color="k", ls="--", lw=1, label=f"chosen: {mark:.3g}")
    shown = losses[start:stop] if stop - start >= 2 else losses
    shown = shown[np.isfinite(shown)]
    if shown.size:
        low, high = float(shown.min()), float(shown.max())
        pad = 0.1 * (high - low) or 0.1 * abs(high) or 0.1
        ax.set_ylim(low - pad, high + 3 * pad)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    ax.grid(alpha=0.3)
    fig.set_figheight(4.6)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize="small")
    ax.set_title(title if title is not None else "LR range test" + (f": {result.optimizer}" if result.optimizer else ""))
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
