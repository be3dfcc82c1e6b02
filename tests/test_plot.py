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
