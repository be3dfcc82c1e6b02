import numpy as np
import pytest

pytest.importorskip("matplotlib")

from fnopt import plot, schedules  # noqa: E402


def test_schedules_figure_has_lr_and_momentum_axes_and_saves_png(tmp_path):
    path = tmp_path / "sched.png"
    fig = plot.schedules(
        {"one-cycle": schedules.one_cycle(0.1, 100), "cosine": schedules.cosine_decay(0.1, 100)},
        100,
        momentum=schedules.one_cycle_momentum(100),
        num_points=101,
        path=str(path),
    )
    assert len(fig.axes) == 2
    lr_lines, mom_lines = fig.axes[0].get_lines(), fig.axes[1].get_lines()
    assert [line.get_label() for line in lr_lines] == ["one-cycle", "cosine"]
    # The plotted cosine curve is the published formula at the sampled steps.
    xs, ys = lr_lines[1].get_data()
    np.testing.assert_allclose(ys, 0.05 * (1 + np.cos(np.pi * xs / 100)), rtol=1e-5, atol=1e-9)
    assert len(mom_lines) == 1
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedules_rejects_empty_and_bad_range():
    with pytest.raises(ValueError, match="num_steps"):
        plot.schedules(schedules.constant(1.0), 0)
    with pytest.raises(ValueError, match="at least one schedule"):
        plot.schedules(None, 10)


def test_a_recipes_lr_and_momentum_share_a_colour():
    fig = plot.schedules(schedules.one_cycle(0.1, 100), 100, momentum=schedules.one_cycle_momentum(100))
    (lr_line,), (momentum_line,) = fig.axes[0].get_lines(), fig.axes[1].get_lines()
    assert lr_line.get_color() == momentum_line.get_color()
    assert momentum_line.get_linestyle() == "--"


def test_log_axis_is_not_stretched_by_near_zero_dips():
    # SGDR's cosine reaches its floor (here 1e-7 of the peak) at the end of each period.
    sgdr = schedules.cosine_warm_restarts(0.1, first_period=50, min_value=1e-8)
    fig = plot.schedules(sgdr, 100, num_points=101, log_scale=True)
    low, high = fig.axes[0].get_ylim()
    assert low >= 0.1 * 1e-3 / 1.5 * (1 - 1e-9) and high == pytest.approx(0.15)


def test_schedule_panels_draw_one_panel_per_recipe_on_a_shared_step_range(tmp_path):
    path = tmp_path / "panels.png"
    constant = schedules.constant(0.1)
    fig = plot.schedule_panels(
        {
            "SGD": (constant, {"momentum": schedules.constant(0.9)}),
            "one-cycle": (schedules.one_cycle(0.3, 200), {"momentum": schedules.one_cycle_momentum(200)}),
            "restarts": (schedules.cosine_warm_restarts(0.1, first_period=50), None),
            "two seeds": ({"seed 0": constant, "seed 1": schedules.constant(0.05)}, None),
        },
        200,
        ncols=2,
        title="recipes",
        path=str(path),
    )
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["SGD", "one-cycle", "restarts", "two seeds"]
    assert fig.get_suptitle() == "recipes"
    colours = []
    for ax in panels:
        assert ax.get_xlim() == (0.0, 200.0)
        assert ax.get_ylim()[0] == 0.0  # linear LR axes start at 0: a constant does not sit mid-panel
        colours.append(ax.get_lines()[0].get_color())
    assert len({str(c) for c in colours}) == 4  # one colour family per panel
    twins = [ax for ax in fig.axes if not ax.get_title() and ax.get_lines()]
    assert [t.get_lines()[0].get_color() for t in twins] == colours[:2]  # momentum in its recipe's colour
    # Only the panel with two curves on one axis needs a legend.
    assert [ax.get_legend() is not None for ax in panels] == [False, False, False, True]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedule_panels_reject_bad_input():
    with pytest.raises(ValueError, match="num_steps"):
        plot.schedule_panels({"a": (schedules.constant(1.0), None)}, 0)
    with pytest.raises(ValueError, match="at least one panel"):
        plot.schedule_panels({}, 10)
