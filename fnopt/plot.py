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


def lr_find(result, *, path: str | None = None, skip_end: int = 5):
    """Plots an LR range test: smoothed loss against LR on a log axis, with
    the suggested learning rates marked.

    Args:
        result: an :class:`fnopt.LRFindResult` (from :func:`fnopt.lr_find`).
        path: if given, the figure is saved there as PNG.
        skip_end: trailing points left out, as fastai's ``plot_lr_find``
            does (the divergence spike would flatten the curve).

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    lrs, losses = np.asarray(result.lrs), np.asarray(result.losses)
    if skip_end and len(lrs) > skip_end + 1:
        lrs, losses = lrs[:-skip_end], losses[:-skip_end]
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(lrs, losses, label="smoothed loss")
    for i, (name, lr) in enumerate(result.suggestions.items()):
        y = np.interp(np.log(lr), np.log(lrs), losses) if len(lrs) else np.nan
        ax.plot([lr], [y], "o", color=f"C{i + 1}", label=f"{name}: {lr:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
