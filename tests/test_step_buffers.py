"""The compiled step keeps the state's buffers lean: scalars shared by a
group are kept once per group, not per leaf, and a donated state is updated
in place without XLA copying the old buffers first (checked on XLA:CPU, in
the optimized HLO of a jitted step that donates params and state)."""

import re

import jax
import jax.numpy as jnp
import optax
import pytest

import fnopt

PARAMS = {"a": jnp.ones((16, 8)), "b": jnp.ones(8), "c": jnp.ones((4, 4, 2))}


def copies(opt, params=PARAMS):
    """``(dtype, shape)`` of each array the donated step copies."""

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    grads = jax.tree.map(lambda p: p * 0.5, params)
    text = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt.init(params), grads).compile().as_text()
    entry = text[text.find("ENTRY"):]
    entry = entry[: entry.find("\n}")]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"=\s*(\w+)\[([\d,]*)\]\S*\s+copy\(", entry)]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the copy pattern is XLA:CPU's")
def test_rprop_does_not_copy_its_step_sizes():
    # The update applied to the params reads the new step sizes; were they
    # recomputed from the donated old ones, XLA would copy those (f32) first.
    float_arrays = [(d, shape) for d, shape in copies(fnopt.rprop(0.1)) if d.startswith("f") and shape]
    assert float_arrays == []


def test_schedule_free_keeps_one_average_per_group():
    opt = fnopt.schedule_free_adamw(0.1)
    state = opt.init(PARAMS)[-1]
    assert len(state.b1) == len(state.max_lr) == len(state.weight_sum) == 1
    assert state.group.tolist() == [0, 0, 0]

    grouped = fnopt.schedule_free_adamw({"a": 0.1, "b": 0.2, "c": 0.1}, b1={"a": 0.9, "b": 0.9, "c": 0.8})
    state = grouped.init(PARAMS)[-1]
    assert len(state.b1) == len(state.max_lr) == len(state.weight_sum) == 3
    assert state.group.tolist() == [0, 1, 2]
    assert [float(b) for b in state.b1] == pytest.approx([0.9, 0.9, 0.8])

    nested = {"enc": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, "head": jnp.ones(2)}
    shared = fnopt.schedule_free_adamw({"enc": 0.1, "head": 0.2}, b1={"enc": {"w": 0.9, "b": 0.8}, "head": 0.9})
    state = shared.init(nested)[-1]
    assert state.group.tolist() == [0, 1, 2]  # enc/b, enc/w, head
    shared = fnopt.schedule_free_adamw({"enc": 0.1, "head": 0.2})
    assert shared.init(nested)[-1].group.tolist() == [0, 0, 1]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the copy pattern is XLA:CPU's")
def test_schedule_free_copies_no_scalar_per_leaf():
    # As Optax's, one b1, max_lr and weight_sum: the scalars copied do not
    # grow with the number of leaves.
    def scalars(n):
        params = {f"w{i:02d}": jnp.ones(4) for i in range(n)}
        return sum(1 for _, shape in copies(fnopt.schedule_free_adamw(0.1), params) if not shape)

    assert scalars(12) == scalars(3)
