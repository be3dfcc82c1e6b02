"""early_stopping(keep_best=True) and start_from_epoch: Keras'
``restore_best_weights`` / ``start_from_epoch`` decisions (a transcription of
Keras 3's ``EarlyStopping.on_epoch_end`` and its own test cases), the params
kept on both feeding paths, under jit / scan / vmap, through the wrappers
``report`` reaches, Linen and NNX, Orbax resume, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnopt
from fnopt.transforms import early_stopping


class KerasBest:
    """Keras 3 ``EarlyStopping`` (keras/src/callbacks/early_stopping.py)
    with ``restore_best_weights`` and ``start_from_epoch``, transcribed; the
    model's weights at epoch ``e`` are the number ``e``."""

    def __init__(self, patience=0, min_delta=0.0, mode="min", baseline=None, start_from_epoch=0):
        self.patience, self.baseline, self.start = patience, baseline, start_from_epoch
        self.less = mode == "min"
        self.min_delta = -abs(min_delta) if self.less else abs(min_delta)
        self.best = math.inf if self.less else -math.inf
        self.wait, self.stopped_epoch, self.stop_training = 0, 0, False
        self.best_weights, self.best_epoch = None, 0

    def _is_improvement(self, value, reference):
        shifted = value - self.min_delta
        return shifted < reference if self.less else shifted > reference

    def on_epoch_end(self, epoch, current, weights):
        if epoch < self.start:
            return
        if self.best_weights is None:
            self.best_weights, self.best_epoch = weights, epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch, self.best_weights = current, epoch, weights
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch, self.stop_training = epoch, True


def keras_run(losses, **cfg):
    """(epochs trained, restored weights) as Keras' fit loop would give them."""
    k = KerasBest(**cfg)
    trained = 0
    for epoch, loss in enumerate(losses):
        trained += 1
        k.on_epoch_end(epoch, loss, epoch)
        if k.stop_training:
            break
    return trained, k.best_weights


def fnopt_run(losses, **cfg):
    """The same loop with fnopt: the params at epoch ``e`` are ``e``."""
    tx = early_stopping(keep_best=True, **cfg)
    state = tx.init({"w": jnp.zeros(2)})
    trained = 0
    for epoch, loss in enumerate(losses):
        trained += 1
        state = fnopt.report(state, loss, params={"w": jnp.full(2, float(epoch))})
        if fnopt.should_stop(state):
            break
    best = fnopt.best_params(state)["w"]
    assert float(best[0]) == float(best[1])
    return trained, int(best[0]), state


def test_keras_own_cases():
    # keras early_stopping_test: test_early_stopping_final_weights_when_restoring_model_weights
    trained, best, _ = fnopt_run([0.2, 0.15, 0.1, 0.11, 0.12], patience=2)
    assert (trained, best) == (5, 2)
    trained, best, _ = fnopt_run([0.9, 0.8, 0.7, 0.71, 0.72, 0.73], patience=5, baseline=0.5)
    assert (trained, best) == (5, 2)
    # test_early_stopping_patience: stopped_epoch == max(patience, 1) + 2
    losses = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
    for patience in range(4):
        trained, best, _ = fnopt_run(losses, patience=patience)
        assert trained - 1 == max(patience, 1) + 2
        assert best == 2
    # test_early_stopping_with_start_from_epoch: at least patience + start epochs
    flat = [1.0] * 20
    for patience, start in [(3, 2), (0, 2)]:
        trained, best, _ = fnopt_run(flat, patience=patience, start_from_epoch=start)
        assert trained >= patience + start
        assert (trained, best) == keras_run(flat, patience=patience, start_from_epoch=start)
        assert best == start  # the first monitored epoch's weights


@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from(["min", "max"]),
    patience=st.integers(0, 3),
    min_delta=st.sampled_from([0.0, 0.5]),
    baseline=st.sampled_from([None, 0.0, 1.5]),
    start=st.integers(0, 4),
    losses=st.lists(st.integers(-8, 8).map(lambda k: k / 4), min_size=10, max_size=10),
)
def test_matches_keras_restore_best_weights(mode, patience, min_delta, baseline, start, losses):
    cfg = dict(mode=mode, patience=patience, min_delta=min_delta, baseline=baseline, start_from_epoch=start)
    trained, best, state = fnopt_run(losses, **cfg)
    k_trained, k_best = keras_run(losses, **cfg)
    assert trained == k_trained
    assert best == k_best
    assert int(state.best_observation) == k_best


def test_value_path_keeps_the_params_the_loss_was_measured_on():
    """With update(..., value=loss) the kept params are the ``params`` of that
    call, i.e. those the loss was computed at (before this update)."""
    tx = fnopt.chain(fnopt.sgd(1.0), early_stopping(patience=2, keep_best=True))
    params = jnp.zeros(3)
    state = tx.init(params)
    losses = [5.0, 4.0, 1.0, 2.0, 3.0, 0.5]
    seen = []
    for loss in losses:
        seen.append(np.asarray(params))
        updates, state = tx.update(-jnp.ones(3), state, params, value=loss)
        params = params + updates
    # stops at the 5th observation (patience 2 after the best, 1.0 at index 2)
    assert bool(fnopt.should_stop(state))
    np.testing.assert_array_equal(fnopt.best_params(state), seen[2])
    assert int(state[1].observations) == 5  # the 6th came after the stop: ignored


def test_window_keeps_the_params_of_the_update_completing_it():
    tx = early_stopping(patience=5, window=2, keep_best=True)
    state = tx.init(jnp.zeros(1))
    for step, loss in enumerate([3.0, 1.0, 0.5, 0.7]):  # observations 2.0, 0.6
        _, state = tx.update(jnp.zeros(1), state, jnp.full(1, float(step)), value=loss)
    assert float(state.best) == pytest.approx(0.6)
    np.testing.assert_array_equal(fnopt.best_params(state), [3.0])


def test_before_any_observation_best_params_are_the_initial_params_and_own_buffers():
    params = {"a": jnp.arange(3.0), "b": None, "c": jnp.ones((2, 2), jnp.bfloat16)}
    tx = early_stopping(keep_best=True)
    state = tx.init(params)
    best = fnopt.best_params(state)
    assert best["b"] is None and best["c"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(best["a"], params["a"])
    assert best["a"] is not params["a"]  # a copy: the step may donate both
    # without keep_best, no copy is held
    assert early_stopping().init(params).best_params is None


def test_jit_scan_vmap_patience_sweep():
    """A vmapped sweep over patience inside one jitted scan: each member keeps
    the params of its own best observation."""
    losses = jnp.array([4.0, 3.0, 2.0, 2.5, 1.0, 1.5, 1.6, 1.7, 1.8, 0.1])

    def run(patience):
        tx = early_stopping(patience=patience, keep_best=True)
        state = tx.init(jnp.zeros(2))

        def epoch(state, xs):
            e, loss = xs
            return fnopt.report(state, loss, params=jnp.full(2, e)), None

        state, _ = jax.lax.scan(epoch, state, (jnp.arange(10.0), losses))
        return fnopt.best_params(state)[0], fnopt.should_stop(state)

    best, stopped = jax.jit(jax.vmap(run))(jnp.array([1.0, 2.0, 10.0]))
    expected = [keras_run(list(map(float, losses)), patience=p)[1] for p in (1, 2, 10)]
    np.testing.assert_array_equal(best, expected)
    np.testing.assert_array_equal(stopped, [True, True, False])


@pytest.mark.parametrize(
    "wrap",
    ["optax.chain", "inject_hyperparams", "MultiSteps", "partition_outside", "lookahead"],
)
def test_reaches_through_wrappers(wrap):
    params = {"w": jnp.zeros(2), "b": jnp.zeros(1)}
    stop = early_stopping(patience=1, keep_best=True)
    if wrap == "optax.chain":
        tx = optax.chain(optax.sgd(1.0), stop)
    elif wrap == "inject_hyperparams":
        tx = optax.inject_hyperparams(lambda learning_rate: fnopt.chain(fnopt.sgd(learning_rate), stop))(1.0)
    elif wrap == "MultiSteps":
        tx = optax.MultiSteps(fnopt.chain(fnopt.sgd(1.0), stop), every_k_schedule=1)
    elif wrap == "partition_outside":
        inner = optax.partition({"w": optax.sgd(1.0), "b": optax.set_to_zero()}, {"w": "w", "b": "b"})
        tx = fnopt.chain(inner, stop)
    else:
        tx = fnopt.transforms.lookahead(fnopt.chain(fnopt.sgd(1.0), stop), sync_period=2)
    state = tx.init(params)
    for e, loss in enumerate([2.0, 1.0, 1.5]):
        marked = jax.tree.map(lambda p: jnp.full_like(p, e), params)
        state = fnopt.report(state, loss, params=marked)
    best = fnopt.best_params(state)
    np.testing.assert_array_equal(best["w"], [1.0, 1.0])
    assert bool(fnopt.should_stop(state))


def test_linen_train_state_reports_its_own_params():
    nn = pytest.importorskip("flax.linen")
    import fnopt.flax

    model = nn.Dense(1)
    x = jnp.ones((4, 3), jnp.float32)  # Flax params are float32, also under x64
    params = model.init(jax.random.key(0), x)["params"]
    tx = fnopt.chain(fnopt.sgd(0.1), early_stopping(patience=1, keep_best=True))
    state = fnopt.flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    grads = jax.tree.map(jnp.ones_like, params)
    kept = []
    for loss in [2.0, 1.0, 3.0]:
        state = state.apply_gradients(grads=grads)
        kept.append(state.params)
        state = state.report(loss)
    assert bool(state.should_stop)
    jax.tree.map(np.testing.assert_array_equal, fnopt.best_params(state), kept[1])


def test_nnx_optimizer_keeps_and_restores_the_best_model():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    tx = fnopt.chain(fnopt.sgd(0.5), early_stopping(patience=1, keep_best=True))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    snapshots = []
    for loss in [2.0, 1.0, 3.0]:
        optimizer.update(model, grads)
        snapshots.append(np.asarray(model.kernel.get_value()))
        fnopt.report(optimizer, loss, params=model)
    assert bool(fnopt.should_stop(optimizer))
    nnx.update(model, fnopt.best_params(optimizer))
    np.testing.assert_array_equal(model.kernel.get_value(), snapshots[1])
    # the value= path of nnx.Optimizer.update passes the model's params
    model2 = nnx.Linear(2, 1, rngs=nnx.Rngs(1))
    optimizer2 = nnx.Optimizer(model2, tx, wrt=nnx.Param)
    before = np.asarray(model2.kernel.get_value())
    optimizer2.update(model2, grads, value=1.0)
    np.testing.assert_array_equal(fnopt.best_params(optimizer2)["kernel"], before)


def test_orbax_resume_is_bit_identical(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    tx = fnopt.chain(fnopt.adam(0.1), early_stopping(patience=2, keep_best=True, start_from_epoch=1))
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    losses = [3.0, 2.0, 1.0, 1.5, 0.9, 1.2, 1.3, 1.4]

    @jax.jit
    def epoch(params, state, loss):
        grads = jax.tree.map(lambda p: p - 0.5, params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        return params, fnopt.report(state, loss, params=params)

    def run(params, state, epochs):
        for e in epochs:
            params, state = epoch(params, state, losses[e])
        return params, state

    full = run(params, tx.init(params), range(len(losses)))
    half = run(params, tx.init(params), range(4))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "ckpt", half)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, (params, tx.init(params)))
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(tmp_path / "ckpt", target)
    resumed = run(*restored, range(4, len(losses)))
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert bool(fnopt.should_stop(resumed[1]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(keep_best="True"), "keep_best"),
        (dict(keep_best=1), "keep_best"),
        (dict(start_from_epoch=-1), "start_from_epoch"),
        (dict(start_from_epoch=1.5), "start_from_epoch"),
        (dict(start_from_epoch=True), "start_from_epoch"),
        (dict(start_from_epoch=math.nan), "start_from_epoch"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=rf"early_stopping\({match}="):
        early_stopping(**kwargs)


def test_missing_or_mismatched_params_are_errors():
    tx = early_stopping(keep_best=True)
    state = tx.init({"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"report\(opt_state, value, params=params\)"):
        fnopt.report(state, 1.0)
    with pytest.raises(ValueError, match="keep_best=True"):
        tx.update({"w": jnp.zeros(2)}, state, value=1.0)
    with pytest.raises(ValueError, match="structure"):
        fnopt.report(state, 1.0, params={"v": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"\['w'\] have shape \(3,\)"):
        fnopt.report(state, 1.0, params={"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="no `early_stopping\\(keep_best=True\\)`"):
        fnopt.best_params(early_stopping().init({"w": jnp.zeros(2)}))
    # without keep_best, report needs no params
    plain = early_stopping()
    fnopt.report(plain.init({"w": jnp.zeros(2)}), 1.0)


def test_an_unfed_early_stopping_is_reported():
    tx = fnopt.chain(fnopt.sgd(0.1), early_stopping(patience=1))
    params = jnp.zeros(2)
    state = tx.init(params)
    assert int(fnopt.hyperparams(state)["early_stopping_observations"]) == 0
    assert not bool(fnopt.should_stop(state))  # nothing applied yet: no warning
    _, state = tx.update(jnp.ones(2), state, params)
    with pytest.warns(UserWarning, match="never received a metric"):
        fnopt.should_stop(state)
    state = fnopt.report(state, 1.0)
    assert int(fnopt.hyperparams(state)["early_stopping_observations"]) == 1
    fnopt.should_stop(state)  # fed: no warning (warnings are errors here)


def test_an_unfed_plateau_shows_in_hyperparams():
    tx = fnopt.chain(fnopt.sgd(0.1), fnopt.transforms.reduce_on_plateau(patience=0))
    params = jnp.zeros(2)
    state = tx.init(params)
    for _ in range(3):
        _, state = tx.update(jnp.ones(2), state, params)
    assert int(fnopt.hyperparams(state)["plateau_observations"]) == 0
    for _ in range(2):
        _, state = tx.update(jnp.ones(2), state, params, value=1.0)
    assert int(fnopt.hyperparams(state)["plateau_observations"]) == 2


@pytest.mark.parametrize("wrap", ["masked", "partition_inside", "partition_empty_group"])
def test_inside_a_group_report_takes_the_full_params(wrap):
    """Inside optax.masked / partition the state keeps only its group's
    params; report may still be given the full tree (the other leaves stay
    masked out), and an empty group keeps nothing."""
    params = {"w": jnp.zeros(2), "b": jnp.zeros(1), "n": None}
    inner = fnopt.chain(fnopt.sgd(1.0), early_stopping(patience=1, keep_best=True))
    if wrap == "masked":
        tx = optax.masked(inner, {"w": True, "b": False, "n": False})
    elif wrap == "partition_inside":
        tx = optax.partition({"x": inner, "y": optax.sgd(1.0)}, {"w": "x", "b": "y", "n": "y"})
    else:
        tx = optax.partition({"x": inner, "y": optax.sgd(1.0)}, {"w": "y", "b": "y", "n": "y"})
    state = tx.init(params)
    for e, loss in enumerate([2.0, 1.0, 1.5]):
        state = fnopt.report(state, loss, params=jax.tree.map(lambda p: jnp.full_like(p, e), params))
    assert bool(fnopt.should_stop(state))
    best = fnopt.best_params(state)
    if wrap == "partition_empty_group":
        assert not jax.tree.leaves(best)
    else:
        np.testing.assert_array_equal(best["w"], [1.0, 1.0])
        assert isinstance(best["b"], optax.MaskedNode)


def test_empty_params_tree_and_none_leaves():
    tx = fnopt.chain(fnopt.sgd(0.1), early_stopping(patience=0, keep_best=True))
    state = tx.init({})
    _, state = tx.update({}, state, {}, value=1.0)
    state = fnopt.report(state, 2.0, params={})
    assert fnopt.best_params(state) == {} and bool(fnopt.should_stop(state))
    params = {"a": jnp.ones(2), "n": None}
    state = tx.init(params)
    state = fnopt.report(state, 1.0, params={"a": jnp.full(2, 3.0), "n": None})
    np.testing.assert_array_equal(fnopt.best_params(state)["a"], [3.0, 3.0])
    assert fnopt.best_params(state)["n"] is None
