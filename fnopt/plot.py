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


def _figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("fnopt.plot needs matplotlib: pip install 'fnopt[plot]'") from err
    return Figure(figsize=(7.0, 4.0), layout="constrained")


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
    of hyperparameter) schedules on a twin right axis, dashed. Each argument
    may be a single schedule, a sequence of schedules, or a dict from label to
    schedule.

    Args:
        lr: schedule(s) for the left axis.
        num_steps: last step shown, > 0.
        momentum: schedule(s) for the right axis.
        num_points: sample points (steps are sampled as floats, so fractional
            steps are shown as the schedule defines them).
        title: figure title.
        log_scale: log scale on the left axis (useful for one-cycle's range).
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
    ax.set_xlabel("step")
    lines = []
    for label, schedule in left:
        lines += ax.plot(steps, np.asarray(schedule(steps)), label=label)
    ax.set_ylabel("learning rate" if left else "")
    if log_scale:
        ax.set_yscale("log")
    if right:
        twin = ax.twinx()
        for i, (label, schedule) in enumerate(right):
            color = f"C{len(left) + i}"
            lines += twin.plot(steps, np.asarray(schedule(steps)), "--", color=color, label=label)
        twin.set_ylabel("momentum")
    labels = [line.get_label() for line in lines]
    if len(lines) > 4:  # many curves: the legend goes below the axes, not over them
        fig.set_figheight(4.0 + 0.2 * ((len(lines) + 1) // 2))
        fig.legend(lines, labels, loc="outside lower center", ncols=2, fontsize="small")
    else:
        ax.legend(lines, labels, loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
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
    suggestion labelled in the legend with its value.

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
