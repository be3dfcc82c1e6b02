"""Lion (issue 13): step-for-step parity with Optax 0.2.8's ``lion`` /
``scale_by_lion`` for every option, plus the checks every optimizer gets.

Tolerances: see ``alias_checks`` (float32: rtol 1e-4, atol 1e-5 on the
params after each of 30 steps; x64: rounding). Lion's sign makes every
step exactly ``lr`` away from the sign's discontinuity, so the runs agree
to the last bit unless a coordinate of ``c_t`` sits at rounding distance
from 0.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from alias_checks import (
    MASK,
    assert_complex_parity,
    assert_parity,
    check_checkpoint_round_trip,
    check_empty,
    check_group_tree,
    check_optax_defaults,
    check_vmap,
    run_optax,
)
from transforms_problem import params0, run_fnopt

import fnopt
from fnopt import schedules, transforms

LR_SCHEDULE = schedules.cosine_decay(0.03, 30)
WD_SCHEDULE = schedules.linear(0.0, 0.5, 30)

CASES = {
    "defaults": (lambda: fnopt.lion(0.01), lambda: optax.lion(0.01)),
    "betas-wd-mask": (
        lambda: fnopt.lion(0.02, 0.8, 0.95, weight_decay=0.3, mask=MASK),
        lambda: optax.lion(0.02, 0.8, 0.95, weight_decay=0.3, mask=MASK),
    ),
    "callable-mask": (
        lambda: fnopt.lion(0.02, weight_decay=0.3, mask=lambda p: {"w": False, "b": True}),
        lambda: optax.lion(0.02, weight_decay=0.3, mask=lambda p: {"w": False, "b": True}),
    ),
    "no-wd": (lambda: fnopt.lion(0.01, weight_decay=0.0), lambda: optax.lion(0.01, weight_decay=0.0)),
    # The same schedule functions on both sides (Optax's own schedules
    # compute in float32 even under x64).
    "schedules": (
        lambda: fnopt.lion(LR_SCHEDULE, weight_decay=WD_SCHEDULE),
        lambda: optax.lion(LR_SCHEDULE, weight_decay=WD_SCHEDULE),
    ),
    "smooth": (
        lambda: fnopt.chain(transforms.scale_by_lion(0.85, 0.97, mode="smooth", smooth_beta=3.0), transforms.scale_by_learning_rate(0.02)),
        lambda: optax.chain(optax.scale_by_lion(0.85, 0.97, mode="smooth", smooth_beta=3.0), optax.scale(-0.02)),
    ),
    "refined": (
        lambda: fnopt.lion(0.02, mode="refined"),
        lambda: optax.chain(optax.scale_by_lion(mode="refined"), optax.add_decayed_weights(1e-3), optax.scale(-0.02)),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_optax(name):
    ours, theirs = CASES[name]
    assert_parity(ours(), theirs())


def test_complex_params_match_optax():
    # sign(c) = c / |c| for complex c, in JAX and so in both libraries.
    assert_complex_parity(fnopt.lion(0.01, 0.8, 0.95, weight_decay=0.2), optax.lion(0.01, 0.8, 0.95, weight_decay=0.2))


def test_bfloat16_momentum_is_stored_in_bfloat16():
    state = fnopt.lion(0.01, mu_dtype=jnp.bfloat16).init(params0())
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state[0].mu))


@pytest.mark.slow
def test_bfloat16_momentum_matches_optax():
    ours = fnopt.lion(0.01, mu_dtype=jnp.bfloat16)
    # Optax multiplies the bfloat16 m by b1 in bfloat16 (b1 itself rounded
    # to 0.8984) before adding (1 - b1) g; fnopt reads m into float32 and
    # works there. On this problem the signs agree for 27 steps (step 28
    # flips one coordinate whose c_t is at bfloat16 rounding distance from 0).
    np.testing.assert_allclose(
        run_fnopt(ours, 25), run_optax(optax.lion(0.01, mu_dtype=jnp.bfloat16), 25), rtol=1e-4, atol=1e-5
    )


def test_update_is_a_sign_step():
    # Every coordinate moves by exactly lr (no decay), whatever the gradient scale.
    params = {"w": jnp.zeros(3), "b": jnp.zeros(2)}
    opt = fnopt.lion(0.125, weight_decay=0.0)
    grads = {"w": jnp.array([1e-20, -3e5, 0.0]), "b": jnp.array([-1e-3, 7.0])}
    updates, _ = opt.update(grads, opt.init(params), params)
    assert updates["w"].tolist() == [-0.125, 0.125, 0.0] and updates["b"].tolist() == [0.125, -0.125]


def test_group_tree_equals_separate_runs():
    check_group_tree(
        lambda **kw: fnopt.lion(mask=None, **kw),
        {"learning_rate": 0.01, "b1": 0.9, "weight_decay": 0.1},
        {"learning_rate": 0.03, "b1": 0.7, "weight_decay": 0.0},
    )


def test_records_hyperparameters():
    opt = fnopt.lion(schedules.step_decay(0.1, 1, 0.5), b2=0.95, mode="smooth", smooth_beta=2.0)
    params = params0()
    state = opt.init(params)
    _, state = opt.update(params, state, params)
    hp = fnopt.hyperparams(state)
    assert set(hp) == {"b1", "b2", "smooth_beta", "weight_decay", "learning_rate", "effective_learning_rate"}
    assert float(hp["learning_rate"]) == pytest.approx(0.1) and float(hp["b2"]) == pytest.approx(0.95)
    _, state = opt.update(params, state, params)
    assert float(fnopt.hyperparams(state)["learning_rate"]) == pytest.approx(0.05)
    assert "smooth_beta" not in fnopt.hyperparams(fnopt.lion(0.1).init(params))


def test_vmap_over_hyperparameters():
    check_vmap(lambda b1: fnopt.lion(0.01, b1=b1), "b1", [0.5, 0.9, 0.99])
    check_vmap(lambda learning_rate: fnopt.lion(learning_rate), "learning_rate", [0.001, 0.01])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: fnopt.lion(0.01, b1=1.0), r"^`lion\(b1=\.\.\.\)` must be in \[0, 1\)"),
        (lambda: fnopt.lion(0.01, b2=-0.1), r"^`lion\(b2=\.\.\.\)`"),
        (lambda: fnopt.lion(-0.01), r"^`lion\(learning_rate=\.\.\.\)`"),
        (lambda: fnopt.lion(0.01, weight_decay=-1.0), r"^`lion\(weight_decay=\.\.\.\)`"),
        (lambda: fnopt.lion(0.01, mode="sign"), r"^`lion\(mode=\.\.\.\)`"),
        (lambda: fnopt.lion(0.01, smooth_beta=0.0), r"^`lion\(smooth_beta=\.\.\.\)`"),
        (lambda: fnopt.lion(0.01, mu_dtype="int8"), r"^`lion\(mu_dtype=\.\.\.\)`"),
        (lambda: fnopt.lion(0.01, mask="w"), r"^`lion\(mask=\.\.\.\)`"),
        (lambda: transforms.scale_by_lion(b1=2.0), r"^`scale_by_lion\(b1=\.\.\.\)`"),
    ],
)
def test_invalid_values_raise_naming_call_and_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_empty_params():
    check_empty(fnopt.lion(0.01, mask=None))


def test_checkpoint_round_trip():
    check_checkpoint_round_trip(fnopt.lion(schedules.cosine_decay(0.01, 10), weight_decay=0.1, mask=MASK))


def test_signature_and_defaults_are_optaxs():
    check_optax_defaults(fnopt.lion, optax.lion)
    check_optax_defaults(transforms.scale_by_lion, optax.scale_by_lion)
