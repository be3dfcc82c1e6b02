"""Step-for-step parity with ``torch.optim`` (optimizers and the LR /
momentum schedulers driving them), on a problem whose gradients depend on the
params. Runs torch in float64 when the suite runs with x64, else in float32."""

import numpy as np
import pytest
from transforms_problem import A, B0, N, W0, X64, Y, assert_close, run_fnopt

import fnopt
from fnopt import schedules

torch = pytest.importorskip("torch")
optim = torch.optim
lr_scheduler = torch.optim.lr_scheduler

STEPS = 40
TORCH_DTYPE = torch.float64 if X64 else torch.float32


def run_torch(make_opt, make_sched=None, steps=STEPS):
    w = torch.tensor(W0, dtype=TORCH_DTYPE, requires_grad=True)
    b = torch.tensor(B0, dtype=TORCH_DTYPE, requires_grad=True)
    a, y = torch.tensor(A, dtype=TORCH_DTYPE), torch.tensor(Y, dtype=TORCH_DTYPE)
    opt = make_opt([w, b])
    sched = make_sched(opt) if make_sched else None
    out = []
    for t in range(steps):
        opt.zero_grad()
        x = torch.cat([w, b])
        r = a @ x - y
        (r @ r / (2 * N) + 0.025 * torch.sum(x**4)).backward()
        opt.step()
        if sched is not None and t + 1 < steps:
            sched.step()
        out.append(torch.cat([w, b]).detach().numpy().astype(np.float64))
    return np.stack(out)


OPTIMIZERS = {
    "sgd": (lambda: fnopt.sgd(0.1), lambda p: optim.SGD(p, lr=0.1)),
    "sgd-momentum": (lambda: fnopt.sgd(0.05, 0.9), lambda p: optim.SGD(p, lr=0.05, momentum=0.9)),
    "sgd-nesterov-wd": (
        lambda: fnopt.sgd(0.05, 0.9, nesterov=True, weight_decay=0.1),
        lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    ),
    "sgd-dampening-wd": (
        lambda: fnopt.sgd(0.05, 0.8, dampening=0.5, weight_decay=0.2),
        lambda p: optim.SGD(p, lr=0.05, momentum=0.8, dampening=0.5, weight_decay=0.2),
    ),
    "adam": (lambda: fnopt.adam(0.05), lambda p: optim.Adam(p, lr=0.05)),
    "adam-amsgrad": (
        lambda: fnopt.adam(0.05, b2=0.9, amsgrad=True),
        lambda p: optim.Adam(p, lr=0.05, betas=(0.9, 0.9), amsgrad=True),
    ),
    "adam-wd": (lambda: fnopt.adam(0.05, weight_decay=0.1), lambda p: optim.Adam(p, lr=0.05, weight_decay=0.1)),
    "adam-amsgrad-wd-eps": (
        lambda: fnopt.adam(0.05, 0.8, 0.95, 1e-2, amsgrad=True, weight_decay=0.1),
        lambda p: optim.Adam(p, lr=0.05, betas=(0.8, 0.95), eps=1e-2, amsgrad=True, weight_decay=0.1),
    ),
    "adamw": (lambda: fnopt.adamw(0.05), lambda p: optim.AdamW(p, lr=0.05)),
    "adamw-amsgrad-wd": (
        lambda: fnopt.adamw(0.05, b2=0.9, weight_decay=0.5, amsgrad=True),
        lambda p: optim.AdamW(p, lr=0.05, betas=(0.9, 0.9), weight_decay=0.5, amsgrad=True),
    ),
    "radam": (lambda: fnopt.radam(0.05), lambda p: optim.RAdam(p, lr=0.05)),
    "radam-wd-b2": (
        lambda: fnopt.radam(0.05, 0.8, 0.99, 1e-2, weight_decay=0.1),
        lambda p: optim.RAdam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-2, weight_decay=0.1),
    ),
    "adagrad": (lambda: fnopt.adagrad(0.1), lambda p: optim.Adagrad(p, lr=0.1)),
    "adagrad-init-wd-lr_decay": (
        lambda: fnopt.adagrad(lambda t: 0.1 / (1 + t.astype(float) * 0.05), 0.5, 1e-1, weight_decay=0.1),
        lambda p: optim.Adagrad(p, lr=0.1, lr_decay=0.05, initial_accumulator_value=0.5, eps=1e-1, weight_decay=0.1),
    ),
    "rmsprop": (lambda: fnopt.rmsprop(0.01), lambda p: optim.RMSprop(p, lr=0.01)),
    "rmsprop-centered": (
        lambda: fnopt.rmsprop(0.01, 0.9, centered=True),
        lambda p: optim.RMSprop(p, lr=0.01, alpha=0.9, centered=True),
    ),
    "rmsprop-momentum-wd": (
        lambda: fnopt.rmsprop(0.01, momentum=0.8, weight_decay=0.1),
        lambda p: optim.RMSprop(p, lr=0.01, momentum=0.8, weight_decay=0.1),
    ),
    "rmsprop-centered-momentum": (
        lambda: fnopt.rmsprop(0.005, 0.95, 1e-2, 0.9, centered=True),
        lambda p: optim.RMSprop(p, lr=0.005, alpha=0.95, eps=1e-2, momentum=0.9, centered=True),
    ),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_matches_torch_optimizer(name):
    make_fnopt, make_torch = OPTIMIZERS[name]
    expected = run_torch(make_torch)
    assert_close(run_fnopt(make_fnopt(), STEPS), expected)


T = STEPS
SCHEDULED = {
    "sgd-one_cycle-momentum": (
        lambda: fnopt.sgd(schedules.one_cycle(0.1, T), momentum=schedules.one_cycle_momentum(T)),
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
        lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=T),
    ),
    "sgd-nesterov-one_cycle-three_phase-linear": (
        lambda: fnopt.sgd(
            schedules.one_cycle(0.1, T, pct_start=0.25, anneal="linear", three_phase=True),
            momentum=schedules.one_cycle_momentum(T, 0.25, 0.8, 0.9, anneal="linear", three_phase=True),
            nesterov=True,
        ),
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        lambda o: lr_scheduler.OneCycleLR(
            o, 0.1, total_steps=T, pct_start=0.25, anneal_strategy="linear",
            three_phase=True, base_momentum=0.8, max_momentum=0.9,
        ),
    ),
    "adam-one_cycle-b1": (
        lambda: fnopt.adam(schedules.one_cycle(0.05, T, div_factor=10.0), b1=schedules.one_cycle_momentum(T)),
        lambda p: optim.Adam(p, lr=0.05),
        lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=T, div_factor=10.0),
    ),
    "adamw-one_cycle-b1": (
        lambda: fnopt.adamw(schedules.one_cycle(0.05, T), b1=schedules.one_cycle_momentum(T, base_value=0.8), weight_decay=0.1),
        lambda p: optim.AdamW(p, lr=0.05, weight_decay=0.1),
        lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=T, base_momentum=0.8),
    ),
    "rmsprop-one_cycle-momentum": (
        lambda: fnopt.rmsprop(schedules.one_cycle(0.01, T), momentum=schedules.one_cycle_momentum(T)),
        lambda p: optim.RMSprop(p, lr=0.01, momentum=0.9),
        lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.01, total_steps=T),
    ),
    "sgd-cyclic-momentum-triangular2": (
        lambda: fnopt.sgd(
            schedules.cyclic(0.01, 0.1, step_size_up=5, mode="triangular2"),
            momentum=schedules.cyclic_momentum(0.8, 0.9, step_size_up=5, mode="triangular2"),
        ),
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
        lambda o: lr_scheduler.CyclicLR(
            o, 0.01, 0.1, step_size_up=5, mode="triangular2", base_momentum=0.8, max_momentum=0.9
        ),
    ),
    "sgd-cyclic-momentum-exp_range": (
        lambda: fnopt.sgd(
            schedules.cyclic(0.01, 0.1, step_size_up=4, step_size_down=7, mode="exp_range", gamma=0.97),
            momentum=schedules.cyclic_momentum(0.8, 0.9, 4, 7, mode="exp_range", gamma=0.97),
        ),
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
        lambda o: lr_scheduler.CyclicLR(
            o, 0.01, 0.1, step_size_up=4, step_size_down=7, mode="exp_range", gamma=0.97,
            base_momentum=0.8, max_momentum=0.9,
        ),
    ),
    "adam-cyclic-b1": (
        lambda: fnopt.adam(schedules.cyclic(0.005, 0.05, 6), b1=schedules.cyclic_momentum(0.8, 0.9, 6)),
        lambda p: optim.Adam(p, lr=0.05),
        lambda o: lr_scheduler.CyclicLR(o, 0.005, 0.05, step_size_up=6, base_momentum=0.8, max_momentum=0.9),
    ),
    "sgd-cosine_warm_restarts": (
        lambda: fnopt.sgd(schedules.cosine_warm_restarts(0.1, 5, 2, min_value=0.001), momentum=0.9),
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=0.001),
    ),
}


@pytest.mark.parametrize("name", SCHEDULED)
def test_matches_torch_with_scheduler(name):
    make_fnopt, make_torch, make_sched = SCHEDULED[name]
    expected = run_torch(make_torch, make_sched)
    assert_close(run_fnopt(make_fnopt(), STEPS), expected)


def test_scheduled_runs_differ_from_constant_ones():
    # The scheduler cases would not pass by accident with the schedule ignored.
    scheduled = run_torch(lambda p: optim.Adam(p, lr=0.05), lambda o: lr_scheduler.OneCycleLR(o, 0.05, total_steps=T))
    constant = run_torch(lambda p: optim.Adam(p, lr=0.05))
    assert np.max(np.abs(scheduled - constant)) > 1e-2
