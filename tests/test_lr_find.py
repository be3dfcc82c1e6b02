"""LR range test: the sweep, the smoothing, divergence, suggestions, bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnopt
from fnopt._lr_find import considered, lr_find, minimum, slide, steep, suggest, valley


def _least_squares(num_steps=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 5)).astype(np.float32) * np.array([3.0, 1.0, 1.0, 0.5, 0.2], np.float32)
    w_true = rng.normal(size=(5,)).astype(np.float32)
    y = x @ w_true
    # L = 0.5 * mean((x w - y)^2): Hessian x^T x / n; plain GD diverges above 2 / L_max.
    l_max = float(np.linalg.eigvalsh(x.T.astype(np.float64) @ x / len(x)).max())
    batches = {"x": np.broadcast_to(x, (num_steps,) + x.shape), "y": np.broadcast_to(y, (num_steps,) + y.shape)}

    def loss_fn(params, batch):
        return 0.5 * jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)

    return loss_fn, {"w": np.zeros(5, np.float32)}, batches, 2.0 / l_max


def test_least_squares_stops_on_divergence_and_suggests_below_the_stability_limit():
    loss_fn, params, batches, limit = _least_squares()
    before = params["w"].copy()
    result = lr_find(loss_fn, params, batches, lambda lr: optax.sgd(lr), start_lr=1e-5, end_lr=10.0)
    assert result.diverged
    assert len(result.lrs) < 100
    # Divergence was detected, so the last recorded LR is above the limit.
    assert result.lrs[-1] > limit
    assert set(result.suggestions) == {"valley", "steep", "minimum", "slide"}
    for name, lr in result.suggestions.items():
        assert limit / 1000 < lr < limit, (name, lr, limit)
    np.testing.assert_array_equal(params["w"], before)


def test_record_is_the_exponential_sweep_and_the_debiased_ema():
    loss_fn, params, batches, _ = _least_squares(num_steps=50)
    result = lr_find(loss_fn, params, batches, lambda lr: optax.sgd(lr), start_lr=1e-6, end_lr=1e-3, num_steps=50)
    assert not result.diverged and len(result.lrs) == 50
    i = np.arange(50)
    np.testing.assert_allclose(result.lrs, 1e-6 * (1e-3 / 1e-6) ** (i / 50), rtol=1e-5)
    avg, expected = 0.0, []
    for k, loss in enumerate(np.asarray(result.raw_losses, np.float64)):
        avg = 0.98 * avg + 0.02 * loss
        expected.append(avg / (1 - 0.98 ** (k + 1)))
    np.testing.assert_allclose(result.losses, expected, rtol=1e-5)
    # The first raw loss is the loss at the initial params.
    np.testing.assert_allclose(result.raw_losses[0], float(loss_fn(params, jax.tree_util.tree_map(lambda b: b[0], batches))), rtol=1e-6)


def test_iterable_batches_give_the_same_record_as_stacked_arrays():
    loss_fn, params, batches, _ = _least_squares(num_steps=20)
    stacked = lr_find(loss_fn, params, batches, optax.sgd, start_lr=1e-4, end_lr=1e-1, num_steps=20)
    listed = [{"x": batches["x"][i], "y": batches["y"][i]} for i in range(20)] * 2
    iterated = lr_find(loss_fn, params, listed, optax.sgd, start_lr=1e-4, end_lr=1e-1, num_steps=20)
    np.testing.assert_allclose(iterated.losses, stacked.losses, rtol=1e-6)


def test_suggestion_rules_on_hand_worked_cases():
    lrs = np.array([1.0, 10.0, 100.0, 1000.0])
    # steep: slopes per log-LR are (-1, -3, +2) / ln 10 -> steepest after lrs[1].
    assert steep(lrs, np.array([5.0, 4.0, 1.0, 3.0])) == 10.0
    # minimum: lowest loss at lrs[2], suggestion a tenth of it.
    assert minimum(lrs, np.array([5.0, 4.0, 1.0, 3.0])) == 10.0
    seven = 10.0 ** np.arange(7)
    # valley on a strictly decreasing record: run of 7 from start -1 (fastai's
    # convention), sections = 7/3 -> index -1 + 2 + 1 = 2.
    assert valley(seven, np.arange(7, 0, -1, dtype=float)) == seven[2]
    # valley: the longest decreasing subsequence of [3, 5, 4, 2, 6, 1] is
    # 5, 4, 2, 1 (ends at 5, length 4, start 1); sections = 4/3 -> index 2.
    assert valley(seven[:6], np.array([3.0, 5.0, 4.0, 2.0, 6.0, 1.0])) == seven[2]
    # slide with a window of 2: gradients [-2,-2,-2,-2,-1.05,-0.1,-0.1]; the
    # window slides until both ends have gradient -2, leaving index 2.
    losses = np.array([10.0, 8.0, 6.0, 4.0, 2.0, 1.9, 1.8])
    assert slide(seven, losses, lr_diff=2) == seven[2]


def test_suggest_trims_like_fastai_and_drops_non_finite_tail():
    lrs = 10.0 ** np.linspace(-5, 0, 40)
    losses = np.linspace(2.0, 1.0, 40)
    losses[30] = np.nan
    out = suggest(lrs, losses, num_steps=40)
    # Trimmed to [4, 35), then cut at the NaN (index 30): minimum at index 29.
    assert out["minimum"] == pytest.approx(lrs[29] / 10)
    assert suggest(lrs[:6], losses[:6], num_steps=6) == {}  # one point left


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"start_lr": 1.0, "end_lr": 1.0}, "end_lr"),
        ({"start_lr": -1.0}, "start_lr"),
        ({"num_steps": 5}, "num_steps"),
        ({"num_steps": 6.5}, "num_steps"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"diverge_factor": 1.0}, "diverge_factor"),
        ({"diverge_factor": 0.5}, "diverge_factor"),
        ({"diverge_factor": float("inf")}, "diverge_factor"),
        ({"diverge_factor": float("nan")}, "diverge_factor"),
        ({"diverge_factor": True}, "diverge_factor"),
        ({"diverge_factor": "4"}, "diverge_factor"),
        ({"num_steps": 200}, "fewer than num_steps"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    loss_fn, params, batches, _ = _least_squares(num_steps=100)
    with pytest.raises(ValueError, match=match) as info:
        lr_find(loss_fn, params, batches, optax.sgd, **kwargs)
    if "diverge_factor" in kwargs:
        assert str(info.value).startswith("`lr_find(diverge_factor=...)`"), info.value


def test_nan_loss_from_the_start_is_reported():
    _, params, batches, _ = _least_squares(num_steps=10)

    def nan_loss(params, batch):
        return jnp.sum(params["w"]) * jnp.nan

    with pytest.raises(ValueError, match="not finite at the first step"):
        lr_find(nan_loss, params, batches, optax.sgd, num_steps=10)


def test_suggestions_ignore_the_curve_after_its_lowest_point():
    # A range test whose loss falls, bottoms out at index 30, blows up, then
    # settles back (below diverge_factor x best, so recording went on) with a
    # steep fall in the noise at index 40: fastai's rules run on the whole
    # record would put `steep` there, at an LR that diverged.
    lrs = 10.0 ** np.linspace(-5, 1, 60)
    drops = np.full(20, 0.01)
    drops[10] = 0.1  # the steepest fall before the minimum: index 20 -> 21
    losses = np.concatenate([
        np.full(11, 2.3),                   # first tenth (dropped) and index 10
        2.3 - np.cumsum(drops),             # falls to the minimum at index 30
        np.linspace(2.5, 4.5, 10),          # blows up
        [3.0],                              # index 41: a fall of 1.5 in one step
        np.linspace(3.0, 3.2, 18),
    ])
    assert considered(losses, num_steps=60) == (6, 31)
    out = suggest(lrs, losses, num_steps=60)
    assert max(out.values()) <= lrs[30]
    assert out["minimum"] == pytest.approx(lrs[30] / 10)
    assert out["steep"] == pytest.approx(lrs[20])
    # Without the cut, fastai's steep picks the fall after the blow-up.
    assert steep(lrs[6:55], losses[6:55]) == pytest.approx(lrs[40])


def test_considered_window_of_a_real_sweep_ends_at_the_lowest_smoothed_loss():
    loss_fn, params, batches, limit = _least_squares()
    result = lr_find(loss_fn, params, batches, optax.sgd, start_lr=1e-5, end_lr=10.0, diverge_factor=1e6)
    start, stop = result.considered
    assert start == 10
    assert stop - 1 == start + int(np.argmin(result.losses[start:-5]))
    for name, lr in result.suggestions.items():
        assert lr <= result.lrs[stop - 1], name
        assert lr < limit, name


def test_peak_is_halfway_between_steep_and_the_lowest_loss_and_the_optimizer_is_named():
    loss_fn, params, batches, _ = _least_squares()
    named = lr_find(loss_fn, params, batches, fnopt.sgd, start_lr=1e-5, end_lr=10.0)
    lrs, losses = np.asarray(named.lrs, np.float64), np.asarray(named.losses, np.float64)
    start, stop = 10, len(lrs) - 5  # fastai's trim of a 100-step sweep
    lowest = start + int(np.argmin(losses[start:stop]))
    slopes = np.diff(losses[start : lowest + 1]) / np.diff(np.log(lrs[start : lowest + 1]))
    steepest = lrs[start + int(np.argmin(slopes))]
    assert named.peak == pytest.approx(np.sqrt(steepest * lrs[lowest]), rel=1e-12)
    assert named.optimizer == "sgd"
    partial = lr_find(loss_fn, params, batches, functools.partial(fnopt.adam, b1=0.8), start_lr=1e-5, end_lr=10.0)
    assert partial.optimizer == "adam"
    anonymous = lr_find(loss_fn, params, batches, lambda lr: fnopt.sgd(lr), start_lr=1e-5, end_lr=10.0)
    assert anonymous.optimizer is None


def _stop_index(raw_losses, factor, smoothing=0.98):
    """Float64 oracle: index of the first step whose debiased EMA exceeds
    factor x the best so far (or is not finite), None if none does."""
    avg, best = 0.0, np.inf
    for i, loss in enumerate(np.asarray(raw_losses, np.float64)):
        avg = smoothing * avg + (1 - smoothing) * loss
        smooth = avg / (1 - smoothing ** (i + 1))
        best = min(best, smooth)
        if not np.isfinite(smooth) or smooth > factor * best:
            return i
    return None


@pytest.mark.parametrize("factor", [1.01, 4.0, 2**63, float(np.finfo(np.float32).max), 1e300])
def test_any_finite_diverge_factor_above_one_works(factor):
    if factor > float(np.finfo(np.float32).max) and not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match=r"^`lr_find\(diverge_factor=\.\.\.\)` must be finite"):
            _least_squares_find(factor)
        return
    result = _least_squares_find(factor)
    n = len(result.raw_losses)
    # Recording stops at the step the float64 oracle says, computed from the raw losses.
    stop = _stop_index(result.raw_losses, factor)
    assert result.diverged == (n < 100)
    assert stop == n - 1 if result.diverged else stop in (None, 99)


def _least_squares_find(factor):
    loss_fn, params, batches, _ = _least_squares()
    return lr_find(loss_fn, params, batches, optax.sgd, start_lr=1e-5, end_lr=10.0, diverge_factor=factor)


def test_plot_titles_labels_and_marks(tmp_path):
    pytest.importorskip("matplotlib")
    loss_fn, params, batches, _ = _least_squares()
    result = lr_find(loss_fn, params, batches, fnopt.sgd, start_lr=1e-5, end_lr=10.0)
    fig = result.plot(mark=result.peak)
    ax = fig.axes[0]
    assert ax.get_title() == "LR range test: sgd"
    labels = [line.get_label() for line in ax.get_lines()]
    for name, lr in result.suggestions.items():
        assert f"{name}: {lr:.3g}" in labels
    assert f"chosen: {result.peak:.3g}" in labels
    assert f"peak (one-cycle / WSD): {result.peak:.3g}" in labels
    (marked,) = [line for line in ax.get_lines() if line.get_label().startswith("chosen")]
    assert marked.get_xdata()[0] == result.peak
    # Every suggestion has its own marker shape, so coinciding ones stay visible.
    markers = [line.get_marker() for line in ax.get_lines() if line.get_label().split(":")[0] in result.suggestions]
    assert len(set(markers)) == len(result.suggestions)
    assert result.plot(title="mine").axes[0].get_title() == "mine"
    anonymous = lr_find(loss_fn, params, batches, lambda lr: fnopt.sgd(lr), start_lr=1e-5, end_lr=10.0)
    assert anonymous.plot().axes[0].get_title() == "LR range test"


def test_plot_marks_every_suggestion(tmp_path):
    pytest.importorskip("matplotlib")
    loss_fn, params, batches, _ = _least_squares()
    result = lr_find(loss_fn, params, batches, optax.sgd, start_lr=1e-5, end_lr=10.0)
    fig = result.plot(str(tmp_path / "lr.png"))
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert sum(label.split(":")[0] in result.suggestions for label in labels) == 4
    assert (tmp_path / "lr.png").stat().st_size > 0
