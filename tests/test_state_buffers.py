"""``init`` returns a state whose every leaf is its own buffer, so a jitted
step can donate the state (``donate_argnums``): XLA refuses to donate one
buffer twice, which an eager ``init`` reusing an array in two fields caused."""

import jax
import jax.numpy as jnp
import optax
import pytest
import sweeps

import fnopt
from fnopt import transforms as T

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}

# The optimizer aliases: the public functions wrapped by `friendly` (fnopt/_chain.py).
ALIASES = [name for name in fnopt.__all__ if hasattr(getattr(fnopt, name), "__wrapped__")]


def make(name):
    alias = getattr(fnopt, name)
    try:
        return alias()
    except TypeError:  # learning_rate is required (Optax-parity aliases)
        return alias(1e-3)


OPTIMIZERS = {name: (lambda name=name: make(name)) for name in ALIASES}
OPTIMIZERS.update({
    "adam(amsgrad)": lambda: fnopt.adam(amsgrad=True),
    "plateau+stopping+cooldown": lambda: fnopt.chain(
        fnopt.sgd(0.1), T.reduce_on_plateau(), T.cooldown(10, patience=2), T.early_stopping()),
    "accumulate": lambda: T.accumulate_gradients(fnopt.adam(), 2),
    "skip_nonfinite": lambda: T.skip_nonfinite(fnopt.adam()),
    "average_params": lambda: fnopt.chain(fnopt.sgd(0.1), T.early_stopping(), T.average_params(dtype=jnp.float32)),
    "average_params(swa)": lambda: fnopt.chain(fnopt.sgd(0.1), T.average_params("swa")),
})


@pytest.mark.parametrize("name", sweeps.sweep(
    sorted(OPTIMIZERS), sweeps.OPTIMIZERS + ("adam(amsgrad)", "plateau+stopping+cooldown", "accumulate", "average_params")
))
def test_init_leaves_are_distinct_buffers_and_the_state_can_be_donated(name):
    opt = OPTIMIZERS[name]()
    params = {"w": PARAMS["w"]} if name == "muon" else PARAMS  # Muon takes matrices only
    state = opt.init(params)
    ids = [id(x) for x in jax.tree.leaves(state)]
    assert len(ids) == len(set(ids)), name

    @jax.jit
    def step(params, state):
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    donating = jax.jit(step, donate_argnums=(1,))
    params, state = donating(params, state)
    params, state = donating(params, state)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))
