"""Weight averaging (issue 16): ``transforms.average_params`` (EMA / SWA),
``fnopt.averaged_params`` and ``schedules.swa``.

Oracles: torch ``swa_utils.AveragedModel`` and ``SWALR`` (2.13) step for
step, timm ``ModelEmaV3``'s decay written out from its definition, and NumPy
float64 means; never values fnopt produced.
"""

from __future__ import annotations

import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnopt
from fnopt import schedules as S
from fnopt import transforms as T

X64 = bool(jax.config.jax_enable_x64)
FLOAT = np.float64 if X64 else np.float32


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.normal(size=(3, 2)), FLOAT), "b": jnp.asarray(rng.normal(size=2), FLOAT)}


def _grads(seed, steps):
    rng = np.random.default_rng(seed)
    return [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), FLOAT), _params()) for _ in range(steps)]


def _run(tx, params, grads, jit=False):
    """The params after each update and the states (``jit``: each step
    jitted, as a training step is; XLA then fuses ``a + w * d`` into one
    multiply-add, as torch's CPU lerp kernel does)."""
    def step(g, state, params):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    step = jax.jit(step) if jit else step
    history, states = [], []
    for g in grads:
        params, state = step(g, state, params)
        history.append(params)
        states.append(state)
    return history, states


def _taken(count, start, every):
    return count >= start and (count - start) % every == 0


# ------------------------------------------------------------ torch oracle


def _torch_model(torch, params):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(np.asarray(params["w"])))
            self.b = torch.nn.Parameter(torch.tensor(np.asarray(params["b"])))

    return Model()


@pytest.mark.parametrize(
    "kind,start,every",
    [("ema", 0, 1), ("ema", 3, 2), ("swa", 0, 1), ("swa", 2, 3)],
)
def test_equals_torch_averaged_model_step_for_step(kind, start, every):
    torch = pytest.importorskip("torch")
    from torch.optim import swa_utils

    params = _params()
    decay = 0.9
    tx = fnopt.chain(fnopt.sgd(0.1, momentum=0.9), T.average_params(kind, decay=decay, start=start, every=every))
    history, states = _run(tx, params, _grads(1, 12), jit=True)
    model = _torch_model(torch, params)
    avg_fn = swa_utils.get_ema_multi_avg_fn(decay) if kind == "ema" else None
    averaged = swa_utils.AveragedModel(model, multi_avg_fn=avg_fn)
    for count, (p, state) in enumerate(zip(history, states)):
        with torch.no_grad():  # the model's params after this step: fnopt's
            model.w.copy_(torch.tensor(np.asarray(p["w"])))
            model.b.copy_(torch.tensor(np.asarray(p["b"])))
        if _taken(count, start, every):
            averaged.update_parameters(model)
        ours = state[-1]
        assert int(ours.n_averaged) == int(averaged.n_averaged)
        for name in ("w", "b"):
            expected = getattr(averaged.module, name).detach().numpy()
            # torch's lerp with its weight (1 - decay rounded once): bit for bit.
            np.testing.assert_array_equal(np.asarray(ours.average[name]), expected, err_msg=f"{count} {name}")


def test_ema_of_bf16_params_in_a_float32_average_equals_torch():
    torch = pytest.importorskip("torch")

    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), _params())
    tx = fnopt.chain(fnopt.sgd(0.1), T.average_params(decay=0.99, dtype=jnp.float32))
    grads = [jax.tree.map(lambda g: g.astype(jnp.bfloat16), g) for g in _grads(2, 5)]
    # Eager: under jit XLA may skip the bf16 rounding of `params + updates`
    # before the float32 average (excess precision), which torch does not.
    history, states = _run(tx, params, grads)
    assert states[-1][-1].average["w"].dtype == jnp.float32
    assert history[-1]["w"].dtype == jnp.bfloat16
    ema = torch.tensor(np.asarray(params["w"], np.float32))
    for count, p in enumerate(history):
        current = torch.tensor(np.asarray(p["w"], np.float32))
        ema = current.clone() if count == 0 else torch.lerp(ema, current, 1 - 0.99)
    # Eager XLA does not fuse the multiply-add that torch's kernel does: ulps apart.
    np.testing.assert_allclose(np.asarray(states[-1][-1].average["w"]), ema.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("anneal_epochs", [0, 1, 2, 7])
def test_swa_schedule_equals_torch_swalr(anneal, anneal_epochs):
    torch = pytest.importorskip("torch")
    from torch.optim import swa_utils

    lr0, swa_lr = 0.1, 0.013
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr0)
    scheduler = swa_utils.SWALR(opt, swa_lr=swa_lr, anneal_epochs=anneal_epochs, anneal_strategy=anneal)
    expected = []
    for _ in range(12):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    got = np.asarray(S.swa(lr0, swa_lr, anneal_epochs, anneal)(jnp.arange(12)), np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_swa_schedule_joined_after_a_base_schedule_equals_torch_example():
    # torch's documented pattern: at the end of each epoch `scheduler.step()`
    # before swa_start, `swa_scheduler.step()` from it on (torch's example
    # writes `i > swa_start`, i.e. swa_start + 1 here); the base is CosineAnnealingLR.
    torch = pytest.importorskip("torch")
    from torch.optim import swa_utils

    total, swa_start, anneal = 20, 12, 3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    base_t = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    swa_t = swa_utils.SWALR(opt, swa_lr=0.02, anneal_epochs=anneal)
    base = S.cosine_decay(0.1, total)
    lr = S.join([base, S.swa(float(base(swa_start)), 0.02, anneal)], [swa_start])
    got = np.asarray(jax.jit(lr)(jnp.arange(total)), np.float64)
    for epoch in range(total):
        assert got[epoch] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-5), epoch
        opt.step()
        if epoch >= swa_start:
            swa_t.step()
        else:
            base_t.step()


def test_swa_schedule_closed_form_float64():
    # a(t) = (1 - cos(pi t / E)) / 2, value = swa * a + init * (1 - a).
    steps = [0, 1, 2.5, 7, 8, 9, 1000, 2**31 - 1]
    got = np.asarray(S.swa(0.2, 0.05, 8.0)(jnp.asarray(steps, FLOAT)), np.float64)
    for t, value in zip(steps, got):
        a = (1 - math.cos(math.pi * min(t / 8.0, 1.0))) / 2
        assert value == pytest.approx(0.05 * a + 0.2 * (1 - a), rel=1e-6), t


# ---------------------------------------------------- numpy float64 oracles


@settings(max_examples=10, deadline=None, derandomize=True)
@given(value=st.floats(-1e3, 1e3), decay=st.floats(0.0, 1.0), steps=st.integers(1, 20))
def test_ema_of_a_constant_is_the_constant(value, decay, steps):
    params = jnp.full((3,), value, FLOAT)
    tx = T.average_params(decay=decay)
    state = tx.init(params)
    for _ in range(steps):
        _, state = tx.update(jnp.zeros_like(params), state, params)
    np.testing.assert_array_equal(np.asarray(fnopt.averaged_params(state)), np.asarray(params))


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    snapshots=st.lists(st.lists(st.floats(-100, 100), min_size=2, max_size=2), min_size=1, max_size=12),
    start=st.integers(0, 3),
    every=st.integers(1, 3),
)
def test_swa_of_n_snapshots_is_their_mean(snapshots, start, every):
    # The params visit each listed point; SWA averages those of the snapshot steps.
    points = np.asarray(snapshots, np.float64)
    tx = T.average_params("swa", start=start, every=every)
    params = jnp.zeros(2, FLOAT)
    state = tx.init(params)
    for point in points:
        target = jnp.asarray(point, FLOAT)
        _, state = tx.update(target - params, state, params)
        params = target
    taken = [p for c, p in enumerate(points) if _taken(c, start, every)]
    assert int(state.n_averaged) == len(taken)
    expected = np.mean(taken, axis=0) if taken else points[-1]
    got = np.asarray(fnopt.averaged_params(state, params))
    np.testing.assert_allclose(got, expected, rtol=1e-5 if not X64 else 1e-12, atol=1e-4 if not X64 else 1e-10)


def test_ema_warmup_is_timm_model_ema_v3():
    # timm ModelEmaV3.get_decay(step) with update_after_step=0, called after
    # step `n + 1`: decay = clip(1 - (1 + n / gamma) ** -power, min_decay, decay); 0 at n = 0.
    gamma, power, top, floor = 2.0, 0.75, 0.99, 0.1
    values = np.linspace(1.0, 12.0, 12)
    tx = T.average_params(decay=top, warmup=True, warmup_gamma=gamma, warmup_power=power, min_decay=floor)
    params = jnp.zeros((), FLOAT)
    state = tx.init(params)
    ema, decays = None, []
    for n, v in enumerate(values):
        _, state = tx.update(jnp.asarray(v, FLOAT) - params, state, params)
        params = jnp.asarray(v, FLOAT)
        d = 0.0 if n == 0 else max(min(1 - (1 + n / gamma) ** -power, top), floor)
        ema = v if ema is None else ema + (1 - d) * (v - ema)
        if n > 0:
            decays.append(d)
            assert float(state.hyperparams["decay"]) == pytest.approx(d, rel=1e-6)
    assert float(state.average) == pytest.approx(ema, rel=1e-5)
    assert decays[-1] < top and decays[0] >= floor  # the ramp is visible in this range


def test_decay_may_be_a_schedule_of_the_update_count():
    sched = S.linear(0.0, 0.5, 4)
    tx = T.average_params(decay=sched)
    params = jnp.zeros((), FLOAT)
    state = tx.init(params)
    ema = None
    for count, v in enumerate([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]):
        _, state = tx.update(jnp.asarray(v, FLOAT) - params, state, params)
        params = jnp.asarray(v, FLOAT)
        d = min(count, 4) / 4 * 0.5
        ema = v if ema is None else d * ema + (1 - d) * v
    assert float(state.average) == pytest.approx(ema, rel=1e-6)
    assert float(fnopt.hyperparams(state)["decay"]) == pytest.approx(0.5)


# ------------------------------------------------------------ transforms


def test_updates_pass_through_unchanged_and_params_are_required():
    tx = T.average_params()
    params = _params()
    state = tx.init(params)
    g = _grads(0, 1)[0]
    updates, _ = tx.update(g, state, params)
    assert updates is g
    with pytest.raises(ValueError, match=r"`average_params.update` needs the params"):
        tx.update(g, state)


def test_state_layout_dtype_and_init_copy():
    params = _params()
    state = T.average_params(dtype=jnp.bfloat16).init(params)
    assert state.average["w"].dtype == jnp.bfloat16
    assert int(state.n_averaged) == 0 and int(state.count) == 0
    state = T.average_params("swa").init(params)
    assert state.hyperparams == {}
    assert state.average["w"].dtype == params["w"].dtype
    assert state.average["w"] is not params["w"]
    np.testing.assert_array_equal(state.average["w"], params["w"])


def test_under_jit_and_scan_equals_the_python_loop():
    params = _params()
    grads = _grads(3, 6)
    tx = fnopt.chain(fnopt.adam(0.1), T.average_params("ema", decay=0.8, start=1, every=2))
    _, states = _run(tx, params, grads)

    @jax.jit
    def run(params):
        def step(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (_, s), _ = jax.lax.scan(step, (params, tx.init(params)), jax.tree.map(lambda *g: jnp.stack(g), *grads))
        return s

    scanned = run(params)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(states[-1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_vmap_over_decay_start_and_every():
    params = jnp.zeros(2, FLOAT)
    values = [jnp.full(2, v, FLOAT) for v in (1.0, 2.0, 4.0, 8.0, 16.0)]

    def final(decay, start, every):
        tx = T.average_params(decay=decay, start=start, every=every)
        state, p = tx.init(params), params
        for v in values:
            _, state = tx.update(v - p, state, p)
            p = v
        return state.average[0], state.n_averaged

    decays = jnp.asarray([0.0, 0.5, 0.9], FLOAT)
    starts = jnp.asarray([0, 1, 2], jnp.int32)
    everys = jnp.asarray([1, 2, 1], jnp.int32)
    got, n = jax.jit(jax.vmap(final))(decays, starts, everys)
    for i, (d, s, e) in enumerate(zip([0.0, 0.5, 0.9], [0, 1, 2], [1, 2, 1])):
        ema, k = None, 0
        for c, v in enumerate([1.0, 2.0, 4.0, 8.0, 16.0]):
            if _taken(c, s, e):
                ema = v if ema is None else d * ema + (1 - d) * v
                k += 1
        assert int(n[i]) == k
        assert float(got[i]) == pytest.approx(ema, rel=1e-6)


def test_a_stacked_vmapped_state_is_read_outside_vmap():
    starts = jnp.asarray([0, 5], jnp.int32)  # two members

    def run(start):
        tx = fnopt.chain(fnopt.sgd(1.0), T.average_params("swa", start=start))
        p = jnp.zeros(3, FLOAT)
        s = tx.init(p)
        for _ in range(3):  # params -1, -2, -3
            u, s = tx.update(jnp.ones(3, FLOAT), s, p)
            p = optax.apply_updates(p, u)
        return p, s

    params, state = jax.jit(jax.vmap(run))(starts)
    got = fnopt.averaged_params(state, params)
    np.testing.assert_allclose(np.asarray(got), [[-2.0] * 3, [-3.0] * 3])  # member 1: no snapshot yet


def test_complex_params_are_averaged():
    params = jnp.asarray([1 + 2j, -1j], jnp.complex64)
    tx = T.average_params(decay=0.5)
    state = tx.init(params)
    for target in ([2 + 2j, 0j], [4 + 0j, 2j]):
        target = jnp.asarray(target, jnp.complex64)
        _, state = tx.update(target - params, state, params)
        params = target
    np.testing.assert_allclose(np.asarray(state.average), [3 + 1j, 1j], rtol=1e-6)
    assert state.average.dtype == jnp.complex64


def test_chain_allows_average_params_after_early_stopping():
    tx = fnopt.chain(fnopt.sgd(1.0), T.early_stopping(patience=0), T.average_params("swa"))
    fnopt.chain(T.early_stopping(), T.average_params(), T.average_params("swa"))
    with pytest.raises(ValueError, match="only `average_params` may follow it"):
        fnopt.chain(T.early_stopping(), T.average_params(), fnopt.sgd(0.1))
    params = jnp.zeros(1, FLOAT)
    state = tx.init(params)
    state = fnopt.report(state, 1.0)
    state = fnopt.report(state, 2.0)  # stops
    updates, state = tx.update(jnp.ones(1, FLOAT), state, params)
    assert float(updates[0]) == 0.0 and bool(fnopt.should_stop(state))
    assert int(state[-1].n_averaged) == 1


# ------------------------------------------------------------ wrappers


def test_inside_partition_only_the_group_is_averaged():
    params = _params()
    tx = optax.partition(
        {"avg": fnopt.chain(fnopt.sgd(0.1), T.average_params("swa")), "plain": fnopt.sgd(0.1)},
        {"w": "avg", "b": "plain"},
    )
    history, states = _run(tx, params, _grads(4, 4))
    merged = fnopt.averaged_params(states[-1], history[-1])
    np.testing.assert_allclose(np.asarray(merged["w"]), np.mean([np.asarray(h["w"], np.float64) for h in history], 0), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(merged["b"]), np.asarray(history[-1]["b"]))
    with pytest.raises(ValueError, match="covers only some of the params"):
        fnopt.averaged_params(states[-1])


def test_two_groups_each_with_an_average_are_merged():
    params = _params()
    tx = optax.partition(
        {"ema": fnopt.chain(fnopt.sgd(0.1), T.average_params(decay=0.5)),
         "swa": fnopt.chain(fnopt.sgd(0.1), T.average_params("swa"))},
        {"w": "ema", "b": "swa"},
    )
    history, states = _run(tx, params, _grads(5, 3))
    merged = fnopt.averaged_params(states[-1], history[-1])
    b = [np.asarray(h["b"], np.float64) for h in history]
    np.testing.assert_allclose(np.asarray(merged["b"]), np.mean(b, 0), rtol=1e-5)
    w = [np.asarray(h["w"], np.float64) for h in history]
    np.testing.assert_allclose(np.asarray(merged["w"]), 0.25 * w[0] + 0.25 * w[1] + 0.5 * w[2], rtol=1e-5)
    with pytest.raises(ValueError, match="holds 2 `average_params` states"):
        fnopt.averaged_params(states[-1])
    both = fnopt.chain(fnopt.sgd(0.1), T.average_params(), T.average_params("swa"))
    with pytest.raises(ValueError, match="averaged by two"):
        fnopt.averaged_params(both.init(params), params)


def test_before_the_first_snapshot_the_params_are_returned():
    params = _params()
    tx = fnopt.chain(fnopt.sgd(0.1), T.average_params(start=5))
    history, states = _run(tx, params, _grads(6, 2))
    np.testing.assert_array_equal(fnopt.averaged_params(states[-1], history[-1])["w"], history[-1]["w"])
    np.testing.assert_array_equal(fnopt.averaged_params(states[-1])["w"], params["w"])  # the init copy
    with pytest.raises(ValueError, match="holds no `average_params` state"):
        fnopt.averaged_params(fnopt.sgd(0.1).init(params))


def test_inject_hyperparams_and_multi_steps():
    params = _params()
    grads = _grads(7, 6)
    plain = fnopt.chain(fnopt.sgd(0.1), T.average_params(decay=0.7))
    injected = fnopt.chain(fnopt.sgd(0.1), optax.inject_hyperparams(T.average_params)(decay=0.7))
    _, a = _run(plain, params, grads, jit=True)
    _, b = _run(injected, params, grads, jit=True)
    np.testing.assert_allclose(np.asarray(fnopt.averaged_params(b[-1])["w"]), np.asarray(fnopt.averaged_params(a[-1])["w"]), rtol=1e-6)

    for multi in (optax.MultiSteps(plain, every_k_schedule=2), T.accumulate_gradients(plain, 2)):
        with jax.numpy_dtype_promotion("standard"):  # MultiSteps divides by an int32 count
            history, states = _run(multi, params, grads, jit=True)
        got = fnopt.averaged_params(states[-1], history[-1])
        ws = [np.asarray(history[k]["w"], np.float64) for k in (1, 3, 5)]  # the params after each real step
        expected = ws[0]
        for w in ws[1:]:
            expected = 0.7 * expected + 0.3 * w
        np.testing.assert_allclose(np.asarray(got["w"]), expected, rtol=1e-5)


def test_linen_train_state_and_nnx_optimizer():
    nnx = pytest.importorskip("flax.nnx")
    from fnopt.flax import TrainState

    params = _params()
    tx = fnopt.chain(fnopt.sgd(0.1), T.average_params("swa"))
    ts = TrainState.create(apply_fn=None, params=params, tx=tx)
    seen = []
    for g in _grads(8, 3):
        ts = ts.apply_gradients(grads=g)
        seen.append(np.asarray(ts.params["w"], np.float64))
    np.testing.assert_allclose(np.asarray(fnopt.averaged_params(ts)["w"]), np.mean(seen, 0), rtol=1e-5)

    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    kernels = []
    for _ in range(3):
        grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 3), jnp.float32)) ** 2))(model)
        optimizer.update(model, grads)
        kernels.append(np.asarray(model.kernel[...], np.float64))
    averaged = nnx.clone(model)
    nnx.update(averaged, fnopt.averaged_params(optimizer))
    np.testing.assert_allclose(np.asarray(averaged.kernel[...]), np.mean(kernels, 0), rtol=1e-5)
    assert not np.allclose(np.asarray(model.kernel[...]), np.asarray(averaged.kernel[...]))
    same = fnopt.averaged_params(optimizer.opt_state, nnx.state(model, nnx.Param))
    np.testing.assert_allclose(np.asarray(same["kernel"][...]), np.mean(kernels, 0), rtol=1e-5)


def test_pickle_and_flatten_round_trip_continues_bit_identically():
    params = _params()
    grads = _grads(9, 6)
    tx = fnopt.chain(fnopt.sgd(0.1, momentum=0.9), T.average_params(decay=0.9, every=2))
    _, full = _run(tx, params, grads)
    history, half = _run(tx, params, grads[:3])
    restored = pickle.loads(pickle.dumps(jax.device_get(half[-1])))
    leaves, treedef = jax.tree.flatten(restored)
    restored = treedef.unflatten([jnp.asarray(x) for x in leaves])
    state, p = restored, history[-1]
    for g in grads[3:]:
        u, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(full[-1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------ bad input

BAD = [
    (lambda: T.average_params("mean"), r"`average_params\(kind=...\)` must be one of 'ema', 'swa'"),
    (lambda: T.average_params(decay=1.5), r"`average_params\(decay=...\)` must be in \[0, 1\]"),
    (lambda: T.average_params(decay=True), r"`average_params\(decay=...\)` must be a number"),
    (lambda: T.average_params(decay={"w": 0.9}), r"`average_params\(decay=...\)`.*group tree"),
    (lambda: T.average_params(start=-1), r"`average_params\(start=...\)` must be >= 0"),
    (lambda: T.average_params(start=1.5), r"`average_params\(start=...\)` must be an integer"),
    (lambda: T.average_params(every=0), r"`average_params\(every=...\)` must be >= 1"),
    (lambda: T.average_params(every=False), r"`average_params\(every=...\)` must be a number"),
    (lambda: T.average_params(warmup="yes"), r"`average_params\(warmup=...\)` must be True or False"),
    (lambda: T.average_params("swa", warmup=True), r"`average_params\(warmup=...\)` applies to kind='ema'"),
    (lambda: T.average_params(warmup_gamma=0.0), r"`average_params\(warmup_gamma=...\)` must be > 0"),
    (lambda: T.average_params(warmup_power=-1.0), r"`average_params\(warmup_power=...\)` must be > 0"),
    (lambda: T.average_params(min_decay=2.0), r"`average_params\(min_decay=...\)` must be in \[0, 1\]"),
    (lambda: T.average_params(dtype=jnp.int32), r"`average_params\(dtype=...\)` must be None or a floating dtype"),
    (lambda: S.swa(0.1, 0.05, anneal_steps=-1), r"`swa\(anneal_steps=...\)` must be >= 0"),
    (lambda: S.swa(0.1, float("nan")), r"`swa\(swa_value=...\)` must be finite"),
    (lambda: S.swa(0.1, 0.05, anneal="cosine"), r"`swa\(anneal=...\)` must be one of 'cos', 'linear'"),
]


@pytest.mark.parametrize("make,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_raises_naming_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_structure_mismatch_is_reported():
    tx = T.average_params()
    state = tx.init(_params())
    with pytest.raises(ValueError, match="average_params.update"):
        tx.update({"w": jnp.zeros((3, 2), FLOAT)}, state, {"w": jnp.zeros((3, 2), FLOAT)})
    with pytest.raises(ValueError, match="differ in structure"):
        fnopt.averaged_params(state, {"w": jnp.zeros((3, 2), FLOAT)})


def test_dtypes_follow_the_params_and_x64():
    params = _params()
    tx = T.average_params(decay=0.9)
    _, state = tx.update(params, tx.init(params), params)
    assert state.average["w"].dtype == jnp.dtype(FLOAT)
    assert state.hyperparams["decay"].dtype == jnp.dtype(FLOAT)
    assert state.n_averaged.dtype == jnp.int32
    assert S.swa(0.1, 0.05)(3).dtype == jnp.dtype(FLOAT)


def test_empty_tree_none_leaf_and_an_empty_group():
    """Nothing to average is not an error: an empty params tree, a None
    leaf (kept None), a partition group with no params."""
    tx = fnopt.chain(fnopt.sgd(1.0), T.average_params("swa"))
    state = tx.init({})
    updates, state = jax.jit(tx.update)({}, state, {})
    assert updates == {} and fnopt.averaged_params(state) == {} and int(state[-1].n_averaged) == 1

    params = {"w": jnp.zeros(2), "n": None}
    state = tx.init(params)
    for g in (1.0, 3.0):  # params -1, then -4
        updates, state = tx.update({"w": jnp.full(2, g), "n": None}, state, params)
        params = optax.apply_updates(params, updates)
    averaged = fnopt.averaged_params(state, params)
    assert averaged["n"] is None
    np.testing.assert_allclose(np.asarray(averaged["w"]), [-2.5, -2.5])  # mean of -1 and -4

    empty_group = optax.partition({"avg": tx, "rest": optax.sgd(1.0)}, {"w": "rest", "n": "rest"})
    state = empty_group.init({"w": jnp.zeros(2), "n": None})
    _, state = empty_group.update({"w": jnp.ones(2), "n": None}, state, {"w": jnp.zeros(2), "n": None})
    np.testing.assert_array_equal(fnopt.averaged_params(state, {"w": jnp.ones(2), "n": None})["w"], [1.0, 1.0])
