"""reduce_on_plateau: decision-for-decision parity with torch
``ReduceLROnPlateau`` (through a plain-Python transcription that always runs,
and torch itself when installed), through both feeding paths
(``fnopt.report`` and ``update(value=...)``); the documented examples; the
deliberate deviation for negative metrics; ``window`` averaging; non-finite
metrics."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fnopt
from fnopt.transforms import reduce_on_plateau

TIGHT = 2e-6  # a comparison decided by less than this (relative) is a rounding tie


class TorchPlateau:
    """torch 2.x ``ReduceLROnPlateau.step`` transcribed, on a base LR of 1.

    Two documented deviations (flags ``torch_rule=False``): the relative
    threshold is taken on ``|best|``, and a non-finite metric is never an
    improvement. With ``torch_rule=True`` it is torch's exact comparison.
    ``tight`` is set when a decision is within rounding of its boundary.
    """

    def __init__(self, factor=0.1, patience=10, threshold=1e-4, mode="min", threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8, torch_rule=False):
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.mode, self.threshold_mode = mode, threshold_mode
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
        self.torch_rule = torch_rule
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.lr = 1.0
        self.tight = False

    def _bound(self, best):
        if self.threshold_mode == "abs":
            return best - self.threshold if self.mode == "min" else best + self.threshold
        if self.torch_rule or not math.isfinite(best):  # torch: inf * (1 - threshold) = inf
            return best * (1 - self.threshold) if self.mode == "min" else best * (1 + self.threshold)
        delta = abs(best) * self.threshold
        return best - delta if self.mode == "min" else best + delta

    def _is_better(self, a, best):
        if not self.torch_rule and not math.isfinite(a):
            return False
        bound = self._bound(best)
        # Exact ties (repeats with threshold 0, grid values with an absolute
        # threshold) are exact in every precision; a relative threshold makes
        # near-ties rounding-dependent.
        exact = self.threshold == 0 or self.threshold_mode == "abs"
        if math.isfinite(bound) and math.isfinite(a):
            gap = abs(a - bound)
            if (gap != 0 or not exact) and gap <= TIGHT * max(1.0, abs(bound)):
                self.tight = True
        return a < bound if self.mode == "min" else a > bound

    def step(self, metric):
        current = float(metric)
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            drop = self.lr - new_lr
            if drop != 0 and abs(drop - self.eps) <= 1e-5 * self.lr:
                self.tight = True
            if drop > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def trace(self, metrics):
        rows = []
        for m in metrics:
            self.step(m)
            rows.append((self.lr, self.num_bad_epochs, self.cooldown_counter, self.best))
        return {k: np.array(v, dtype=np.float64) for k, v in zip(("scale", "num_bad", "cooldown", "best"), zip(*rows))}


def torch_trace(cfg, metrics):
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=cfg["mode"], factor=cfg["factor"], patience=cfg["patience"],
        threshold=cfg["threshold"], threshold_mode=cfg["threshold_mode"],
        cooldown=cfg["cooldown"], min_lr=cfg["min_lr"], eps=cfg["eps"],
    )
    rows = []
    for m in metrics:
        sched.step(float(m))
        rows.append((opt.param_groups[0]["lr"], sched.num_bad_epochs, sched.cooldown_counter, sched.best))
    return {k: np.array(v, dtype=np.float64) for k, v in zip(("scale", "num_bad", "cooldown", "best"), zip(*rows))}


# ---------------------------------------------------------------------------
# fnopt runners: one compilation per (mode, threshold_mode, path, shape); the
# numeric hyperparameters are traced and vmapped over configurations.

_RUNNERS = {}
_NUMERIC = ("factor", "patience", "threshold", "cooldown", "min_lr", "eps")


def run_fnopt(configs, metrics, path, window=1):
    """Feeds ``metrics[i]`` to a plateau built from ``configs[i]`` (all with
    the same mode and threshold_mode); returns the state after each
    observation and the multiplier applied to a unit update."""
    mode, threshold_mode = configs[0]["mode"], configs[0]["threshold_mode"]
    key = (mode, threshold_mode, path, window)
    if key not in _RUNNERS:

        def one(hp, seq):
            tx = reduce_on_plateau(
                hp["factor"], hp["patience"], hp["threshold"], mode=mode,
                threshold_mode=threshold_mode, cooldown=hp["cooldown"],
                min_scale=hp["min_lr"], eps=hp["eps"], window=window,
            )

            def body(state, value):
                if path == "report":
                    state = fnopt.report(state, value)
                    applied = state.scale
                else:
                    updates, state = tx.update(jnp.ones(2), state, value=value)
                    applied = updates[0]
                out = dict(scale=state.scale, applied=applied, num_bad=state.num_bad,
                           cooldown=state.cooldown_counter, best=state.best)
                return state, out

            return jax.lax.scan(body, tx.init(jnp.ones(2)), seq)[1]

        _RUNNERS[key] = jax.jit(jax.vmap(one))
    hp = {k: jnp.asarray(np.array([c[k] for c in configs])) for k in _NUMERIC}
    out = _RUNNERS[key](hp, jnp.asarray(np.asarray(metrics, np.float32)))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def assert_trace_equal(got, i, want, context, stride=1):
    """fnopt's trace for member ``i`` equals an oracle trace (observations
    every ``stride`` updates)."""
    sl = slice(stride - 1, None, stride)
    # (atol: with eps=0 and min_scale=0 a float32 scale flushes to 0 below ~1e-38)
    np.testing.assert_allclose(got["scale"][i][sl], want["scale"], rtol=1e-5, atol=1e-30, err_msg=context)
    np.testing.assert_allclose(got["applied"][i][sl], want["scale"], rtol=1e-5, atol=1e-30, err_msg=context)
    np.testing.assert_array_equal(got["num_bad"][i][sl], want["num_bad"], err_msg=context)
    np.testing.assert_array_equal(got["cooldown"][i][sl], want["cooldown"], err_msg=context)
    np.testing.assert_allclose(got["best"][i][sl], want["best"], rtol=1e-6, err_msg=context)


def random_metrics(rng, length):
    """A positive metric with plateaus, exact repeats, small and large moves,
    on a grid of 1/8 (exact in float32)."""
    v = rng.integers(8, 160) / 8
    out = []
    for _ in range(length):
        r = rng.random()
        if r < 0.4:
            pass
        elif r < 0.7:
            v = max(0.125, v - rng.integers(1, 4) / 8)
        elif r < 0.8:
            v = max(0.125, v - rng.integers(4, 40) / 8)
        else:
            v = v + rng.integers(1, 16) / 8
        out.append(v)
    return out


def random_configs(rng, n, mode, threshold_mode):
    thresholds = [0.0, 1e-4, 0.01, 0.05, 0.2] if threshold_mode == "rel" else [0.0, 0.125, 0.25, 0.3, 1.0]
    return [
        dict(
            mode=mode, threshold_mode=threshold_mode,
            factor=float(rng.choice([0.1, 0.25, 0.3, 0.5, 0.9])),
            patience=int(rng.integers(0, 5)),
            threshold=float(rng.choice(thresholds)),
            cooldown=int(rng.integers(0, 4)),
            min_lr=float(rng.choice([0.0, 0.0, 0.01, 0.05, 0.2])),
            eps=float(rng.choice([0.0, 1e-8, 1e-8, 1e-3, 0.02])),
        )
        for _ in range(n)
    ]


def oracle_of(cfg, **kw):
    return TorchPlateau(**{k: v for k, v in cfg.items()}, **kw)


MODES = [(m, t) for m in ("min", "max") for t in ("rel", "abs")]
LENGTH = 40


@pytest.mark.parametrize("path", ["report", "value"])
@pytest.mark.parametrize("mode,threshold_mode", MODES)
def test_matches_torch_decisions_on_random_configurations(mode, threshold_mode, path):
    """torch itself (when installed) and the transcription agree, and fnopt
    agrees with both, observation by observation."""
    rng = np.random.default_rng(hash((mode, threshold_mode)) % 2**32)
    configs = random_configs(rng, 150, mode, threshold_mode)
    metrics = [random_metrics(rng, LENGTH) for _ in configs]
    got = run_fnopt(configs, metrics, path)
    have_torch = True
    try:
        import torch  # noqa: F401
    except ImportError:
        have_torch = False
    kept = cuts = 0
    for i, (cfg, seq) in enumerate(zip(configs, metrics)):
        oracle = oracle_of(cfg)
        want = oracle.trace(seq)
        if oracle.tight:
            continue
        kept += 1
        cuts += int(np.sum(np.diff(np.concatenate([[1.0], want["scale"]])) < 0))
        context = f"config={cfg} metrics={seq}"
        if have_torch:
            ref = torch_trace(cfg, seq)
            for k in want:
                np.testing.assert_array_equal(want[k], ref[k], err_msg="oracle vs torch: " + context)
        assert_trace_equal(got, i, want, context)
    assert kept >= 0.8 * len(configs)
    assert cuts >= len(configs)  # the sequences exercise many cuts


METRIC_VALUES = st.one_of(
    st.integers(-160, 160).map(lambda k: k / 8),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0]),
)
CONFIGS = st.fixed_dictionaries(dict(
    factor=st.sampled_from([0.1, 0.5, 0.3]),
    patience=st.integers(0, 3),
    cooldown=st.integers(0, 2),
    min_lr=st.sampled_from([0.0, 0.05]),
    eps=st.sampled_from([0.0, 1e-8]),
))


@pytest.mark.parametrize("path", ["report", "value"])
@pytest.mark.parametrize("mode,threshold_mode", MODES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=CONFIGS, threshold=st.sampled_from([0.0, 0.01, 0.25]),
       seq=st.lists(METRIC_VALUES, min_size=16, max_size=16))
def test_matches_transcription_on_any_metric(mode, threshold_mode, path, cfg, threshold, seq):
    """Negative, zero and non-finite metrics included: the transcription with
    the ``|best|`` fix and the non-finite rule is the oracle."""
    cfg = dict(cfg, mode=mode, threshold_mode=threshold_mode, threshold=threshold)
    oracle = oracle_of(cfg)
    want = oracle.trace(seq)
    assume(not oracle.tight)
    got = run_fnopt([cfg], [seq], path)
    assert_trace_equal(got, 0, want, f"config={cfg} metrics={seq}")


# The example from the docs, worked by hand (patience=2, cooldown=1,
# factor=0.5, threshold=1e-4 relative):
#   obs  metric   best    num_bad  cooldown  scale
#    1   10       10      0        0         1
#    2   9        9       0        0         1      (9 < 10 - 10e-4)
#    3-4 9        9       1, 2     0         1
#    5   9        9       3>2: cut -> 0, cd=1   0.5
#    6   9        9       bad 1, in cooldown -> 0, cd 0
#    7-8 9        9       1, 2                 0.5
#    9   8.9999   9       3>2: cut (not < 8.9991)  0.25, cd=1
#   10   8.998    8.998   0 (improves), cooldown -> 0
#  11-12 8.998, 8.9975    1, 2 (bound 8.9971)  0.25
#   13   8.9972   8.998   3>2: cut             0.125
DOC_METRICS = [10, 9, 9, 9, 9, 9, 9, 9, 8.9999, 8.998, 8.998, 8.9975, 8.9972, 8.9979]
DOC_SCALES = [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125]


@pytest.mark.parametrize("path", ["report", "value"])
def test_documented_example_halves_at_5th_9th_13th(path):
    cfg = dict(mode="min", threshold_mode="rel", factor=0.5, patience=2, threshold=1e-4,
               cooldown=1, min_lr=0.0, eps=1e-8)
    got = run_fnopt([cfg], [DOC_METRICS], path)
    np.testing.assert_array_equal(got["scale"][0], DOC_SCALES)
    np.testing.assert_array_equal(got["applied"][0], DOC_SCALES)


def feed(tx, metrics, path="report", params=None):
    params = jnp.ones(2) if params is None else params
    state, scales = tx.init(params), []
    for m in metrics:
        if path == "report":
            state = fnopt.report(state, m)
        else:
            _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, value=m)
        scales.append(float(state.scale))
    return state, scales


@pytest.mark.parametrize("path", ["report", "value"])
def test_first_cut_on_patience_plus_one_and_patience_zero_keeps_cutting(path):
    # patience=3: observations 2..5 do not improve; the 4th of them (5th
    # observation overall, the patience+1-th non-improving one) cuts.
    _, scales = feed(reduce_on_plateau(0.5, patience=3), [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], path)
    assert scales == [1, 1, 1, 1, 0.5, 0.5]
    # patience=0: every non-improving observation cuts; improvements do not.
    _, scales = feed(reduce_on_plateau(0.5, patience=0), [1.0, 2.0, 2.0, 0.5, 0.5, 3.0], path)
    assert scales == [1, 0.5, 0.25, 0.25, 0.125, 0.0625]


def test_negative_metrics_deviate_from_torch_on_purpose():
    # min mode, 10% relative threshold: from best -1.0, torch's bar is
    # -1.0 * 0.9 = -0.9, so -0.95 (worse) "improves"; fnopt's bar is -1.1.
    metrics = [-1.0, -0.95, -0.95, -1.2]
    state, scales = feed(reduce_on_plateau(0.5, patience=0, threshold=0.1), metrics)
    assert scales == [1, 0.5, 0.25, 0.25]  # -1.2 < -1.1 is a real improvement
    assert float(state.best) == pytest.approx(-1.2)
    # max mode, mirror image: from best -1.0, -1.05 is worse.
    _, scales = feed(reduce_on_plateau(0.5, patience=0, threshold=0.1, mode="max"), [-1.0, -1.05, -0.8])
    assert scales == [1, 0.5, 0.5]
    torch_rule = TorchPlateau(factor=0.5, patience=0, threshold=0.1, torch_rule=True)
    assert torch_rule.trace(metrics)["scale"].tolist() == [1, 1, 1, 1]
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    cfg = dict(mode="min", threshold_mode="rel", factor=0.5, patience=0, threshold=0.1,
               cooldown=0, min_lr=0.0, eps=1e-8)
    assert torch_trace(cfg, metrics)["scale"].tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("mode", ["min", "max"])
def test_non_finite_metric_is_never_an_improvement(mode):
    sign = 1.0 if mode == "min" else -1.0
    tx = reduce_on_plateau(0.1, patience=1, mode=mode)
    # nan, +inf, -inf: none improves, none becomes best (torch would take
    # -inf as the best loss / +inf as the best accuracy).
    metrics = [sign * 1.0, math.nan, -sign * math.inf, sign * math.inf, math.nan, sign * 0.5]
    state, scales = feed(tx, metrics)
    np.testing.assert_allclose(scales, [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
    assert float(state.best) == sign * 0.5
    assert int(state.num_bad) == 0
    # A non-finite metric before any finite one leaves best at its start.
    state, _ = feed(tx, [math.nan])
    assert float(state.best) == sign * math.inf


@pytest.mark.parametrize("window", [2, 4])
def test_window_averages_values_before_deciding(window):
    rng = np.random.default_rng(window)
    configs = random_configs(rng, 60, "min", "abs")
    # per-update values whose window means are exact in float32
    values = [[v + d for v in random_metrics(rng, 12) for d in rng.permutation([-0.5, 0.5] * (window // 2))]
              for _ in configs]
    got = run_fnopt(configs, values, "value", window=window)
    for i, (cfg, seq) in enumerate(zip(configs, values)):
        means = np.mean(np.reshape(seq, (-1, window)), axis=1)
        oracle = oracle_of(cfg)
        want = oracle.trace(means)
        if oracle.tight:
            continue
        assert_trace_equal(got, i, want, f"config={cfg} values={seq}", stride=window)
        # between decisions nothing changes
        for k in ("scale", "num_bad", "cooldown"):
            blocks = np.reshape(got[k][i], (-1, window))
            previous = np.concatenate([[1.0 if k == "scale" else 0.0], blocks[:-1, -1]])
            np.testing.assert_array_equal(blocks[:, :-1], np.repeat(previous[:, None], window - 1, 1))


def test_update_without_value_observes_nothing():
    tx = reduce_on_plateau(0.5, patience=0, window=2)
    state = tx.init(jnp.ones(2))
    g = jnp.ones(2)
    _, state = tx.update(g, state, value=1.0)
    _, state = tx.update(g, state)  # no value: no observation, window not advanced
    assert int(state.value_count) == 1
    _, state = tx.update(g, state, value=3.0)  # mean(1, 3) = 2: first observation
    assert float(state.best) == 2.0 and int(state.value_count) == 0
    _, state = tx.update(g, state, value=2.0)
    u, state = tx.update(g, state, value=2.0)  # mean 2: not better -> cut, this update
    np.testing.assert_array_equal(u, [0.5, 0.5])
    u, state = tx.update(g, state)
    np.testing.assert_array_equal(u, [0.5, 0.5])
    assert int(state.count) == 6


def test_metric_must_be_a_scalar():
    tx = reduce_on_plateau()
    state = tx.init(jnp.zeros(2))
    with pytest.raises(ValueError, match=re.escape("`report(opt_state, value)`: the metric must be a scalar, got shape (2,)")):
        fnopt.report(state, jnp.ones(2))
    with pytest.raises(ValueError, match=re.escape("`reduce_on_plateau.update(value=...)`: the metric must be a scalar")):
        tx.update(jnp.zeros(2), state, value=jnp.ones(3))


def test_min_scale_and_eps_bound_the_cuts():
    _, scales = feed(reduce_on_plateau(0.1, patience=0, min_scale=0.05), [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(scales, [1, 0.1, 0.05, 0.05], rtol=1e-6)
    # a cut of 0.25 <= eps=0.3 is skipped, but still starts the cooldown
    # a cut of exactly eps is skipped too (torch: `old_lr - new_lr > eps`)
    _, scales = feed(reduce_on_plateau(0.5, patience=0, eps=0.5), [1.0, 1.0, 1.0])
    assert scales == [1, 1, 1]
    # (cooldown 2: observations 3 and 4 are held; the 5th would cut to 0.25)
    state, scales = feed(reduce_on_plateau(0.5, patience=0, eps=0.3, cooldown=2), [1.0] * 5)
    assert scales == [1, 0.5, 0.5, 0.5, 0.5]
    assert int(state.cooldown_counter) == 2


def test_composes_with_any_schedule_and_reports_the_effective_lr():
    """chain(adam, learning rate schedule, plateau): each update is the one
    without the plateau times the scale (hand-worked below), and
    ``fnopt.hyperparams`` reports ``schedule(t) * scale``."""
    T = fnopt.transforms
    schedule = fnopt.schedules.warmup(0.1, 3, start_value=0.01)
    tx = optax.chain(T.scale_by_adam(), T.scale_by_learning_rate(schedule), reduce_on_plateau(0.5, patience=0))
    ref = optax.chain(T.scale_by_adam(), T.scale_by_learning_rate(schedule))
    params = {"w": jnp.array([1.0, -2.0])}
    state, ref_state = tx.init(params), ref.init(params)
    # losses 3, 2 improve; 2.5 cuts; 1.0 improves; 1.0, 1.0 cut (patience 0)
    expected = [1, 1, 0.5, 0.5, 0.25, 0.125]
    for t, (loss, scale) in enumerate(zip([3.0, 2.0, 2.5, 1.0, 1.0, 1.0], expected)):
        grads = {"w": jnp.array([0.3 * t - 1.0, 0.5])}
        u, state = tx.update(grads, state, params, value=loss)
        r, ref_state = ref.update(grads, ref_state, params)
        np.testing.assert_allclose(u["w"], scale * np.asarray(r["w"]), rtol=1e-6)
        hp = fnopt.hyperparams(state)
        assert float(hp["plateau_scale"]) == scale
        assert float(hp["effective_learning_rate"]) == pytest.approx(scale * float(schedule(t)), rel=1e-6)


def test_report_finds_every_state_at_any_depth():
    plateau = reduce_on_plateau(0.5, patience=0)
    tx = optax.multi_transform(
        {"a": optax.chain(optax.sgd(0.1), optax.chain(plateau)), "b": optax.chain(plateau, optax.identity())},
        {"x": "a", "y": "b"},
    )
    params = {"x": jnp.ones(2), "y": jnp.ones(3)}
    state = fnopt.report(fnopt.report(tx.init(params), 1.0), 1.0)
    u, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    np.testing.assert_allclose(u["x"], -0.05 * np.ones(2), rtol=1e-6)
    np.testing.assert_array_equal(u["y"], 0.5 * np.ones(3))
    with pytest.raises(ValueError, match=r"`report\(opt_state, ...\)`.*no `reduce_on_plateau`"):
        fnopt.report(optax.sgd(0.1).init(params), 1.0)


def test_jit_traces_once_across_traced_hyperparameters():
    import chex

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(patience, factor, metrics):
        tx = reduce_on_plateau(factor, patience)
        state = tx.init(jnp.zeros(3))
        state = jax.lax.fori_loop(0, metrics.shape[0], lambda i, s: fnopt.report(s, metrics[i]), state)
        return state.scale

    metrics = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0])
    assert float(run(0, 0.5, metrics)) == 0.0625
    assert float(run(2, 0.5, metrics)) == 0.5
    assert float(run(1, 0.25, metrics)) == 0.0625


def test_vmapped_patience_sweep_matches_the_oracle():
    metrics = [5.0, 4.0, 4.0, 4.5, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    patiences = [0, 1, 2, 3, 5]

    def run(patience):
        tx = reduce_on_plateau(0.5, patience, cooldown=1)
        state = tx.init(jnp.zeros(2))

        def body(s, v):
            u, s = tx.update(jnp.ones(2), s, value=v)
            return s, u[0]

        return jax.lax.scan(body, state, jnp.asarray(metrics))[1]

    got = jax.jit(jax.vmap(run))(jnp.asarray(patiences))
    for i, p in enumerate(patiences):
        want = TorchPlateau(factor=0.5, patience=p, cooldown=1).trace(metrics)["scale"]
        np.testing.assert_array_equal(got[i], want)
    assert len({tuple(np.asarray(row)) for row in got}) == len(patiences)


def test_schedule_as_hyperparameter():
    # factor 0.5 for the first two updates, then 0.1
    tx = reduce_on_plateau(lambda t: jnp.where(t < 2, 0.5, 0.1), patience=0)
    state = tx.init(jnp.zeros(1))
    scales = []
    for v in [1.0, 1.0, 1.0, 1.0]:
        u, state = tx.update(jnp.ones(1), state, value=v)
        scales.append(float(u[0]))
    np.testing.assert_allclose(scales, [1, 0.5, 0.05, 0.005], rtol=1e-6)


def test_dtypes(x64_enabled):
    tx = reduce_on_plateau(0.5, patience=0)
    params = {"w": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
    state = tx.init(params)
    f = jnp.float64 if x64_enabled else jnp.float32
    assert state.scale.dtype == state.best.dtype == state.value_sum.dtype == f
    for field in (state.count, state.num_bad, state.cooldown_counter, state.value_count):
        assert field.dtype == jnp.int32
    state = fnopt.report(fnopt.report(state, jnp.float32(1.0)), jnp.float32(1.0))
    u, state = tx.update(params, state, params, value=jnp.asarray(2.0, jnp.bfloat16))
    assert u["w"].dtype == jnp.bfloat16 and u["b"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(u["w"], np.float32), 0.25 * np.ones(3))
    assert jax.tree.map(lambda x: x.dtype, state) == jax.tree.map(lambda x: x.dtype, tx.init(params))


INVALID = [
    (dict(factor=1.5), "factor", "in (0, 1)"),
    (dict(factor=1.0), "factor", "in (0, 1)"),
    (dict(factor=0.0), "factor", "in (0, 1)"),
    (dict(patience=-1), "patience", ">= 0"),
    (dict(patience=2.5), "patience", "integer"),
    (dict(threshold=-1e-3), "threshold", ">= 0"),
    (dict(cooldown=-2), "cooldown", ">= 0"),
    (dict(min_scale=-0.1), "min_scale", ">= 0"),
    (dict(eps=-1.0), "eps", ">= 0"),
    (dict(window=0), "window", ">= 1"),
    (dict(window=1.5), "window", "integer"),
    (dict(mode="minimum"), "mode", "one of 'min', 'max'"),
    (dict(threshold_mode="relative"), "threshold_mode", "one of 'rel', 'abs'"),
    (dict(factor="0.1"), "factor", "number"),
    (dict(threshold=math.nan), "threshold", "finite"),
]


@pytest.mark.parametrize("kwargs,name,message", INVALID)
def test_invalid_arguments_raise(kwargs, name, message):
    with pytest.raises(ValueError, match=rf"`reduce_on_plateau\({name}=\.\.\.\)` must be .*{re.escape(message)}"):
        reduce_on_plateau(**kwargs)
