"""fnopt.schedules against real ``torch.optim.lr_scheduler`` objects.

Each torch scheduler drives an optimizer for thousands of steps; the learning
rate (and momentum / Adam's beta1) it sets before step ``t`` must equal the
fnopt schedule at ``t``. torch is an optional oracle: the module is skipped
without it. Where fnopt deliberately differs (it holds its final value past
``total_steps``, finds SGDR periods exactly) the difference is tested too.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnopt import schedules

torch = pytest.importorskip("torch")
L = torch.optim.lr_scheduler

pytestmark = [
    # The traces step the scheduler without training; torch warns about that.
    pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning"),
    # SequentialLR / SGDR(epoch) use the deprecated epoch argument internally.
    pytest.mark.filterwarnings("ignore:The epoch parameter in `scheduler.step\\(\\)`:UserWarning"),
]

X64 = bool(jax.config.jax_enable_x64)
RTOL = 1e-9 if X64 else 1e-5
ATOL = 1e-12 if X64 else 1e-8  # times the largest value of the trace

# The largest relative error per torch scheduler (values below 1e-4 of the
# trace's scale measured against that floor); ``FNOPT_TORCH_ERRORS=path``
# writes them to ``path`` as JSON.
MAX_REL_ERR: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_errors():
    yield
    path = os.environ.get("FNOPT_TORCH_ERRORS")
    if path:
        with open(path, "w") as f:
            json.dump({"x64": X64, "max_rel_err": MAX_REL_ERR}, f, indent=1, sort_keys=True)


def make_optimizer(kind="sgd", lr=1.0):
    param = torch.nn.Parameter(torch.zeros(1))
    if kind == "adam":
        return torch.optim.Adam([param], lr=lr)
    return torch.optim.SGD([param], lr=lr, momentum=0.9)


def trace(make_scheduler, n, kind="sgd", lr=1.0):
    """(lr, momentum) in effect for updates 0 .. n-1 of a torch optimizer."""
    opt = make_optimizer(kind, lr)
    sched = make_scheduler(opt)
    lrs, moms = [], []
    for _ in range(n):
        group = opt.param_groups[0]
        lrs.append(float(group["lr"]))
        moms.append(float(group["betas"][0] if kind == "adam" else group["momentum"]))
        sched.step()
    return np.array(lrs), np.array(moms)


def fnopt_trace(schedule, steps):
    """``schedule(steps)`` as float64; steps padded to 4096 so that the eager
    ops compile for one shape per dtype."""
    steps = np.asarray(steps)
    n = len(steps)
    padded = np.concatenate([steps, np.zeros(max(4096, n) - n, steps.dtype)])
    return np.asarray(schedule(jnp.asarray(padded)), dtype=np.float64)[:n]


def check(name, schedule, want, steps=None):
    steps = np.arange(len(want), dtype=np.int32) if steps is None else steps
    got = fnopt_trace(schedule, steps)
    scale = float(np.max(np.abs(want)))
    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-4 * scale)
    MAX_REL_ERR[name] = max(MAX_REL_ERR.get(name, 0.0), float(np.max(rel)))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * scale, err_msg=name)


# ------------------------------------------------------------------ monotone


@pytest.mark.parametrize("lr,step_size,gamma", [(1.0, 30, 0.1), (0.5, 7, 0.9), (0.1, 1, 0.99), (3e-4, 250, 0.5)])
def test_step_lr(lr, step_size, gamma):
    want, _ = trace(lambda o: L.StepLR(o, step_size, gamma), 3000, lr=lr)
    check("StepLR", schedules.step_decay(lr, step_size, gamma), want)


@pytest.mark.parametrize(
    "milestones,gamma",
    [([100, 300, 300, 1000], 0.5), ([10, 20], 0.1), ([2000, 5, 700, 5, 5], 0.8), ([0, 1], 0.3)],
)
def test_multistep_lr(milestones, gamma):
    want, _ = trace(lambda o: L.MultiStepLR(o, milestones, gamma), 3000, lr=0.2)
    check("MultiStepLR", schedules.multistep_decay(0.2, milestones, gamma), want)


@pytest.mark.parametrize("gamma", [0.999, 0.99, 0.9995, 1.0])
def test_exponential_lr(gamma):
    want, _ = trace(lambda o: L.ExponentialLR(o, gamma), 4000, lr=0.1)
    check("ExponentialLR", schedules.exponential_decay(0.1, gamma), want)


@pytest.mark.parametrize("total,power", [(1000, 1.0), (500, 2.0), (777, 0.5), (2500, 3.0)])
def test_polynomial_lr(total, power):
    # torch holds 0 after total_iters, as fnopt does: compare past the end too.
    want, _ = trace(lambda o: L.PolynomialLR(o, total, power), 3000, lr=0.5)
    check("PolynomialLR", schedules.polynomial_decay(0.5, total, power), want)


@pytest.mark.parametrize(
    "start,end,total", [(1 / 3, 1.0, 5), (1e-3, 1.0, 1000), (1.0, 0.05, 2000), (0.5, 0.5, 10), (0.01, 0.1, 333)]
)
def test_linear_lr(start, end, total):
    lr = 0.3
    want, _ = trace(lambda o: L.LinearLR(o, start, end, total), 3000, lr=lr)
    check("LinearLR", schedules.linear(lr * start, lr * end, total), want)


@pytest.mark.parametrize("t_max,eta_min", [(100, 0.0), (1000, 1e-3), (2999, 0.0), (37, 0.05)])
def test_cosine_annealing_lr(t_max, eta_min):
    want, _ = trace(lambda o: L.CosineAnnealingLR(o, t_max, eta_min), t_max + 1, lr=0.1)
    check("CosineAnnealingLR", schedules.cosine_decay(0.1, t_max, eta_min), want)


def test_cosine_annealing_holds_where_torch_rises():
    t_max = 50
    want, _ = trace(lambda o: L.CosineAnnealingLR(o, t_max, 0.01), 3 * t_max, lr=0.1)
    got = fnopt_trace(schedules.cosine_decay(0.1, t_max, 0.01), np.arange(3 * t_max))
    assert want[t_max + 10] > 0.011  # torch starts the next half-period
    np.testing.assert_allclose(got[t_max:], 0.01, rtol=RTOL)


# ------------------------------------------------------------------ SGDR


@pytest.mark.parametrize(
    "t0,mult,eta_min", [(10, 1, 0.0), (10, 2, 1e-4), (1, 3, 0.0), (7, 2, 0.01), (50, 1, 1e-3), (2, 4, 0.0), (1, 2, 0.0)]
)
def test_cosine_warm_restarts_integer_steps(t0, mult, eta_min):
    # torch's step() without an epoch counts T_cur incrementally: exact.
    want, _ = trace(lambda o: L.CosineAnnealingWarmRestarts(o, t0, mult, eta_min), 5000, lr=0.1)
    check("CosineAnnealingWarmRestarts", schedules.cosine_warm_restarts(0.1, t0, mult, eta_min), want)


@pytest.mark.parametrize("t0,mult", [(10, 1), (10, 2), (1, 3), (3, 3), (2, 2), (5, 4), (1, 1)])
def test_cosine_warm_restarts_fractional_epochs(t0, mult):
    """``scheduler.step(epoch)`` with fractional epochs, compared wherever
    torch's rounded logarithm found the right period (0 <= T_cur < T_i)."""
    rng = np.random.default_rng(t0 * 10 + mult)
    dtype = np.float64 if X64 else np.float32
    epochs = np.concatenate([rng.uniform(0, 3000, 2000), np.arange(0, 200, 0.125)]).astype(dtype)
    opt = make_optimizer()
    sched = L.CosineAnnealingWarmRestarts(opt, t0, mult, 1e-3)
    want, keep = [], []
    for epoch in epochs.astype(np.float64):
        sched.step(float(epoch))
        want.append(opt.param_groups[0]["lr"])
        keep.append(0 <= sched.T_cur < sched.T_i)
    keep = np.array(keep)
    assert keep.mean() > 0.95
    check(
        "CosineAnnealingWarmRestarts(epoch)",
        schedules.cosine_warm_restarts(1.0, t0, mult, 1e-3),
        np.array(want)[keep],
        epochs[keep],
    )


def test_cosine_warm_restarts_where_torch_picks_the_wrong_period():
    # T_0=1, T_mult=3: restarts at 1, 4, 13, 40, 121, 364. torch's
    # int(log(121 * 2 + 1, 3)) = 4 puts epoch 121 at the end of period 4.
    opt = make_optimizer()
    sched = L.CosineAnnealingWarmRestarts(opt, 1, 3, 0.0)
    sched.step(121)
    assert sched.T_cur >= sched.T_i  # torch is wrong here
    assert opt.param_groups[0]["lr"] < 1e-3
    assert float(schedules.cosine_warm_restarts(1.0, 1, 3)(121)) == 1.0
    # Stepping one at a time torch gets there right, and agrees with fnopt.
    want, _ = trace(lambda o: L.CosineAnnealingWarmRestarts(o, 1, 3), 400)
    assert want[121] == 1.0
    check("CosineAnnealingWarmRestarts", schedules.cosine_warm_restarts(1.0, 1, 3), want)


# ------------------------------------------------------------------ one-cycle

ONE_CYCLE = [
    # total, pct_start, anneal, div_factor, final_div_factor, three_phase
    (1000, 0.3, "cos", 25.0, 1e4, False),
    (3000, 0.25, "cos", 10.0, 100.0, False),
    (2000, 0.4, "linear", 25.0, 1e4, False),
    (1000, 0.1, "cos", 1e3, 1.0, False),
    (2000, 0.3, "cos", 25.0, 1e4, True),
    (1500, 0.45, "linear", 5.0, 50.0, True),
    (997, 0.33, "cos", 25.0, 1e4, False),
    (10, 0.5, "linear", 25.0, 1e4, False),
]


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("total,pct,anneal,div,final_div,three_phase", ONE_CYCLE)
def test_one_cycle_lr_and_momentum(total, pct, anneal, div, final_div, three_phase, kind):
    max_lr = 0.4
    want_lr, want_mom = trace(
        lambda o: L.OneCycleLR(
            o,
            max_lr,
            total_steps=total,
            pct_start=pct,
            anneal_strategy=anneal,
            div_factor=div,
            final_div_factor=final_div,
            three_phase=three_phase,
            base_momentum=0.8,
            max_momentum=0.97,
        ),
        total,  # torch raises past total_steps
        kind,
    )
    lr = schedules.one_cycle(max_lr, total, pct, anneal, div, final_div, three_phase)
    mom = schedules.one_cycle_momentum(total, pct, 0.8, 0.97, anneal, three_phase)
    check("OneCycleLR", lr, want_lr)
    check("OneCycleLR momentum", mom, want_mom)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_holds_where_torch_extrapolates(anneal, three_phase):
    total = 100
    opt = make_optimizer()
    sched = L.OneCycleLR(opt, 1.0, total_steps=total, anneal_strategy=anneal, three_phase=three_phase)
    for _ in range(total):
        sched.step()
    torch_at_total = opt.param_groups[0]["lr"]  # one step past the cycle
    with pytest.raises(ValueError):
        sched.step()
    lr = schedules.one_cycle(1.0, total, anneal=anneal, three_phase=three_phase)
    mom = schedules.one_cycle_momentum(total, anneal=anneal, three_phase=three_phase)
    final = float(lr(total - 1))
    assert final == pytest.approx(1.0 / 25 / 1e4, rel=RTOL)
    assert torch_at_total != pytest.approx(final, rel=1e-3)  # torch moved on
    after = np.array([total, total + 0.5, 2 * total, 10**6, 2**31 - 1])
    np.testing.assert_array_equal(fnopt_trace(lr, after), final)
    np.testing.assert_allclose(fnopt_trace(mom, after), 0.95, rtol=RTOL)


# ------------------------------------------------------------------ CyclicLR

CYCLIC = [
    # base, max, up, down, mode, gamma
    (1e-3, 1e-2, 200, None, "triangular", 1.0),
    (0.1, 1.0, 150, 350, "triangular", 1.0),
    (0.1, 1.0, 150, 350, "triangular2", 1.0),
    (0.01, 0.5, 100, None, "triangular2", 1.0),
    (0.1, 1.0, 100, 40, "exp_range", 0.9995),
    (1e-4, 1e-2, 250, None, "exp_range", 0.99994),
    (0.1, 1.0, 333, 1, "triangular", 1.0),
]


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("base,high,up,down,mode,gamma", CYCLIC)
def test_cyclic_lr_and_momentum(base, high, up, down, mode, gamma, kind):
    want_lr, want_mom = trace(
        lambda o: L.CyclicLR(
            o,
            base,
            high,
            step_size_up=up,
            step_size_down=down,
            mode=mode,
            gamma=gamma,
            base_momentum=0.8,
            max_momentum=0.9,
        ),
        4000,
        kind,
    )
    check("CyclicLR", schedules.cyclic(base, high, up, down, mode, gamma), want_lr)
    check("CyclicLR momentum", schedules.cyclic_momentum(0.8, 0.9, up, down, mode, gamma), want_mom)


# ------------------------------------------------------------------ SequentialLR

SEQUENTIAL = [
    (
        lambda o: [L.LinearLR(o, 0.1, total_iters=10), L.ExponentialLR(o, 0.99)],
        [10],
        lambda lr: [schedules.linear(0.1 * lr, lr, 10), schedules.exponential_decay(lr, 0.99)],
    ),
    (
        lambda o: [L.LinearLR(o, 0.01, total_iters=100), L.StepLR(o, 30, 0.5), L.CosineAnnealingLR(o, 1100, 1e-4)],
        [100, 400],
        lambda lr: [
            schedules.linear(0.01 * lr, lr, 100),
            schedules.step_decay(lr, 30, 0.5),
            schedules.cosine_decay(lr, 1100, 1e-4),
        ],
    ),
    (
        lambda o: [L.ExponentialLR(o, 0.999), L.MultiStepLR(o, [50, 50, 120], 0.3), L.PolynomialLR(o, 300, 2.0)],
        [700, 900],
        lambda lr: [
            schedules.exponential_decay(lr, 0.999),
            schedules.multistep_decay(lr, [50, 50, 120], 0.3),
            schedules.polynomial_decay(lr, 300, 2.0),
        ],
    ),
    (
        lambda o: [L.CosineAnnealingLR(o, 200, 0.0), L.CosineAnnealingWarmRestarts(o, 50, 2, 1e-3)],
        [200],
        lambda lr: [schedules.cosine_decay(lr, 200), schedules.cosine_warm_restarts(lr, 50, 2, 1e-3)],
    ),
]


@pytest.mark.parametrize("parts,milestones,ours", SEQUENTIAL)
def test_sequential_lr(parts, milestones, ours):
    lr = 0.05
    want, _ = trace(lambda o: L.SequentialLR(o, parts(o), milestones), 1500, lr=lr)
    check("SequentialLR", schedules.join(ours(lr), milestones), want)


def test_chained_scheduler_is_multiply():
    want, _ = trace(lambda o: L.ChainedScheduler([L.ExponentialLR(o, 0.999), L.StepLR(o, 100, 0.5)]), 2000, lr=0.1)
    ours = schedules.multiply(0.1, schedules.exponential_decay(1.0, 0.999), schedules.step_decay(1.0, 100, 0.5))
    check("ChainedScheduler", ours, want)
