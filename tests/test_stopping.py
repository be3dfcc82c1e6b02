"""early_stopping: Keras ``EarlyStopping`` counting (against a transcription
of Keras 3's ``on_epoch_end``), exactly-zero updates once stopped, both
feeding paths, and stopping at different times inside a ``vmap``-ed
``lax.scan``."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnopt
from fnopt.transforms import early_stopping


class KerasStopping:
    """Keras 3 ``EarlyStopping.on_epoch_end`` (keras/src/callbacks/
    early_stopping.py) transcribed, monitor value passed directly.

    Deviation, documented in fnopt: a non-finite metric is never an
    improvement (Keras takes ``-inf`` as a best loss). Keras' extra
    ``epoch > 0`` condition for stopping is kept as ``keras_epoch_guard``; it
    can only matter when the first metric is non-finite.
    """

    def __init__(self, patience=0, min_delta=0.0, mode="min", baseline=None, keras_epoch_guard=True):
        self.patience, self.baseline = patience, baseline
        self.min_delta = abs(min_delta)
        self.less = mode == "min"
        if self.less:
            self.min_delta *= -1
        self.best = math.inf if self.less else -math.inf
        self.wait = 0
        self.stop_training = False
        self.epoch = 0
        self.guard = keras_epoch_guard

    def _is_improvement(self, monitor_value, reference_value):
        if not math.isfinite(monitor_value):
            return False
        shifted = monitor_value - self.min_delta
        return shifted < reference_value if self.less else shifted > reference_value

    def on_epoch_end(self, current):
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and (epoch > 0 or not self.guard):
            self.stop_training = True


def keras_trace(metrics, **cfg):
    """(stopped, wait, best) after each observation, up to and including the
    one that stops (Keras ends training there)."""
    k = KerasStopping(**cfg)
    rows = []
    for m in metrics:
        k.on_epoch_end(m)
        rows.append((k.stop_training, k.wait, k.best))
        if k.stop_training:
            break
    return rows


_RUNNERS = {}


def run_fnopt(configs, metrics, path, window=1):
    """Feeds ``metrics[i]`` to ``early_stopping(**configs[i])`` (same mode and
    baseline-or-not for all) inside one vmapped scan; returns per-step
    stopped/wait/best and the multiplier applied to a unit update."""
    mode = configs[0]["mode"]
    with_baseline = configs[0]["baseline"] is not None
    key = (mode, with_baseline, path, window)
    if key not in _RUNNERS:

        def one(hp, seq):
            tx = early_stopping(hp["patience"], hp["min_delta"], mode=mode,
                                baseline=hp["baseline"] if with_baseline else None, window=window)

            def body(state, value):
                if path == "report":
                    state = fnopt.report(state, value)
                    applied = jnp.where(fnopt.should_stop(state), 0.0, 1.0)
                else:
                    updates, state = tx.update(jnp.ones(2), state, value=value)
                    applied = updates[0]
                return state, dict(stopped=state.stopped, wait=state.wait, best=state.best, applied=applied)

            return jax.lax.scan(body, tx.init(jnp.ones(2)), seq)[1]

        _RUNNERS[key] = jax.jit(jax.vmap(one))
    hp = {
        "patience": jnp.asarray([c["patience"] for c in configs]),
        "min_delta": jnp.asarray(np.array([c["min_delta"] for c in configs])),
        "baseline": jnp.asarray(np.array([c["baseline"] or 0.0 for c in configs])),
    }
    out = _RUNNERS[key](hp, jnp.asarray(np.asarray(metrics, np.float32)))
    return {k: np.asarray(v) for k, v in out.items()}


def assert_matches_keras(got, i, rows, context, stride=1):
    stop = len(rows)  # observations up to and including the stopping one
    sl = slice(stride - 1, None, stride)
    stopped, wait, best = (np.array(c) for c in zip(*rows))
    np.testing.assert_array_equal(got["stopped"][i][sl][:stop], stopped, err_msg=context)
    np.testing.assert_array_equal(got["wait"][i][sl][:stop], wait, err_msg=context)
    np.testing.assert_array_equal(got["best"][i][sl][:stop], best, err_msg=context)
    if stopped[-1]:  # then frozen: flag set, state unchanged, updates zero
        after = slice(stop * stride - 1, None)
        assert got["stopped"][i][after].all(), context
        assert (got["wait"][i][after] == wait[-1]).all(), context
        assert (got["best"][i][after] == best[-1]).all(), context
        assert (got["applied"][i][after] == 0).all(), context
    first_stop = stop * stride - 1 if stopped[-1] else len(got["applied"][i])
    assert (got["applied"][i][:first_stop] == 1).all(), context


def random_metrics(rng, length, lo=-40, hi=160):
    """Plateaus, repeats, small and large moves, on a grid of 1/8 (exact in
    float32, so every comparison is decided the same in float32 and float64)."""
    v = rng.integers(lo // 2, hi) / 8
    out = []
    for _ in range(length):
        r = rng.random()
        if r < 0.2:
            pass
        elif r < 0.65:
            v -= rng.integers(1, 4) / 8
        elif r < 0.72:
            v -= rng.integers(4, 40) / 8
        else:
            v += rng.integers(1, 12) / 8
        out.append(v)
    return out


def random_configs(rng, n, mode, with_baseline):
    return [
        dict(
            mode=mode,
            patience=int(rng.integers(0, 16)),
            min_delta=float(rng.choice([0.0, 0.0, 0.125, 0.25, 1.0])),
            baseline=float(rng.integers(-40, 80) / 8) * (1 if mode == "min" else -1) if with_baseline else None,
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("path", ["report", "value"])
@pytest.mark.parametrize("with_baseline", [False, True])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_matches_keras_counting_on_random_sequences(mode, with_baseline, path):
    rng = np.random.default_rng([["min", "max"].index(mode), with_baseline])
    configs = random_configs(rng, 150, mode, with_baseline)
    sign = 1 if mode == "min" else -1  # trend towards improvement
    metrics = [[sign * v for v in random_metrics(rng, 24)] for _ in configs]
    got = run_fnopt(configs, metrics, path)
    stops = 0
    for i, (cfg, seq) in enumerate(zip(configs, metrics)):
        rows = keras_trace(seq, **cfg)
        stops += rows[-1][0]
        assert_matches_keras(got, i, rows, f"config={cfg} metrics={seq}")
    assert 0.2 * len(configs) < stops < 0.97 * len(configs)  # both outcomes covered


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(["min", "max"]),
    patience=st.integers(0, 3),
    min_delta=st.sampled_from([0.0, 0.5]),
    seq=st.lists(st.one_of(st.integers(-16, 16).map(lambda k: k / 4),
                           st.sampled_from([math.nan, math.inf, -math.inf])), min_size=12, max_size=12),
)
def test_matches_keras_with_non_finite_metrics(mode, patience, min_delta, seq):
    """Keras' guard against stopping at the very first epoch is dropped on
    purpose (it can only bite when that first metric is non-finite)."""
    cfg = dict(mode=mode, patience=patience, min_delta=min_delta, baseline=None)
    got = run_fnopt([cfg], [seq], "report")
    rows = keras_trace(seq, **cfg, keras_epoch_guard=False)
    assert_matches_keras(got, 0, rows, f"config={cfg} metrics={seq}")
    if math.isfinite(seq[0]):  # then the guard is irrelevant
        assert rows == keras_trace(seq, **cfg)


def test_hand_worked_examples():
    def stops(metrics, **kw):
        tx = early_stopping(**kw)
        state, out = tx.init(jnp.zeros(1)), []
        for m in metrics:
            state = fnopt.report(state, m)
            out.append(bool(fnopt.should_stop(state)))
        return out

    # patience 2: the second consecutive non-improving observation stops
    assert stops([3.0, 2.0, 2.5, 2.1, 1.0], patience=2) == [False, False, False, True, True]
    # patience 0 and 1 both stop on the first non-improvement
    assert stops([3.0, 2.0, 2.0], patience=0) == [False, False, True]
    assert stops([3.0, 2.0, 2.0], patience=1) == [False, False, True]
    # min_delta 0.25 (min mode): 1.8 and 1.9 do not improve on 2.0 by more
    # than 0.25; 1.7 would (1.7 + 0.25 < 2.0)
    assert stops([2.0, 1.8, 1.9], patience=2, min_delta=0.25) == [False, False, True]
    assert stops([2.0, 1.8, 1.7], patience=2, min_delta=0.25) == [False, False, False]
    # max mode
    assert stops([0.5, 0.6, 0.6, 0.55], patience=2, mode="max") == [False, False, False, True]
    # baseline 1.0 (min): 2.0, 1.5, 1.2 improve on best but not on the
    # baseline, so `wait` grows (1, 2, 3) without stopping (an improvement
    # never stops); 1.5 is no improvement and wait=4 >= 2 stops. 0.9 beats
    # the baseline and resets wait.
    assert stops([2.0, 1.5, 1.2, 1.5], patience=2, baseline=1.0) == [False, False, False, True]
    assert stops([2.0, 1.5, 0.9, 1.5, 1.5], patience=2, baseline=1.0) == [False, False, False, False, True]


def test_updates_are_exactly_zero_once_stopped_even_for_non_finite_input():
    tx = optax.chain(optax.sgd(0.1), early_stopping(patience=1))
    params = jnp.ones(3)
    state = tx.init(params)
    _, state = tx.update(jnp.ones(3), state, params, value=1.0)
    u, state = tx.update(jnp.ones(3), state, params, value=2.0)  # this update already zero
    assert bool(fnopt.should_stop(state))
    np.testing.assert_array_equal(u, np.zeros(3))
    for g in (jnp.array([jnp.nan, jnp.inf, -jnp.inf]), jnp.ones(3)):
        u, state = tx.update(g, state, params, value=-100.0)  # a great value cannot restart
        assert jnp.all(u == 0) and not jnp.any(jnp.signbit(u))  # +0.0 exactly
        assert bool(fnopt.should_stop(state))
    assert float(state[1].best) == 1.0


def test_window_averages_per_step_values():
    rng = np.random.default_rng(7)
    configs = random_configs(rng, 80, "min", False)
    window = 4
    metrics = [random_metrics(rng, 12) for _ in configs]
    values = [[v + d for v in seq for d in rng.permutation([-0.5, 0.5, -0.25, 0.25])] for seq in metrics]
    got = run_fnopt(configs, values, "value", window=window)
    for i, (cfg, seq) in enumerate(zip(configs, metrics)):
        rows = keras_trace(seq, **cfg)  # the window means are exactly `seq`
        assert_matches_keras(got, i, rows, f"config={cfg} values={values[i]}", stride=window)


def test_vmapped_sweep_members_stop_at_different_times_inside_scan():
    """A training loop in ``lax.scan``, vmapped over patience: each member's
    parameters freeze exactly when its Keras oracle stops."""
    losses = [5.0, 4.0, 4.2, 4.1, 3.9, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    patiences = [1, 2, 3, 4, 9]

    def train(patience):
        tx = optax.chain(optax.sgd(0.1), early_stopping(patience))
        params = jnp.zeros(2)

        def step(carry, loss):
            params, state = carry
            u, state = tx.update(jnp.ones(2), state, params, value=loss)
            params = optax.apply_updates(params, u)
            return (params, state), params[0]

        (_, state), trajectory = jax.lax.scan(step, (params, tx.init(params)), jnp.asarray(losses))
        return trajectory, fnopt.should_stop(state)

    trajectories, stopped = jax.jit(jax.vmap(train))(jnp.asarray(patiences))
    for p, trajectory, flag in zip(patiences, np.asarray(trajectories), np.asarray(stopped)):
        rows = keras_trace(losses, patience=p)
        moves = len(rows) - 1 if rows[-1][0] else len(losses)  # updates applied
        expected = -0.1 * np.minimum(np.arange(1, len(losses) + 1), moves)
        np.testing.assert_allclose(trajectory, expected, rtol=1e-6, err_msg=f"patience={p}")
        assert bool(flag) == rows[-1][0]
    assert len(set(np.asarray(trajectories)[:, -1].round(4))) == len(patiences)


def test_should_stop_is_the_or_of_all_flags_and_needs_a_state():
    tx = optax.chain(early_stopping(patience=5), optax.chain(early_stopping(patience=1, mode="max")))
    state = tx.init(jnp.zeros(1))
    state = fnopt.report(fnopt.report(state, 1.0), 2.0)  # worse for min, better for max
    assert not bool(fnopt.should_stop(state))
    state = fnopt.report(state, 0.5)  # better for min, worse for max
    assert bool(fnopt.should_stop(state))
    with pytest.raises(ValueError, match=re.escape("`should_stop(opt_state)`")):
        fnopt.should_stop(optax.sgd(0.1).init(jnp.zeros(1)))
    plateau_only = fnopt.transforms.reduce_on_plateau().init(jnp.zeros(1))
    with pytest.raises(ValueError, match="no `early_stopping` state"):
        fnopt.should_stop(plateau_only)


def test_jit_and_dtypes(x64_enabled):
    tx = early_stopping(patience=2, min_delta=0.1, baseline=3.0)
    params = {"w": jnp.ones(2, jnp.bfloat16)}
    state = tx.init(params)
    f = jnp.float64 if x64_enabled else jnp.float32
    assert state.best.dtype == state.value_sum.dtype == state.config.baseline.dtype == f
    assert state.stopped.dtype == jnp.bool_
    assert state.count.dtype == state.wait.dtype == state.value_count.dtype == jnp.int32
    update = jax.jit(tx.update)
    report = jax.jit(fnopt.report)
    u, state = update(params, state, params, value=jnp.asarray(5.0, jnp.bfloat16))
    assert u["w"].dtype == jnp.bfloat16
    state = report(report(state, 5.0), 5.0)
    assert bool(fnopt.should_stop(state))
    assert jax.tree.map(lambda x: x.dtype, state) == jax.tree.map(lambda x: x.dtype, tx.init(params))


INVALID = [
    (dict(patience=-1), "patience", ">= 0"),
    (dict(patience=1.5), "patience", "an integer"),
    (dict(min_delta=-0.1), "min_delta", ">= 0"),
    (dict(mode="auto"), "mode", "one of 'min', 'max'"),
    (dict(baseline=math.nan), "baseline", "finite"),
    (dict(baseline="low"), "baseline", "a number"),
    (dict(window=0), "window", ">= 1"),
]


@pytest.mark.parametrize("kwargs,name,message", INVALID)
def test_invalid_arguments_raise(kwargs, name, message):
    with pytest.raises(ValueError, match=rf"`early_stopping\({name}=\.\.\.\)` must be {re.escape(message)}"):
        early_stopping(**kwargs)
