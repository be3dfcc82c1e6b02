"""transforms.cooldown and fnopt.start_cooldown: the decay shapes against
Hugging Face's WSD decay transcribed in float64 NumPy, the start decisions
against traces worked out by hand from torch's plateau rule, the effective
learning rate, lax.scan / vmap sweeps, wrappers and checkpoints."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnopt
from fnopt.transforms import cooldown


def hf_wsd_decay(step_in_decay, decay_steps, shape, min_ratio):
    """The decay branch of transformers' ``_get_wsd_scheduler_lambda``
    (num_cycles=0.5), and ``min_lr_ratio`` after the decay."""
    if step_in_decay >= decay_steps:
        return min_ratio
    progress = step_in_decay / max(1, decay_steps)
    if shape == "linear":
        factor = 1.0 - progress
    elif shape == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
    else:
        factor = 1.0 - math.sqrt(progress)
    return max(0.0, factor * (1.0 - min_ratio) + min_ratio)


def scales(tx, state, steps, start_at=None, values=None):
    """The update multipliers of ``tx`` (fed ones) over ``steps`` updates."""
    out = []
    for t in range(steps):
        if t == start_at:
            state = fnopt.start_cooldown(state)
        kw = {} if values is None else {"value": values[t]}
        u, state = tx.update(jnp.ones(()), state, **kw)
        out.append(float(u))
    return out, state


@pytest.mark.parametrize("shape", ["1-sqrt", "linear", "cosine"])
@pytest.mark.parametrize("min_scale", [0.0, 0.1])
def test_shapes_equal_hugging_face_wsd_decay(shape, min_scale):
    decay, start = 7, 3
    tx = cooldown(decay, shape=shape, min_scale=min_scale)
    got, _ = scales(tx, tx.init(jnp.zeros(())), 15, start_at=start)
    want = [1.0 if t < start else hf_wsd_decay(t - start, decay, shape, min_scale) for t in range(15)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_no_start_means_scale_one_forever_and_jit_compiles_once():
    tx = cooldown(5)
    state = tx.init(jnp.zeros(2))
    step = jax.jit(tx.update)
    for _ in range(4):
        u, state = step(jnp.ones(2), state)
        assert u.tolist() == [1.0, 1.0]
    assert int(state.start) == -1


def test_start_is_never_restarted():
    tx = cooldown(4, shape="linear")
    state = fnopt.start_cooldown(tx.init(jnp.zeros(())))
    got, state = scales(tx, state, 3)
    again = fnopt.start_cooldown(state)
    assert int(again.start) == 0
    more, _ = scales(tx, again, 3)
    assert got + more == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_hand_written_trace_report():
    # patience=2, absolute threshold 0.5, mode min. Reports (one per update,
    # after it): 5 best; 4 best; 3.8 bad1 (not < 4 - 0.5); 3.6 bad2; 3.4 is
    # < 3.5: best, bad0; 3.3 bad1; 3.2 bad2; 3.1 bad3 > 2: the cooldown
    # starts at the next update (index 8). decay 2, linear: 1, 0.5, 0, 0.
    tx = cooldown(2, shape="linear", patience=2, threshold=0.5, threshold_mode="abs")
    state = tx.init(jnp.zeros(()))
    losses = [5.0, 4.0, 3.8, 3.6, 3.4, 3.3, 3.2, 3.1, 9.0, 9.0, 9.0, 0.1]
    got = []
    for loss in losses:
        u, state = tx.update(jnp.ones(()), state)
        got.append(float(u))
        state = fnopt.report(state, loss)
    assert got == [1.0] * 9 + [0.5, 0.0, 0.0]
    assert int(state.start) == 8


def test_hand_written_trace_value_window_mode_max():
    # mode max, patience 0, relative threshold 0.1, window 2 (value= per
    # update; the update that completes a deciding window is the first
    # cooldown update). Means: (1,3)=2 best; (2.1,2.1)=2.1 not > 2.2: bad1
    # > 0 -> starts at update 3. decay 2, 1-sqrt: 1, 1 - sqrt(.5), 0.
    tx = cooldown(2, patience=0, threshold=0.1, mode="max", window=2)
    values = [1.0, 3.0, 2.1, 2.1, 50.0, 50.0, 50.0]
    got, state = scales(tx, tx.init(jnp.zeros(())), 7, values=values)
    np.testing.assert_allclose(got, [1, 1, 1, 1, 1 - math.sqrt(0.5), 0, 0], atol=1e-7)
    assert int(state.start) == 3


def test_negative_metric_relative_threshold_is_not_an_improvement():
    # best -1; -0.95 is worse (torch would call it better: -1 * (1 - 0.1) = -0.9).
    tx = cooldown(1, patience=0, threshold=0.1)
    state = fnopt.report(fnopt.report(tx.init(jnp.zeros(())), -1.0), -0.95)
    assert int(state.start) == 0


def test_effective_learning_rate_includes_the_cooldown_scale():
    tx = fnopt.chain(fnopt.adamw({"a": 0.1, "b": 0.2}), cooldown(4, shape="linear"))
    params = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    state = fnopt.start_cooldown(tx.init(params))
    for _ in range(2):
        _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    hp = fnopt.hyperparams(state)
    assert float(hp["cooldown_scale"]) == 0.75
    np.testing.assert_allclose(float(hp["a/effective_learning_rate"]), 0.1 * 0.75, rtol=1e-6)
    np.testing.assert_allclose(float(hp["b/effective_learning_rate"]), 0.2 * 0.75, rtol=1e-6)


def test_report_feeds_a_lone_automatic_cooldown_and_rejects_a_manual_one():
    auto = cooldown(3, patience=0).init(jnp.zeros(()))
    fnopt.report(auto, 1.0)
    manual = cooldown(3).init(jnp.zeros(()))
    with pytest.raises(ValueError, match=r"^`report\("):
        fnopt.report(manual, 1.0)
    with pytest.raises(ValueError, match=r"^`start_cooldown\(opt_state\)`"):
        fnopt.start_cooldown(fnopt.adam().init(jnp.zeros(2)))


def test_jitted_start_and_report_and_wrappers():
    tx = optax.chain(optax.masked(cooldown(2, patience=0), {"w": True}), fnopt.sgd(1.0))
    params = {"w": jnp.zeros(2)}
    state = jax.jit(fnopt.report)(tx.init(params), 1.0)
    state = jax.jit(fnopt.report)(state, 2.0)
    assert int(state[0].inner_state.start) == 0
    state = jax.jit(fnopt.start_cooldown)(tx.init(params))
    assert int(state[0].inner_state.start) == 0


def test_lax_scan_and_vmapped_sweep_members_cool_down_at_different_steps():
    tx = fnopt.chain(fnopt.sgd(1.0), cooldown(4, shape="linear"))

    def run(start_at):
        def step(state, t):
            started = fnopt.start_cooldown(state)
            state = jax.tree.map(lambda a, b: jnp.where(t == start_at, a, b), started, state)
            u, state = tx.update(jnp.ones(()), state)
            return state, -u

        return jax.lax.scan(step, tx.init(jnp.zeros(())), jnp.arange(8))[1]

    got = jax.jit(jax.vmap(run))(jnp.asarray([0, 2, 5, 100]))
    want = [[1.0 if t < s else max(0.0, 1 - (t - s) / 4) for t in range(8)] for s in (0, 2, 5, 100)]
    np.testing.assert_allclose(got, want, atol=1e-7)


def test_vmap_over_patience():
    values = jnp.asarray([3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0])

    def run(patience):
        tx = cooldown(100, patience=patience, threshold=0.0)

        def step(state, v):
            u, state = tx.update(jnp.ones(()), state, value=v)
            return state, u

        state, _ = jax.lax.scan(step, tx.init(jnp.zeros(())), values)
        return state.start

    # the k-th repeat of 2.0 (update 1 + k) is non-improving observation k;
    # the start is at update 1 + (patience + 1).
    starts = jax.jit(jax.vmap(run))(jnp.asarray([0, 1, 3, 9]))
    assert starts.tolist() == [2, 3, 5, -1]


def test_schedules_and_traced_decay_steps():
    tx = jax.jit(lambda d: cooldown(d, shape="linear").update(jnp.ones(()), fnopt.start_cooldown(cooldown(d).init(None))))
    assert float(tx(3.0)[0]) == 1.0
    tx = cooldown(lambda t: 2.0, min_scale=lambda t: 0.5, shape="linear")
    got, _ = scales(tx, tx.init(None), 4, start_at=0)
    assert got == [1.0, 0.75, 0.5, 0.5]


def test_checkpoint_round_trip_continues_bit_for_bit():
    tx = fnopt.chain(fnopt.adam(0.1), cooldown(5, patience=1))
    params = jnp.asarray([1.0, -2.0])
    state = tx.init(params)
    grads = [jnp.asarray([0.5 * k, -1.0]) for k in range(10)]
    for k in range(4):
        u, state = tx.update(grads[k], state, params, value=float(4 - k) if k < 2 else 9.0)
        params = params + u
    leaves, treedef = jax.tree.flatten(state)
    restored = jax.tree.unflatten(treedef, [np.asarray(x) for x in leaves])
    outs = []
    for s in (state, restored):
        p = params
        for k in range(4, 10):
            u, s = tx.update(grads[k], s, p, value=1.0)
            p = p + u
        outs.append((p, s))
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert int(outs[0][1][1].start) == 3


def test_nnx_optimizer_and_train_state():
    pytest.importorskip("flax")
    from flax import nnx

    import fnopt.flax

    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, fnopt.chain(fnopt.sgd(0.1), cooldown(3)), wrt=nnx.Param)
    assert fnopt.start_cooldown(opt) is opt
    assert int(nnx.as_pure(opt.opt_state)[1].start) == 0
    ts = fnopt.flax.TrainState.create(apply_fn=None, params=jnp.zeros(2), tx=fnopt.chain(fnopt.sgd(0.1), cooldown(3, patience=0)))
    ts = fnopt.start_cooldown(fnopt.report(ts, 1.0))
    assert int(ts.opt_state[1].start) == 0


INVALID = [
    (lambda: cooldown(0), "`cooldown(decay_steps=...)` must be > 0"),
    (lambda: cooldown(5, shape="sqrt"), "`cooldown(shape=...)` must be one of"),
    (lambda: cooldown(5, min_scale=1.5), "`cooldown(min_scale=...)` must be in [0, 1]"),
    (lambda: cooldown(5, patience=-1), "`cooldown(patience=...)` must be >= 0"),
    (lambda: cooldown(5, patience=1.5), "`cooldown(patience=...)` must be an integer"),
    (lambda: cooldown(5, window=0), "`cooldown(window=...)` must be >= 1"),
    (lambda: cooldown(5, mode="low"), "`cooldown(mode=...)`"),
    (lambda: cooldown(5, threshold_mode="x"), "`cooldown(threshold_mode=...)`"),
    (lambda: cooldown(5, threshold=-1.0), "`cooldown(threshold=...)` must be >= 0"),
]


@pytest.mark.parametrize("make,message", INVALID)
def test_invalid_values_raise_naming_the_argument(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value).startswith(message), str(info.value)
