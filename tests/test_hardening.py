"""Bad input everywhere (issue 7): every public factory against random
invalid and valid hyperparameters, and wrong-structure inputs.

One table, ``SPECS``, says for every schedule, transform, alias and
``lr_find`` which arguments it takes, which values are valid and which are
not (ranges from the docstrings and the ``check_*`` calls). From it:

* invalid concrete values raise ``ValueError`` at construction, and the
  message names the factory and the argument (`` `adam(b1=...)` must ... ``);
* valid values are accepted; schedules are finite at random steps in
  ``[0, 2**31)`` (int32 and float steps); transforms and aliases, built from
  *traced* hyperparameters inside one jitted function per factory (so the
  examples only change array values, not the compiled code), give finite
  updates and states over a few steps on a small params dict.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sweeps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fnopt
from fnopt import schedules as S
from fnopt import transforms as T

X64 = bool(jax.config.jax_enable_x64)
FLOAT = np.float64 if X64 else np.float32
WIDTH = 64 if X64 else 32
NAN, INF = float("nan"), float("inf")
INT32_MAX = 2**31 - 1

INVALID_SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
SCHEDULE_SETTINGS = settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
RUN_SETTINGS = settings(
    max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# ------------------------------------------------------------------ values


def _f(x: float) -> float:
    """``x`` rounded to the default float dtype."""
    return float(FLOAT(x))


def reals(lo: float, hi: float, *, exclude_max: bool = False) -> st.SearchStrategy:
    """Floats of the default dtype in ``[lo, hi]``; magnitudes below 1e-30
    become 0 (XLA on CPU flushes subnormals)."""
    return st.floats(_f(lo), _f(hi), width=WIDTH, exclude_max=exclude_max).map(
        lambda x: 0.0 if abs(x) < 1e-30 else x
    )


def counts(lo: float, hi: int) -> st.SearchStrategy:
    """Step counts: Python ints or (fractional) floats."""
    return st.one_of(st.integers(max(1, math.ceil(lo)), hi), reals(max(lo, 1e-3), float(hi)))


VALUES = reals(-1e3, 1e3)  # a schedule's start / end / peak value
NOT_A_NUMBER = st.sampled_from(
    ["0.1", "abc", b"1", None, object(), {"a": "x"}, ["0.5"], (1.0, "x"), 1 + 2j, np.complex64(1.0),
     True, False, np.bool_(True), np.array(False)]
)
NONFINITE = st.sampled_from(
    [NAN, INF, -INF, np.float32("nan"), np.array([1.0, NAN])] + ([] if X64 else [1e39, -1e39])
)
BAD_NUMBER = st.one_of(NOT_A_NUMBER, NONFINITE)


def no_none(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """For arguments where ``None`` is valid (``baseline``, ``step_size_down``)."""
    return strategy.filter(lambda v: v is not None)

_ONE_UP = float(np.nextafter(FLOAT(1.0), FLOAT(2.0)))


def outside(lo=None, hi=None, *, lo_open=False, hi_open=False) -> st.SearchStrategy:
    """Finite numbers outside the interval (as seen in the default float
    dtype), alone or as one element of an array, plus non-numbers."""
    parts = []
    if lo is not None:
        below = (
            st.floats(max_value=lo, width=WIDTH, allow_nan=False, allow_infinity=False)
            if lo_open
            else st.floats(max_value=_f(lo - max(1e-6, abs(lo) * 1e-6)), width=WIDTH, allow_nan=False, allow_infinity=False)
        )
        parts.append(below.filter(lambda x: not lo_open or x <= lo))
    if hi is not None:
        start = hi if hi_open else (_ONE_UP if hi == 1 else hi * (1 + 1e-6) + 1e-6)
        parts.append(st.floats(min_value=_f(start), width=WIDTH, allow_nan=False, allow_infinity=False))
    bad = st.one_of(*parts)
    return st.one_of(bad, bad.map(lambda x: np.array([lo if lo is not None else hi, x])), BAD_NUMBER)


def integers_outside(low: int) -> st.SearchStrategy:
    """Invalid counts that must be integers >= ``low``."""
    non_integer = reals(0.0, 1e3).filter(lambda x: x != math.floor(x))
    return st.one_of(st.integers(max_value=low - 1), non_integer, BAD_NUMBER)


def choices_outside(options) -> st.SearchStrategy:
    return st.sampled_from(["", "MIN", "cosine", "triangle", "exp", "relative", None, 1, True]).filter(
        lambda x: x not in options
    )


# --------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class Arg:
    valid: st.SearchStrategy
    invalid: st.SearchStrategy | None = None  # None: nothing to break (a flag)
    required: bool = False
    static: bool = False  # a string / bool / structure: never passed traced


def num(lo=None, hi=None, *, lo_open=False, hi_open=False, valid=None, required=False) -> Arg:
    """A numeric hyperparameter in an interval; ``valid`` defaults to values
    inside it of moderate size."""
    if valid is None:
        a = lo if lo is not None else -1e3
        b = hi if hi is not None else (a + 1e3 if lo is not None else 1e3)
        valid = reals(a, b, exclude_max=hi_open).filter(lambda x: (x > a) if lo_open else True)
    return Arg(valid, outside(lo, hi, lo_open=lo_open, hi_open=hi_open), required)


def value(required=False) -> Arg:
    """Any finite number (a schedule's start / end value, a baseline)."""
    return Arg(VALUES, BAD_NUMBER, required)


def choice(options) -> Arg:
    return Arg(st.sampled_from(options), choices_outside(options), static=True)


def flag() -> Arg:
    return Arg(st.booleans(), None, static=True)


def int_count(low: int, hi: int = 20) -> Arg:
    return Arg(st.integers(low, hi), integers_outside(low))


COS = S.cosine_decay(1.0, 100)
SCHEDULE_VALUES = st.one_of(
    st.sampled_from([COS, S.exponential_decay(0.5, 0.99), S.linear(0.0, 1.0, 10)]), VALUES
)
BAD_SCHEDULE = st.sampled_from(["cos", None, NAN, INF, object(), {"a": 1.0}, [COS]])
INNER = fnopt.sgd(0.1, momentum=0.9)
BAD_INNER = st.sampled_from(["sgd", None, 0.1, object(), fnopt.sgd, (INNER,)])


@dataclasses.dataclass(frozen=True)
class Spec:
    factory: Callable[..., Any]
    args: dict[str, Arg]
    # (argument named in the message, strategy of overrides) for invalid
    # combinations of individually valid values.
    combos: tuple[tuple[str, st.SearchStrategy], ...] = ()
    fix: Callable[[dict], dict] = lambda kw: kw  # make drawn valid values jointly valid


def _join(schedules, boundaries):
    return S.join(schedules, boundaries)


def _multiply(schedules):
    return S.multiply(*schedules)


def _with_adamw(muon):
    """Muon takes matrices only: the run's vector goes to AdamW (the
    documented recipe)."""
    return optax.partition({"muon": muon, "adamw": fnopt.adamw()}, fnopt.muon_labels)


def _nesterov_ok(kw):
    if kw.get("nesterov"):
        kw["dampening"] = 0.0
        if not kw.get("momentum"):
            kw["momentum"] = 0.5
    return kw


NESTEROV_COMBOS = (
    ("nesterov", st.just({"nesterov": True, "momentum": 0.0})),
    ("nesterov", reals(0.01, 1.0).map(lambda d: {"nesterov": True, "momentum": 0.9, "dampening": d})),
)

BETA = num(0.0, 1.0, hi_open=True)
UNIT = num(0.0, 1.0)
NONNEG = num(0.0, valid=reals(0.0, 10.0))
LR = NONNEG
EPS = num(0.0, valid=reals(1e-8, 1.0))  # eps = 0 with a zero gradient is 0/0 (as in torch)
MUON_ARGS = {
    "momentum": BETA,
    "nesterov": flag(),
    "eps": num(0.0, valid=reals(0.0, 1.0)),
    "ns_steps": int_count(0, 8),
    "adjust_lr_fn": choice((None, "original", "match_rms_adamw")),
}
RPROP = {
    "learning_rate": NONNEG,
    "eta_minus": Arg(reals(1e-3, 1.0, exclude_max=True).filter(lambda x: x > 0), outside(0.0, 1.0, lo_open=True, hi_open=True)),
    "eta_plus": Arg(reals(1.0, 10.0).filter(lambda x: x > 1), outside(1.0, lo_open=True)),
    "min_step_size": num(0.0, valid=reals(0.0, 1.0)),
    "max_step_size": num(0.0, valid=reals(1.0, 100.0)),
}
RPROP_COMBOS = (("max_step_size", reals(0.0, 1.0).map(lambda hi: {"min_step_size": hi + 1.0, "max_step_size": hi})),)


def _rprop_ok(kw):
    if kw.get("min_step_size", 0.0) > kw.get("max_step_size", 50.0):
        kw["min_step_size"] = 0.0
    return kw

STEPS = Arg(counts(1e-3, INT32_MAX), outside(0.0, lo_open=True), required=True)
DECAY = Arg(reals(1e-20, 1.0).filter(lambda g: g > 0), outside(0.0, 1.0, lo_open=True))
PCT_OPEN = Arg(reals(1e-6, 1.0, exclude_max=True).filter(lambda p: p > 0), outside(0.0, 1.0, lo_open=True, hi_open=True))
ONE_CYCLE_COMMON = {
    "total_steps": STEPS,
    "pct_start": PCT_OPEN,
    "anneal": choice(("cos", "linear")),
    "three_phase": flag(),
}
CYCLIC = {
    "base_value": value(required=True),
    "max_value": value(required=True),
    "step_size_up": Arg(counts(1e-3, INT32_MAX), outside(0.0, lo_open=True)),
    "step_size_down": Arg(st.one_of(st.none(), st.just(0), counts(1e-3, INT32_MAX)), no_none(outside(0.0))),
    "mode": choice(("triangular", "triangular2", "exp_range")),
    "gamma": DECAY,
}

SHAPES = choice(("linear", "cosine", "1-sqrt"))
PHASE = Arg(st.one_of(st.just(0), counts(1e-3, INT32_MAX)), outside(0.0), required=True)


def _wsd_ok(kw):
    """total_steps >= warmup_steps + decay_steps, as float32/64 computes it."""
    total, warm, decay = (FLOAT(kw[k]) for k in ("total_steps", "warmup_steps", "decay_steps"))
    if total - decay < warm:
        total = warm + decay
        while total - decay < warm:
            total = np.nextafter(total, FLOAT(np.inf))
        kw["total_steps"] = float(total)
    return kw


SCHEDULES: dict[str, Spec] = {
    "constant": Spec(S.constant, {"value": value(required=True)}),
    "step_decay": Spec(S.step_decay, {"init_value": value(True), "step_size": STEPS, "gamma": DECAY}),
    "multistep_decay": Spec(
        S.multistep_decay,
        {
            "init_value": value(True),
            "milestones": Arg(
                st.lists(st.one_of(st.integers(0, INT32_MAX), reals(0.0, 1e9)), max_size=4),
                st.one_of(
                    st.lists(outside(0.0), min_size=1, max_size=3).map(lambda xs: [5, *xs]),
                    st.sampled_from([5, 2.5, None, "10", ["10"]]),
                ),
                required=True,
            ),
            "gamma": DECAY,
        },
    ),
    "exponential_decay": Spec(
        S.exponential_decay, {"init_value": value(True), "gamma": dataclasses.replace(DECAY, required=True), "min_value": value()}
    ),
    "polynomial_decay": Spec(
        S.polynomial_decay,
        {
            "init_value": value(True),
            "total_steps": STEPS,
            "power": num(0.0, lo_open=True, valid=reals(1e-3, 1e3)),
            "end_value": value(),
            "cycle": flag(),
        },
    ),
    "linear": Spec(S.linear, {"start_value": value(True), "end_value": value(True), "total_steps": STEPS}),
    "cosine_decay": Spec(
        S.cosine_decay,
        {
            "init_value": value(True),
            "total_steps": STEPS,
            "min_value": value(),
            "exponent": num(0.0, lo_open=True, valid=reals(1e-3, 1e3)),
        },
    ),
    **{
        name: Spec(
            getattr(S, name),
            {
                "init_value": value(True),
                "first_period": STEPS,
                "period_mult": Arg(st.one_of(st.integers(1, 10), reals(1.0, 100.0)), outside(1.0)),
                "min_value": value(),
            },
        )
        for name in ("cosine_warm_restarts", "linear_warm_restarts")
    },
    "one_cycle": Spec(
        S.one_cycle,
        {
            "max_value": value(True),
            **ONE_CYCLE_COMMON,
            "div_factor": num(0.0, lo_open=True, valid=reals(1e-3, 1e6)),
            "final_div_factor": num(0.0, lo_open=True, valid=reals(1e-3, 1e6)),
        },
    ),
    "one_cycle_momentum": Spec(
        S.one_cycle_momentum, {**ONE_CYCLE_COMMON, "base_value": value(), "max_value": value()}
    ),
    "cyclic": Spec(S.cyclic, CYCLIC),
    "cyclic_momentum": Spec(S.cyclic_momentum, CYCLIC),
    "combined_cos": Spec(
        S.combined_cos,
        {
            "total_steps": STEPS,
            "pct_start": Arg(reals(0.0, 1.0), outside(0.0, 1.0), required=True),
            "start_value": value(True),
            "peak_value": value(True),
            "end_value": value(True),
        },
    ),
    "warmup": Spec(
        S.warmup,
        {
            "schedule": Arg(SCHEDULE_VALUES, BAD_SCHEDULE, required=True),
            "warmup_steps": Arg(st.one_of(st.just(0), counts(1e-3, INT32_MAX)), outside(0.0), required=True),
            "start_value": value(),
        },
    ),
    "join": Spec(
        _join,
        {
            "schedules": Arg(
                st.lists(SCHEDULE_VALUES, min_size=3, max_size=3),
                st.one_of(
                    st.just([]),
                    st.tuples(BAD_SCHEDULE, st.integers(0, 2)).map(
                        lambda b: [COS, COS, COS][: b[1]] + [b[0]] + [COS, COS][b[1] :]
                    ),
                ),
                required=True,
            ),
            "boundaries": Arg(
                st.lists(st.one_of(st.integers(0, INT32_MAX), reals(0.0, 1e9)), min_size=2, max_size=2).map(sorted),
                st.one_of(
                    st.lists(st.integers(0, 100), max_size=5).filter(lambda b: len(b) != 2),
                    st.tuples(st.integers(1, 100), st.integers(1, 100)).map(lambda b: [max(b) + 1, min(b)]),
                    outside(0.0).map(lambda x: [0, x]),
                    st.sampled_from(["12", None, 5]),
                ),
                required=True,
            ),
        },
    ),
    "multiply": Spec(
        _multiply,
        {
            "schedules": Arg(
                st.lists(SCHEDULE_VALUES, min_size=1, max_size=3),
                st.one_of(st.just([]), BAD_SCHEDULE.map(lambda b: [COS, b])),
                required=True,
            )
        },
    ),
    "warmup_stable_decay": Spec(
        S.warmup_stable_decay,
        {
            "peak_value": value(True),
            "total_steps": PHASE,
            "warmup_steps": PHASE,
            "decay_steps": PHASE,
            "warmup_shape": SHAPES,
            "decay_shape": SHAPES,
            "min_value": value(),
        },
        (("total_steps", st.sampled_from([{"total_steps": 10, "warmup_steps": 8, "decay_steps": 5},
                                          {"total_steps": 0.5, "warmup_steps": 0, "decay_steps": 0.75}])),),
        _wsd_ok,
    ),
    "inverse_sqrt": Spec(
        S.inverse_sqrt,
        {
            "peak_value": value(True),
            "warmup_steps": PHASE,
            "timescale": Arg(st.one_of(st.none(), counts(1e-3, INT32_MAX)), no_none(outside(0.0, lo_open=True))),
        },
    ),
    "swa": Spec(
        S.swa,
        {
            "init_value": value(True),
            "swa_value": value(True),
            "anneal_steps": dataclasses.replace(PHASE, required=False),
            "anneal": choice(("cos", "linear")),
        },
    ),
    "inverse_time_decay": Spec(
        S.inverse_time_decay,
        {
            "init_value": value(True),
            "decay_steps": STEPS,
            "decay_rate": num(0.0, valid=reals(0.0, 1e6), required=True),
            "staircase": flag(),
        },
    ),
    "exponential_range": Spec(
        S.exponential_range,
        {
            "start_value": num(0.0, lo_open=True, valid=reals(1e-8, 1e3), required=True),
            "end_value": num(0.0, lo_open=True, valid=reals(1e-8, 1e3), required=True),
            "num_steps": STEPS,
        },
    ),
}

SF_B1 = num(0.0, 1.0, lo_open=True, valid=reals(0.05, 1.0))
PRODIGY = {
    "learning_rate": LR,
    "b1": BETA,
    "b2": BETA,
    "beta3": Arg(st.one_of(st.none(), reals(0.0, 1.0, exclude_max=True)), no_none(outside(0.0, 1.0, hi_open=True))),
    "eps": EPS,
    "estim_lr0": num(0.0, lo_open=True, valid=reals(1e-8, 1.0)),
    "estim_lr_coef": num(0.0, lo_open=True, valid=reals(1e-3, 10.0)),
    "weight_decay": NONNEG,
    "safeguard_warmup": flag(),
}

TRANSFORMS: dict[str, Spec] = {
    "accumulate_gradients": Spec(
        T.accumulate_gradients,
        {
            "inner": Arg(st.just(INNER), BAD_INNER, required=True, static=True),
            "every_k": Arg(
                st.integers(1, 4),
                st.one_of(integers_outside(1), st.sampled_from([True, np.bool_(False), 2.0, np.array([2, 3])])),
                required=True,
            ),
            "use_grad_mean": flag(),
            "accumulator_dtype": Arg(
                st.sampled_from([None, jnp.float32]), st.sampled_from(["foo", jnp.int32, 1.0]), static=True
            ),
        },
    ),
    "add_weight_decay": Spec(T.add_weight_decay, {"weight_decay": dataclasses.replace(NONNEG, required=True)}),
    "add_decayed_weights": Spec(T.add_decayed_weights, {"weight_decay": dataclasses.replace(NONNEG, required=True)}),
    "scale_by_learning_rate": Spec(T.scale_by_learning_rate, {"learning_rate": dataclasses.replace(LR, required=True)}),
    "clip_by_global_norm": Spec(
        T.clip_by_global_norm, {"max_norm": num(0.0, lo_open=True, valid=reals(1e-6, 1e3), required=True)}
    ),
    "scale_by_momentum": Spec(
        T.scale_by_momentum,
        {"momentum": BETA, "nesterov": flag(), "dampening": UNIT},
        NESTEROV_COMBOS,
        _nesterov_ok,
    ),
    "scale_by_adagrad": Spec(
        T.scale_by_adagrad, {"initial_accumulator_value": num(0.0, valid=reals(0.0, 1e3)), "eps": EPS}
    ),
    "scale_by_rms": Spec(T.scale_by_rms, {"alpha": UNIT, "eps": EPS, "centered": flag()}),
    "scale_by_adam": Spec(T.scale_by_adam, {"b1": BETA, "b2": BETA, "eps": EPS, "amsgrad": flag()}),
    "scale_by_radam": Spec(T.scale_by_radam, {"b1": BETA, "b2": BETA, "eps": EPS}),
    "lookahead": Spec(
        T.lookahead,
        {
            "inner": Arg(st.just(INNER), BAD_INNER, required=True, static=True),
            "sync_period": num(1.0, valid=st.one_of(st.integers(1, 10), reals(1.0, 10.0))),
            "alpha": UNIT,
        },
    ),
    "skip_nonfinite": Spec(
        T.skip_nonfinite,
        {
            "inner": Arg(st.just(INNER), BAD_INNER, required=True, static=True),
            "max_consecutive_skips": Arg(st.one_of(st.none(), st.integers(1, 10)), no_none(outside(1.0))),
        },
    ),
    "reduce_on_plateau": Spec(
        T.reduce_on_plateau,
        {
            "factor": Arg(reals(1e-6, 1.0, exclude_max=True), outside(0.0, 1.0, lo_open=True, hi_open=True)),
            "patience": int_count(0),
            "threshold": num(0.0, valid=reals(0.0, 1.0)),
            "mode": choice(("min", "max")),
            "threshold_mode": choice(("rel", "abs")),
            "cooldown": int_count(0),
            "min_scale": num(0.0, valid=reals(0.0, 1.0)),
            "eps": num(0.0, valid=reals(0.0, 1e-3)),
            "window": int_count(1),
        },
    ),
    "early_stopping": Spec(
        T.early_stopping,
        {
            "patience": int_count(0),
            "min_delta": num(0.0, valid=reals(0.0, 10.0)),
            "mode": choice(("min", "max")),
            "baseline": Arg(st.one_of(st.none(), VALUES), no_none(BAD_NUMBER)),
            "window": int_count(1),
            "start_from_epoch": int_count(0),
            "keep_best": flag(),
        },
    ),
    "cooldown": Spec(
        T.cooldown,
        {
            "decay_steps": Arg(counts(1e-3, INT32_MAX), outside(0.0, lo_open=True), required=True),
            "shape": choice(("1-sqrt", "linear", "cosine")),
            "min_scale": UNIT,
            "patience": Arg(st.one_of(st.none(), st.integers(0, 20)), no_none(integers_outside(0))),
            "threshold": num(0.0, valid=reals(0.0, 1.0)),
            "mode": choice(("min", "max")),
            "threshold_mode": choice(("rel", "abs")),
            "window": int_count(1),
        },
    ),
    "average_params": Spec(
        T.average_params,
        {
            "kind": choice(("ema", "swa")),
            "decay": UNIT,
            "start": int_count(0),
            "every": int_count(1),
            "warmup": flag(),
            "warmup_gamma": num(0.0, lo_open=True, valid=reals(1e-3, 1e3)),
            "warmup_power": num(0.0, lo_open=True, valid=reals(1e-3, 10.0)),
            "min_decay": UNIT,
            "dtype": Arg(st.sampled_from([None, jnp.float32]), st.sampled_from(["foo", jnp.int32, 1.0]), static=True),
        },
        (("warmup", st.just({"kind": "swa", "warmup": True})),),
        lambda kw: {**kw, "warmup": False} if kw.get("kind") == "swa" else kw,
    ),
    "schedule_free": Spec(
        T.schedule_free,
        {
            "learning_rate": dataclasses.replace(LR, required=True),
            "b1": SF_B1,
            "weight_lr_power": num(0.0, valid=reals(0.0, 4.0)),
            "r": num(0.0, valid=reals(0.0, 4.0)),
        },
    ),
    "scale_by_prodigy": Spec(T.scale_by_prodigy, PRODIGY),
    "scale_by_lion": Spec(
        T.scale_by_lion,
        {"b1": BETA, "b2": BETA, "mode": choice(("hard", "smooth", "refined")), "smooth_beta": num(0.0, lo_open=True, valid=reals(1e-3, 10.0))},
    ),
    "scale_by_belief": Spec(T.scale_by_belief, {"b1": BETA, "b2": BETA, "eps": EPS, "eps_root": NONNEG, "nesterov": flag()}),
    "scale_by_trust_ratio": Spec(T.scale_by_trust_ratio, {"min_norm": NONNEG, "trust_coefficient": NONNEG, "eps": NONNEG}),
    "scale_by_adafactor": Spec(
        T.scale_by_adafactor,
        {
            "learning_rate": LR,
            "beta2_decay": num(None, 0.0, valid=reals(-2.0, 0.0)),
            "eps1": num(0.0, valid=reals(0.0, 1.0)),
            "eps2": num(0.0, valid=reals(0.0, 1.0)),
            "d": num(1.0, valid=reals(1.0, 10.0)),
        },
    ),
    "scale_by_muon": Spec(lambda **kw: _with_adamw(T.scale_by_muon(**kw)), MUON_ARGS),
    "scale_by_nadam": Spec(T.scale_by_nadam, {"b1": BETA, "b2": BETA, "eps": EPS, "momentum_decay": NONNEG}),
    "scale_by_adamax": Spec(T.scale_by_adamax, {"b1": BETA, "b2": BETA, "eps": EPS}),
    "scale_by_adadelta": Spec(T.scale_by_adadelta, {"rho": UNIT, "eps": EPS}),
    "scale_by_rprop": Spec(T.scale_by_rprop, RPROP, RPROP_COMBOS, _rprop_ok),
}

SF_COMMON = {
    "learning_rate": LR,
    "warmup_steps": Arg(st.one_of(st.none(), st.integers(0, 100), reals(0.0, 100.0)), no_none(outside(0.0))),
    "b1": SF_B1,
    "weight_decay": NONNEG,
    "weight_lr_power": num(0.0, valid=reals(0.0, 4.0)),
    "r": num(0.0, valid=reals(0.0, 4.0)),
}

ALIASES: dict[str, Spec] = {
    "sgd": Spec(
        fnopt.sgd,
        {
            "learning_rate": dataclasses.replace(LR, required=True),
            "momentum": BETA,
            "nesterov": flag(),
            "dampening": UNIT,
            "weight_decay": NONNEG,
        },
        NESTEROV_COMBOS,
        _nesterov_ok,
    ),
    **{
        name: Spec(
            getattr(fnopt, name),
            {"learning_rate": LR, "b1": BETA, "b2": BETA, "eps": EPS, "amsgrad": flag(), "weight_decay": NONNEG},
        )
        for name in ("adam", "adamw")
    },
    "radam": Spec(fnopt.radam, {"learning_rate": LR, "b1": BETA, "b2": BETA, "eps": EPS, "weight_decay": NONNEG}),
    "adagrad": Spec(
        fnopt.adagrad,
        {
            "learning_rate": LR,
            "initial_accumulator_value": num(0.0, valid=reals(0.0, 1e3)),
            "eps": EPS,
            "weight_decay": NONNEG,
        },
    ),
    "rmsprop": Spec(
        fnopt.rmsprop,
        {"learning_rate": LR, "alpha": UNIT, "eps": EPS, "momentum": BETA, "centered": flag(), "weight_decay": NONNEG},
    ),
    "ranger": Spec(
        fnopt.ranger,
        {
            "learning_rate": LR,
            "b1": BETA,
            "b2": BETA,
            "eps": EPS,
            "sync_period": num(1.0, valid=st.one_of(st.integers(1, 10), reals(1.0, 10.0))),
            "alpha": UNIT,
            "weight_decay": NONNEG,
        },
    ),
    "schedule_free_sgd": Spec(fnopt.schedule_free_sgd, SF_COMMON),
    "schedule_free_adamw": Spec(fnopt.schedule_free_adamw, {**SF_COMMON, "b2": BETA, "eps": EPS}),
    "prodigy": Spec(fnopt.prodigy, PRODIGY),
    "lion": Spec(
        fnopt.lion,
        {
            "learning_rate": dataclasses.replace(LR, required=True),
            "b1": BETA,
            "b2": BETA,
            "weight_decay": NONNEG,
            "mode": choice(("hard", "smooth", "refined")),
            "smooth_beta": num(0.0, lo_open=True, valid=reals(1e-3, 10.0)),
        },
    ),
    "lamb": Spec(
        fnopt.lamb,
        {
            "learning_rate": dataclasses.replace(LR, required=True),
            "b1": BETA,
            "b2": BETA,
            "eps": EPS,
            "eps_root": NONNEG,
            "weight_decay": NONNEG,
        },
    ),
    "lars": Spec(
        fnopt.lars,
        {
            "learning_rate": dataclasses.replace(LR, required=True),
            "weight_decay": NONNEG,
            "trust_coefficient": NONNEG,
            "eps": NONNEG,
            "momentum": BETA,
            "nesterov": flag(),
        },
    ),
    "adabelief": Spec(
        fnopt.adabelief,
        {
            "learning_rate": dataclasses.replace(LR, required=True),
            "b1": BETA,
            "b2": BETA,
            "eps": EPS,
            "eps_root": NONNEG,
            "nesterov": flag(),
            "weight_decay": NONNEG,
        },
    ),
    "adafactor": Spec(
        fnopt.adafactor,
        {
            **TRANSFORMS["scale_by_adafactor"].args,
            "weight_decay": NONNEG,
            "maximize": flag(),
        },
    ),
    "muon": Spec(
        lambda **kw: _with_adamw(fnopt.muon(**kw)),
        {**MUON_ARGS, "learning_rate": LR, "weight_decay": NONNEG, "maximize": flag()},
    ),
    "nadam": Spec(
        fnopt.nadam,
        {
            "learning_rate": LR,
            "b1": BETA,
            "b2": BETA,
            "eps": EPS,
            "momentum_decay": NONNEG,
            "weight_decay": NONNEG,
            "decoupled_weight_decay": flag(),
            "maximize": flag(),
        },
    ),
    "adamax": Spec(
        fnopt.adamax,
        {"learning_rate": LR, "b1": BETA, "b2": BETA, "eps": EPS, "weight_decay": NONNEG, "maximize": flag()},
    ),
    "adadelta": Spec(
        fnopt.adadelta,
        {"learning_rate": LR, "rho": UNIT, "eps": EPS, "weight_decay": NONNEG, "maximize": flag()},
    ),
    "rprop": Spec(fnopt.rprop, {**RPROP, "maximize": flag()}, RPROP_COMBOS, _rprop_ok),
}


def _loss(params, batch):
    return jnp.sum((params - batch) ** 2)


def _lr_find(**kw):
    return fnopt.lr_find(_loss, jnp.zeros(2, FLOAT), jnp.ones((8, 2), FLOAT), fnopt.sgd, **kw)


LR_FIND = Spec(
    _lr_find,
    {
        "start_lr": Arg(reals(1e-8, 1e-3), st.one_of(outside(0.0, lo_open=True), st.just(np.array([1e-7, 1e-6])))),
        "end_lr": Arg(reals(1e-2, 10.0), st.one_of(outside(0.0, lo_open=True), st.just(np.array([1.0, 10.0])))),
        "num_steps": Arg(st.integers(6, 8), st.sampled_from([5, 0, -10, 7.0, 6.5, "10", None, True, np.array([6, 7])])),
        "smoothing": Arg(reals(0.0, 1.0, exclude_max=True), st.one_of(outside(0.0, 1.0, hi_open=True), st.just(np.array([0.5, 0.9])))),
        "diverge_factor": Arg(reals(1.5, 10.0), st.one_of(outside(1.0, lo_open=True), st.just(np.array([2.0, 3.0])))),
    },
    (("end_lr", reals(1e-6, 1.0).map(lambda lo: {"start_lr": lo, "end_lr": lo})),
     ("end_lr", st.just({"start_lr": 1.0, "end_lr": 1e-3}))),
)

SPECS: dict[str, Spec] = {**SCHEDULES, **TRANSFORMS, **ALIASES, "lr_find": LR_FIND}


def test_the_table_covers_every_public_factory():
    schedules = set(S.__all__) - {"Schedule"}
    transforms = {n for n in T.__all__ if not n.endswith("State") and n != "RecordState"}
    aliases = {"sgd", "adam", "adamw", "radam", "adagrad", "rmsprop", "ranger", "schedule_free_sgd", "schedule_free_adamw",
               "prodigy", "lion", "lamb", "lars", "adabelief", "adafactor", "muon", "nadam", "adamax", "adadelta", "rprop"}
    assert set(SCHEDULES) == schedules
    assert set(TRANSFORMS) == transforms
    assert set(ALIASES) == aliases


# ------------------------------------------------------- invalid values


def _draw_valid(data, spec: Spec, *, every=False) -> dict:
    """Valid values for the required arguments and for a random subset of the
    optional ones (``every``: for all of them)."""
    kw = {}
    for name, arg in spec.args.items():
        if arg.required or every or data.draw(st.booleans(), label=f"pass {name}"):
            kw[name] = data.draw(arg.valid, label=name)
    return spec.fix(kw)


def _head(message: str) -> str:
    """The call part of a message: `` `one_cycle(pct_start=...)` `` -> ``one_cycle(pct_start=...)``."""
    parts = message.split("`")
    return parts[1] if len(parts) > 2 else ""


@pytest.mark.parametrize("name", sorted(SPECS))
@INVALID_SETTINGS
@given(data=st.data())
def test_invalid_hyperparameters_raise_naming_factory_and_argument(name, data):
    spec = SPECS[name]
    options = [(arg_name, arg.invalid.map(lambda v, n=arg_name: {n: v}))
               for arg_name, arg in spec.args.items() if arg.invalid is not None]
    options += list(spec.combos)
    named, overrides = data.draw(st.sampled_from(options), label="broken argument")
    kw = _draw_valid(data, spec)
    kw.update(data.draw(overrides, label="invalid"))
    with pytest.raises(ValueError) as info:
        spec.factory(**kw)
    message = str(info.value)
    assert message.startswith(f"`{name}("), message
    assert re.search(rf"\b{re.escape(named)}\b", _head(message)), message


# --------------------------------------------- valid values: schedules

STEP_LIST = st.lists(st.integers(0, INT32_MAX), min_size=6, max_size=6).map(lambda s: [0, 1, INT32_MAX, *s])


@pytest.mark.parametrize("name", sweeps.sweep(sorted(SCHEDULES), sweeps.SCHEDULES))
@SCHEDULE_SETTINGS
@given(data=st.data(), steps=STEP_LIST)
def test_valid_schedules_are_finite_at_every_step(name, data, steps):
    spec = SCHEDULES[name]
    schedule = spec.factory(**_draw_valid(data, spec))
    int_steps = jnp.asarray(steps, jnp.int32)
    float_steps = jnp.asarray(np.asarray(steps, np.float64) + 0.5, FLOAT)
    for t in (int_steps, float_steps):
        v = np.asarray(schedule(t))
        assert v.shape == t.shape
        assert np.all(np.isfinite(v)), (t, v)
    assert math.isfinite(float(schedule(steps[-1]))) and math.isfinite(float(schedule(0.25)))


# ------------------------------ valid values: transforms and aliases

OPTIMIZERS = {**TRANSFORMS, **ALIASES}
STEPS_RUN = 3


def _is_static(v) -> bool:
    return not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool)


@functools.lru_cache(maxsize=None)
def _runner(name: str, static: tuple, traced: tuple):
    """One jitted ``init`` + ``STEPS_RUN`` updates per factory and static
    configuration; the numeric hyperparameters come in traced."""
    factory = OPTIMIZERS[name].factory

    @jax.jit
    def run(hyper, params, grads, metrics):
        tx = factory(**dict(static), **hyper)
        state = tx.init(params)

        def step(carry, xs):
            params, state = carry
            g, metric = xs
            updates, state = tx.update(g, state, params, value=metric)
            return (optax.apply_updates(params, updates), state), updates

        (params, state), updates = jax.lax.scan(step, (params, state), (grads, metrics))
        return params, state, updates

    return run


def _nonfinite_leaves(tree) -> list[str]:
    """Float leaves with a NaN or inf, except the ``best`` / ``baseline`` of
    plateau and early stopping, which start at +-inf by design."""
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        where = jax.tree_util.keystr(path)
        if "best" in where or "baseline" in where:
            continue
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            bad.append(f"{where}={arr}")
    return bad


@pytest.mark.parametrize("name", sweeps.sweep(
    sorted(OPTIMIZERS),
    sweeps.OPTIMIZERS + ("reduce_on_plateau", "early_stopping"),
))
@RUN_SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), scale=reals(1e-3, 1e2))
def test_valid_hyperparameters_give_finite_updates(name, data, seed, scale):
    spec = OPTIMIZERS[name]
    kw = _draw_valid(data, spec, every=True)
    spec.factory(**kw)  # concrete valid values are accepted
    static_names = {k for k, v in kw.items() if spec.args[k].static or _is_static(v)}
    static = tuple(sorted((k, v) for k, v in kw.items() if k in static_names))
    hyper = {k: jnp.asarray(v, FLOAT) for k, v in kw.items() if k not in static_names}
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.normal(size=(2, 3)), FLOAT), "b": jnp.asarray(rng.normal(size=3), FLOAT)}
    grads = jax.tree.map(lambda p: jnp.asarray(scale * rng.normal(size=(STEPS_RUN, *p.shape)), FLOAT), params)
    metrics = jnp.asarray(rng.normal(size=STEPS_RUN), FLOAT)
    new_params, state, updates = _runner(name, static, tuple(sorted(hyper)))(hyper, params, grads, metrics)
    assert not _nonfinite_leaves((new_params, updates, state)), _nonfinite_leaves((new_params, updates, state))
    assert jax.tree.map(jnp.shape, new_params) == jax.tree.map(jnp.shape, params)


# ---------------------------------------------------- static switches

FLAGS = [
    ("one_cycle", lambda v: S.one_cycle(1.0, 100, three_phase=v), "three_phase"),
    ("one_cycle_momentum", lambda v: S.one_cycle_momentum(100, three_phase=v), "three_phase"),
    ("sgd", lambda v: fnopt.sgd(0.1, 0.9, nesterov=v), "nesterov"),
    ("scale_by_momentum", lambda v: T.scale_by_momentum(0.9, nesterov=v), "nesterov"),
    ("adam", lambda v: fnopt.adam(amsgrad=v), "amsgrad"),
    ("adamw", lambda v: fnopt.adamw(amsgrad=v), "amsgrad"),
    ("scale_by_adam", lambda v: T.scale_by_adam(amsgrad=v), "amsgrad"),
    ("rmsprop", lambda v: fnopt.rmsprop(centered=v), "centered"),
    ("scale_by_rms", lambda v: T.scale_by_rms(centered=v), "centered"),
    ("accumulate_gradients", lambda v: T.accumulate_gradients(INNER, 2, use_grad_mean=v), "use_grad_mean"),
    ("prodigy", lambda v: fnopt.prodigy(safeguard_warmup=v), "safeguard_warmup"),
    ("scale_by_prodigy", lambda v: T.scale_by_prodigy(safeguard_warmup=v), "safeguard_warmup"),
    ("lars", lambda v: fnopt.lars(0.1, nesterov=v), "nesterov"),
    ("adabelief", lambda v: fnopt.adabelief(0.1, nesterov=v), "nesterov"),
    ("scale_by_belief", lambda v: T.scale_by_belief(nesterov=v), "nesterov"),
    ("nadam", lambda v: fnopt.nadam(decoupled_weight_decay=v), "decoupled_weight_decay"),
    ("nadam", lambda v: fnopt.nadam(maximize=v), "maximize"),
    ("adamax", lambda v: fnopt.adamax(maximize=v), "maximize"),
    ("adadelta", lambda v: fnopt.adadelta(maximize=v), "maximize"),
    ("rprop", lambda v: fnopt.rprop(maximize=v), "maximize"),
    ("average_params", lambda v: T.average_params(warmup=v), "warmup"),
    ("early_stopping", lambda v: T.early_stopping(keep_best=v), "keep_best"),
]


@pytest.mark.parametrize("name,make,flag_name", [pytest.param(n, m, f, id=f"{n}({f})") for n, m, f in FLAGS])
def test_static_switches_must_be_bools(name, make, flag_name):
    make(True)
    make(np.bool_(False))
    for bad in ("False", "yes", None, 1):
        with pytest.raises(ValueError, match=rf"^`{name}\({flag_name}=\.\.\.\)`"):
            make(bad)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: T.scale_by_adam(mu_dtype="foo"), id="scale_by_adam"),
        pytest.param(lambda: T.scale_by_radam(mu_dtype="foo"), id="scale_by_radam"),
        pytest.param(lambda: T.scale_by_momentum(mu_dtype="foo"), id="scale_by_momentum"),
        pytest.param(lambda: T.scale_by_prodigy(mu_dtype="foo"), id="scale_by_prodigy"),
        pytest.param(lambda: T.scale_by_lion(mu_dtype="foo"), id="scale_by_lion"),
        pytest.param(lambda: T.scale_by_belief(mu_dtype="foo"), id="scale_by_belief"),
        pytest.param(lambda: fnopt.lion(0.1, mu_dtype="foo"), id="lion"),
        pytest.param(lambda: fnopt.lamb(0.1, mu_dtype="foo"), id="lamb"),
        pytest.param(lambda: fnopt.lars(0.1, mu_dtype="foo"), id="lars"),
        pytest.param(lambda: fnopt.adabelief(0.1, mu_dtype="foo"), id="adabelief"),
        pytest.param(lambda: T.scale_by_nadam(mu_dtype="foo"), id="scale_by_nadam"),
        pytest.param(lambda: T.scale_by_adamax(mu_dtype="foo"), id="scale_by_adamax"),
    ],
)
def test_bad_mu_dtype_is_a_value_error(make):
    with pytest.raises(ValueError, match="mu_dtype"):
        make()


# ------------------------------------------------ wrong-structure inputs

PARAMS = {"w": jnp.zeros((2, 3), FLOAT), "b": jnp.zeros(3, FLOAT)}
STATEFUL = {
    "sgd(momentum)": lambda: fnopt.sgd(0.1, momentum=0.9, weight_decay=1e-2),
    "adam": fnopt.adam,
    "adamw": fnopt.adamw,
    "radam": fnopt.radam,
    "adagrad": fnopt.adagrad,
    "rmsprop": lambda: fnopt.rmsprop(momentum=0.5, centered=True),
    "ranger": fnopt.ranger,
    "skip_nonfinite(adam)": lambda: T.skip_nonfinite(fnopt.adam()),
    "accumulate_gradients(adam)": lambda: T.accumulate_gradients(fnopt.adam(), 2),
    "schedule_free_sgd": lambda: fnopt.schedule_free_sgd(weight_decay=1e-2),
    "schedule_free_adamw": fnopt.schedule_free_adamw,
    "prodigy": lambda: fnopt.prodigy(weight_decay=1e-2),
    "lion": lambda: fnopt.lion(0.1),
    "lamb": lambda: fnopt.lamb(0.1, weight_decay=0.1),
    "lars": lambda: fnopt.lars(0.1, 0.1),
    "adabelief": lambda: fnopt.adabelief(0.1),
    "nadam": lambda: fnopt.nadam(weight_decay=0.1),
    "adamax": fnopt.adamax,
    "adadelta": fnopt.adadelta,
    "rprop": fnopt.rprop,
}
WRONG_TREES = {
    "missing_key": {"w": jnp.ones((2, 3), FLOAT)},
    "extra_key": {"w": jnp.ones((2, 3), FLOAT), "b": jnp.ones(3, FLOAT), "c": jnp.ones(1, FLOAT)},
    "list_not_dict": [jnp.ones((2, 3), FLOAT), jnp.ones(3, FLOAT)],
}


@pytest.mark.parametrize("tree", sorted(WRONG_TREES))
@pytest.mark.parametrize("opt", sorted(STATEFUL))
def test_grads_with_another_tree_structure_raise(opt, tree):
    tx = STATEFUL[opt]()
    state = tx.init(PARAMS)
    for update in (tx.update, jax.jit(tx.update)):
        with pytest.raises(ValueError, match="pytree structure"):
            update(WRONG_TREES[tree], state, PARAMS)


@pytest.mark.parametrize("opt", sorted(STATEFUL))
def test_grads_with_incompatible_shapes_raise(opt):
    tx = STATEFUL[opt]()
    state = tx.init(PARAMS)
    grads = {"w": jnp.ones((2, 4), FLOAT), "b": jnp.ones(3, FLOAT)}
    with pytest.raises(ValueError, match=r"\.update`: the updates at \['w'\] have shape \(2, 4\)"):
        tx.update(grads, state, PARAMS)


@pytest.mark.parametrize("opt", sorted(STATEFUL))
def test_grads_with_broadcastable_shapes_raise(opt):
    tx = STATEFUL[opt]()
    state = tx.init(PARAMS)
    for b_shape in ((3, 1), (1,), ()):
        grads = {"w": jnp.ones((2, 3), FLOAT), "b": jnp.ones(b_shape, FLOAT)}
        for update in (tx.update, jax.jit(tx.update)):
            with pytest.raises(ValueError, match=r"\.update`: the updates at \['b'\] have shape"):
                update(grads, state, PARAMS)


# ------------------------------------------------- report / should_stop


def test_report_without_a_plateau_or_stopping_state_raises():
    state = fnopt.adam().init(PARAMS)
    with pytest.raises(ValueError, match=r"^`report\(") as info:
        fnopt.report(state, 1.0)
    assert "reduce_on_plateau" in str(info.value) and "early_stopping" in str(info.value)


@pytest.mark.parametrize(
    "tx", [fnopt.adam(), T.reduce_on_plateau(), optax.chain(fnopt.sgd(0.1), T.reduce_on_plateau())],
    ids=["adam", "plateau", "sgd+plateau"],
)
def test_should_stop_without_early_stopping_raises(tx):
    with pytest.raises(ValueError, match=r"^`should_stop\(") as info:
        fnopt.should_stop(tx.init(PARAMS))
    assert "early_stopping" in str(info.value)


NON_SCALAR = [
    pytest.param(jnp.ones(2, FLOAT), id="jax(2,)"),
    pytest.param(np.ones((1, 1)), id="numpy(1,1)"),
    pytest.param([1.0, 2.0], id="list"),
]


@pytest.mark.parametrize("tx", [T.reduce_on_plateau(), T.early_stopping()], ids=["plateau", "stopping"])
@pytest.mark.parametrize("metric", NON_SCALAR)
def test_non_scalar_metrics_raise(tx, metric):
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match=r"^`report\(.*scalar"):
        fnopt.report(state, metric)
    with pytest.raises(ValueError, match="scalar"):
        tx.update(jax.tree.map(jnp.ones_like, PARAMS), state, PARAMS, value=metric)


@pytest.mark.parametrize(
    "metric",
    [
        "1.0", None, True, 1 + 2j, {"loss": 1.0},
    ],
)
def test_non_numeric_metrics_raise(metric):
    state = T.reduce_on_plateau().init(PARAMS)
    with pytest.raises(ValueError, match=r"^`report\("):
        fnopt.report(state, metric)


# ------------------------------------------------ regressions (fixed here)


def test_values_are_checked_as_the_math_sees_them():
    """Validation rounds to the default float dtype: in float32, 0.99999999
    is 1 (Adam's bias correction 1 - b2**t is then 0 and the update NaN),
    1e-50 is 0 (a division by zero) and 1e39 is inf."""
    cases = [
        (lambda: fnopt.adam(b2=0.99999999), "`adam(b2=...)` must be in [0, 1), got 0.99999999 (1.0 in float32)"),
        (lambda: T.scale_by_radam(b1=0.999999999), "`scale_by_radam(b1=...)` must be in [0, 1), got 0.999999999 (1.0 in float32)"),
        (lambda: S.step_decay(1.0, 1e-50), "`step_decay(step_size=...)` must be > 0, got 1e-50 (0.0 in float32)"),
        (lambda: S.cosine_decay(1e39, 10), "`cosine_decay(init_value=...)` must be finite, got 1e+39 (inf in float32)"),
        (lambda: fnopt.sgd(1e39), "`sgd(learning_rate=...)` must be finite, got 1e+39 (inf in float32)"),
    ]
    for make, message in cases:
        if X64:  # representable in float64: accepted
            make()
        else:
            with pytest.raises(ValueError) as info:
                make()
            assert str(info.value) == message
    with pytest.raises(ValueError, match=r"must be >= 0, got -0\.1$"):  # no rounding note when it is not the reason
        fnopt.sgd(-0.1)


@pytest.mark.parametrize(
    "make,where",
    [
        (lambda: S.multistep_decay(1.0, ["10"]), "multistep_decay(milestones"),
        (lambda: S.join([COS, COS], ["1"]), "join(boundaries"),
        (lambda: S.join([COS, COS], "1"), "join(boundaries"),
        (lambda: S.join([COS, COS], 5), "join(boundaries"),
        (lambda: S.join(COS, []), "join(schedules"),
        (lambda: fnopt.adam(b1=["0.5"]), "adam(b1"),
        (lambda: S.constant(np.complex64(1.0)), "constant(value"),
        (lambda: T.lookahead("sgd"), "lookahead(inner"),
        (lambda: T.skip_nonfinite(fnopt.sgd), "skip_nonfinite(inner"),
        (lambda: _lr_find(start_lr=np.array([1e-7, 1e-6])), "lr_find(start_lr"),
        (lambda: _lr_find(smoothing=np.array([0.5, 0.9])), "lr_find(smoothing"),
        (lambda: S.one_cycle(1.0, 100, three_phase="False"), "one_cycle(three_phase"),
    ],
)
def test_fixed_validation_gaps(make, where):
    """Inputs that used to be accepted (strings inside lists, complex NumPy
    scalars, truthy strings for switches) or crashed with a TypeError /
    AttributeError / obscure scan error."""
    with pytest.raises(ValueError, match="^`" + re.escape(where)):
        make()


def test_integer_step_sizes_beyond_int32():
    """Python ints too large for int32 used to raise OverflowError when the
    schedule was evaluated, and two int32 step sizes whose sum overflows
    gave a wrapped cycle length (the wave stuck at ``base_value``)."""
    n = 3 * 2**29  # n + n > 2**31 - 1
    steps = jnp.asarray([0, n, INT32_MAX], jnp.int32)
    for mode in ("triangular", "triangular2"):
        for make in (S.cyclic, S.cyclic_momentum):
            exact = np.asarray(make(0.1, 1.0, n, n, mode=mode)(steps))
            rounded = np.asarray(make(0.1, 1.0, float(n), float(n), mode=mode)(steps))
            np.testing.assert_allclose(exact, rounded, rtol=1e-6)
    np.testing.assert_allclose(S.cyclic(0.1, 1.0, n, n)(steps), [0.1, 1.0, 0.1 + 0.9 * (1 - (INT32_MAX - n) / n)], rtol=1e-5)
    for sched in (S.step_decay(1.0, 2**40), S.cyclic(0.1, 1.0, 2**40), S.cosine_warm_restarts(1.0, 2**40)):
        assert np.all(np.isfinite(np.asarray(sched(steps))))
    np.testing.assert_array_equal(S.step_decay(1.0, 2**40)(steps), np.ones(3))
