"""Multi-device checks for ``tests/test_sharding.py``, run in a subprocess.

JAX fixes its device count when it starts, and the pytest process has already
started it with one CPU device, so ``test_sharding.py`` runs this script with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``. It runs every check,
catching failures, and prints one JSON object ``{name: {"ok": bool,
"detail": str}}`` as its last line of output.

Expected values come from NumPy or from the same steps on unsharded
single-device arrays, never from the sharded configuration under test.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import contextlib  # noqa: E402
import json  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
if os.environ.get("FNOPT_X64") == "1":
    jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import fnopt  # noqa: E402
from fnopt import schedules  # noqa: E402
from fnopt import transforms as T  # noqa: E402

X64 = bool(jax.config.jax_enable_x64)
DTYPE = np.float64 if X64 else np.float32
TOL = {"rtol": 1e-12, "atol": 1e-14} if X64 else {"rtol": 1e-5, "atol": 1e-6}
N_DEVICES = 8

# name -> (shape, spec on the 2-D ("data", "model") mesh)
PARAM_LAYOUT = {
    "w1": ((16, 32), P("data", "model")),
    "b1": ((32,), P("model")),
    "w2": ((32, 8), P(None, "model")),
    "b2": ((8,), P()),
}


def optimizers() -> dict:
    """Every alias, a chain of clipping, AdamW on a schedule, plateau
    reduction and early stopping (the last three observe ``value=``), and
    gradient accumulation around Adam and a plateau, and SGD carrying an EMA
    of its weights (after early stopping)."""
    return {
        "sgd": lambda: fnopt.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        "adam": lambda: fnopt.adam(1e-2),
        "adamw": lambda: fnopt.adamw(1e-2, weight_decay=0.1),
        "radam": lambda: fnopt.radam(1e-2),
        "adagrad": lambda: fnopt.adagrad(0.05),
        "rmsprop": lambda: fnopt.rmsprop(1e-2, momentum=0.9, centered=True),
        "ranger": lambda: fnopt.ranger(1e-2, sync_period=2),
        "chain": lambda: fnopt.chain(
            T.clip_by_global_norm(1.0),
            fnopt.adamw(schedules.one_cycle(1e-2, 10)),
            T.reduce_on_plateau(factor=0.5, patience=0),
            T.early_stopping(patience=3, keep_best=True),  # + a copy of the params
        ),
        "accumulate": lambda: T.accumulate_gradients(
            fnopt.chain(fnopt.adam(1e-2), T.reduce_on_plateau(factor=0.5, patience=0)), 2
        ),
        "average": lambda: fnopt.chain(
            fnopt.sgd(0.05, momentum=0.9), T.early_stopping(patience=3), T.average_params(decay=0.9, start=1)
        ),
    }


def make_mesh(axis_type: AxisType) -> jax.sharding.Mesh:
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type, axis_type))


def host_params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(shape) * 0.3).astype(DTYPE) for k, (shape, _) in PARAM_LAYOUT.items()}


def shard_params(params: dict, mesh) -> dict:
    return {k: jax.device_put(v, NamedSharding(mesh, PARAM_LAYOUT[k][1])) for k, v in params.items()}


def loss_fn(params, x, y):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)


def check_state_follows_params(state, params: dict, n_devices: int) -> int:
    """Every array of ``state`` is either a per-parameter buffer (its path
    ends in a parameter's key and it has that parameter's shape) sharded like
    the parameter, or a scalar replicated over all ``n_devices``. Returns the
    number of per-parameter buffers."""
    buffers = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        where = jax.tree_util.keystr(path)
        if jnp.ndim(leaf) == 0:
            assert len(leaf.sharding.device_set) == n_devices, f"{where}: on {leaf.sharding}"
            assert leaf.sharding.is_fully_replicated, f"{where}: {leaf.sharding} is not replicated"
            continue
        key = getattr(path[-1], "key", None)
        assert key in params, f"{where}: a non-scalar state leaf that is not a per-parameter buffer"
        param = params[key]
        assert leaf.shape == param.shape, f"{where}: shape {leaf.shape} != {param.shape}"
        assert leaf.sharding.is_equivalent_to(param.sharding, param.ndim), (
            f"{where}: sharded {leaf.sharding}, its parameter {param.sharding}"
        )
        buffers += 1
    return buffers


# Buffers per parameter of each optimizer's state (a floor, so that a state
# that lost its buffers, not only one sharded wrongly, fails).
MIN_BUFFERS = {"sgd": 1, "adam": 2, "adamw": 2, "radam": 2, "adagrad": 1, "rmsprop": 3, "ranger": 3, "chain": 3, "accumulate": 3, "average": 2}


def init_sharding_check(name: str, axis_type: AxisType, set_mesh: bool):
    def check():
        mesh = make_mesh(axis_type)
        params = shard_params(host_params(), mesh)
        tx = optimizers()[name]()
        with jax.set_mesh(mesh) if set_mesh else contextlib.nullcontext():
            state = jax.jit(tx.init)(params)
        buffers = check_state_follows_params(state, params, N_DEVICES)
        assert buffers >= MIN_BUFFERS[name] * len(params), f"only {buffers} per-parameter buffers"
        return f"{buffers} per-parameter buffers"

    return check


def batch(seed: int = 1, n: int = 32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 16)).astype(DTYPE)
    y = np.sin(x[:, :8]).astype(DTYPE)
    return x, y


def train_steps(tx, params, state, x, y, steps: int = 5):
    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params, value=loss)
        return fnopt.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(steps):
        params, state, loss = step(params, state, x, y)
        losses.append(float(loss))
    return params, state, losses


def assert_trees_close(actual, expected, what: str):
    flat_a, tree_a = jax.tree_util.tree_flatten_with_path(actual)
    flat_e, tree_e = jax.tree_util.tree_flatten_with_path(expected)
    assert jax.tree.structure(actual) == jax.tree.structure(expected), f"{what}: structures differ"
    for (path, a), (_, e) in zip(flat_a, flat_e):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype, f"{what}{jax.tree_util.keystr(path)}: dtype {a.dtype} != {e.dtype}"
        # Absolute slack in units of the leaf's largest entry: normalising
        # optimizers turn the reduction-order noise of a near-zero gradient
        # into an O(1) relative change of its (small) update.
        finite = np.abs(e[np.isfinite(e)]) if e.dtype.kind == "f" else np.abs(e)
        atol = TOL["atol"] * max(1.0, float(np.max(finite, initial=0.0)))
        np.testing.assert_allclose(a, e, rtol=TOL["rtol"], atol=atol, err_msg=f"{what}{jax.tree_util.keystr(path)}")


def sharded_step_check(name: str):
    """Five jitted steps on params sharded over ("data", "model") and a batch
    sharded over "data" equal the same steps on one device."""

    def check():
        host = host_params()
        x, y = batch()
        tx = optimizers()[name]()
        device = jax.devices()[0]
        single = jax.device_put(host, device)
        expected = train_steps(tx, single, tx.init(single), jax.device_put(x, device), jax.device_put(y, device))

        mesh = make_mesh(AxisType.Auto)
        params = shard_params(host, mesh)
        xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
        ys = jax.device_put(y, NamedSharding(mesh, P("data", None)))
        state = jax.jit(tx.init)(params)
        new_params, new_state, losses = train_steps(tx, params, state, xs, ys)
        np.testing.assert_allclose(losses, expected[2], **TOL, err_msg="losses")
        assert_trees_close(new_params, expected[0], "params")
        assert_trees_close(new_state, expected[1], "state")
        return f"losses {losses[0]:.4f} -> {losses[-1]:.4f}"

    return check


def data_mesh():
    return jax.make_mesh((N_DEVICES,), ("data",), axis_types=(AxisType.Explicit,))


def put(tree, spec):
    """``tree`` placed on the 1-D "data" mesh with ``spec`` (an explicit-axes
    ``shard_map`` takes its inputs already laid out as its ``in_specs``)."""
    return jax.device_put(tree, NamedSharding(data_mesh(), spec))


def clip_split_check(max_norm: float, clipped: bool):
    """``clip_by_global_norm(axis_name="data")`` on gradients split row-wise
    over 8 shards equals NumPy's clip of the whole gradients."""

    def check():
        rng = np.random.default_rng(2)
        grads = {"w": rng.standard_normal((16, 8)).astype(DTYPE), "b": rng.standard_normal(16).astype(DTYPE)}
        norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
        assert (norm > max_norm) == clipped, f"norm {norm} vs max_norm {max_norm}"
        factor = max_norm / max(norm, max_norm)
        expected = {k: (g.astype(np.float64) * factor).astype(DTYPE) for k, g in grads.items()}

        tx = T.clip_by_global_norm(max_norm, axis_name="data")
        state = tx.init(grads)

        @jax.jit
        @jax.shard_map(mesh=data_mesh(), in_specs=(P("data"), P()), out_specs=(P("data"), P()))
        def clip(g, s):
            return tx.update(g, s)

        out, new_state = clip(put(grads, P("data")), put(state, P()))
        for k in grads:
            np.testing.assert_allclose(np.asarray(out[k]), expected[k], **TOL, err_msg=k)
            assert out[k].dtype == grads[k].dtype
        assert int(new_state.count) == 1
        return f"norm {norm:.3f}, factor {factor:.4f}"

    return check


# Global (mean) losses that make the plateau cut and early stopping trigger, and
# per-shard deviations with mean exactly 0 (dyadic, so every mean is exact)
# that change which shard alone would see an improvement.
GLOBAL_LOSSES = np.array([4.0, 3.0, 3.0, 3.0] + [2.5] * 8, DTYPE)
DEVIATIONS = np.array([-1.5, -1.0, -0.5, 0.0, 0.0, 0.5, 1.0, 1.5], DTYPE)


def local_losses() -> np.ndarray:
    """(8 shards, steps): shard ``i`` at step ``t`` sees ``GLOBAL_LOSSES[t]``
    plus a deviation that rotates with ``t``."""
    rows = [np.roll(DEVIATIONS, 3 * t) * (-1.0) ** t for t in range(len(GLOBAL_LOSSES))]
    local = GLOBAL_LOSSES[None, :] + np.stack(rows, axis=1)
    np.testing.assert_array_equal(local.mean(axis=0, dtype=np.float64), GLOBAL_LOSSES)
    return local.astype(DTYPE)


def decision_tx(axis_name):
    return fnopt.chain(
        T.reduce_on_plateau(factor=0.5, patience=1, axis_name=axis_name),
        T.early_stopping(patience=2, window=2, axis_name=axis_name),
    )


def summary(state) -> dict:
    plateau, stopping = state
    return {
        "scale": plateau.scale,
        "best": plateau.best,
        "num_bad": plateau.num_bad,
        "cooldown_counter": plateau.cooldown_counter,
        "stop_best": stopping.best,
        "wait": stopping.wait,
        "stopped": stopping.stopped,
        "value_count": stopping.value_count,
    }


def metric_check(via_report: bool):
    """Plateau reduction and early stopping fed per-shard local losses with
    ``axis_name="data"`` (via ``update(value=)`` or ``report``) under
    ``shard_map`` take the decisions of the unsharded run fed the global mean."""

    def check():
        w = jnp.ones(4, DTYPE)
        local = local_losses()

        def run(tx, losses, axis_name):
            def body(state, loss):
                if via_report:
                    state = fnopt.report(state, loss, axis_name=axis_name)
                    updates, state = tx.update({"w": w}, state)
                else:
                    updates, state = tx.update({"w": w}, state, value=loss)
                return state, (summary(state), updates["w"])

            return jax.lax.scan(body, tx.init({"w": w}), losses)

        tx_global = decision_tx(None)
        expected_state, (expected_trace, expected_updates) = jax.jit(lambda l: run(tx_global, l, None))(
            jnp.asarray(GLOBAL_LOSSES)
        )
        scales = np.asarray(expected_trace["scale"])
        assert scales[-1] < 1.0 and bool(expected_trace["stopped"][-1]), "the sequence must cut and stop"
        # Each shard alone, on its local losses, would decide differently.
        _, (alone, _) = jax.jit(jax.vmap(lambda l: run(tx_global, l, None)))(jnp.asarray(local))
        for i in range(N_DEVICES):
            same = [np.array_equal(alone[k][i], expected_trace[k]) for k in ("scale", "stopped")]
            assert not all(same), f"shard {i} alone takes the global decisions"

        tx_sharded = decision_tx("data")

        @jax.jit
        @jax.shard_map(mesh=data_mesh(), in_specs=P("data"), out_specs=P())
        def sharded(local_shard):
            return run(tx_sharded, local_shard[0], "data")

        state, (trace, updates) = sharded(put(local, P("data")))
        assert_trees_close(trace, expected_trace, "trace")
        assert_trees_close(updates, expected_updates, "updates")
        assert_trees_close(state, expected_state, "state")
        stop_at = int(np.argmax(np.asarray(expected_trace["stopped"])))
        return f"scales {scales.tolist()}, stopped at step {stop_at}"

    return check


def shard_map_step_check():
    """A data-parallel step under ``shard_map``: local loss and gradients on
    each shard's batch, gradients averaged, clipping, AdamW and plateau /
    early stopping fed the local loss with ``axis_name``; equals the
    unsharded steps on the whole batch."""

    def check():
        def make_tx(axis_name):
            return fnopt.chain(
                T.clip_by_global_norm(0.5),
                fnopt.adamw(schedules.one_cycle(1e-2, 10)),
                T.reduce_on_plateau(factor=0.5, patience=0, axis_name=axis_name),
                T.early_stopping(patience=3, axis_name=axis_name),
            )

        host = host_params()
        x, y = batch()
        tx = make_tx(None)
        expected = train_steps(tx, host, tx.init(host), x, y)

        tx = make_tx("data")

        @jax.jit
        @jax.shard_map(mesh=data_mesh(), in_specs=(P(), P(), P("data"), P("data")), out_specs=(P(), P(), P()))
        def step(params, state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            grads = jax.lax.pmean(grads, "data")
            updates, state = tx.update(grads, state, params, value=loss)
            return fnopt.apply_updates(params, updates), state, jax.lax.pmean(loss, "data")

        params, state, losses = put(host, P()), put(tx.init(host), P()), []
        x, y = put(x, P("data")), put(y, P("data"))
        for _ in range(5):
            params, state, loss = step(params, state, x, y)
            losses.append(float(loss))
        np.testing.assert_allclose(losses, expected[2], **TOL, err_msg="losses")
        assert_trees_close(params, expected[0], "params")
        assert_trees_close(state, expected[1], "state")
        return f"losses {losses[0]:.4f} -> {losses[-1]:.4f}"

    return check


def flat_params_step_check():
    """The params as one flat buffer (``fnopt.flat_params``) split over the 8
    devices of an Auto "data" axis, the batch too: Adam's moments are sharded
    like the buffer, and five whole steps (``fnopt.apply_gradients``, the
    gradient taken through the view) equal Adam on the tree on one device.
    (On an Explicit axis the view's leaves carry the buffer's sharding into
    the model, where it conflicts with the batch's: there, reshard them.)"""

    def check():
        host = host_params()
        x, y = batch()
        tx = fnopt.adam(1e-2)
        device = jax.devices()[0]
        single = jax.device_put(host, device)
        expected = train_steps(tx, single, tx.init(single), jax.device_put(x, device), jax.device_put(y, device))

        flat, view = fnopt.flat_params(host)
        (key,) = flat
        assert flat[key].shape[0] % N_DEVICES == 0, flat[key].shape
        mesh = jax.make_mesh((N_DEVICES,), ("data",), axis_types=(AxisType.Auto,))
        flat = jax.device_put(flat, NamedSharding(mesh, P("data")))
        state = jax.jit(tx.init)(flat)
        for moment in (state[0].mu, state[0].nu):
            assert moment[key].sharding.is_equivalent_to(flat[key].sharding, 1), moment[key].sharding

        @jax.jit
        def step(flat, state, x, y):
            loss, grads = jax.value_and_grad(lambda f: loss_fn(view(f), x, y))(flat)
            flat, state = fnopt.apply_gradients(tx, grads, state, flat)
            return flat, state, loss

        xs, ys = (jax.device_put(v, NamedSharding(mesh, P("data", None))) for v in (x, y))
        losses = []
        for _ in range(5):
            flat, state, loss = step(flat, state, xs, ys)
            losses.append(float(loss))
        assert flat[key].sharding.is_equivalent_to(state[0].mu[key].sharding, 1), flat[key].sharding
        np.testing.assert_allclose(losses, expected[2], **TOL, err_msg="losses")
        assert_trees_close(view(flat), expected[0], "params")
        assert_trees_close(view(state[0].mu), expected[1][0].mu, "mu")
        assert_trees_close(view(state[0].nu), expected[1][0].nu, "nu")
        return f"losses {losses[0]:.4f} -> {losses[-1]:.4f}"

    return check


def checks() -> dict:
    out = {}
    for name in optimizers():
        out[f"init_sharding[explicit-{name}]"] = init_sharding_check(name, AxisType.Explicit, False)
        out[f"init_sharding[explicit-set_mesh-{name}]"] = init_sharding_check(name, AxisType.Explicit, True)
        out[f"init_sharding[auto-{name}]"] = init_sharding_check(name, AxisType.Auto, False)
    for name in optimizers():
        out[f"sharded_step[{name}]"] = sharded_step_check(name)
    out["shard_map_clip[clipped]"] = clip_split_check(1.0, True)
    out["shard_map_clip[unclipped]"] = clip_split_check(100.0, False)
    out["shard_map_metric[update_value]"] = metric_check(via_report=False)
    out["shard_map_metric[report]"] = metric_check(via_report=True)
    out["shard_map_step"] = shard_map_step_check()
    out["flat_params_step"] = flat_params_step_check()
    return out


def main() -> None:
    assert len(jax.devices()) == N_DEVICES, f"needs {N_DEVICES} devices, got {jax.devices()}"
    results = {}
    for name, check in checks().items():
        try:
            results[name] = {"ok": True, "detail": check() or ""}
        except Exception:  # noqa: BLE001 - every failure is reported, by name
            results[name] = {"ok": False, "detail": traceback.format_exc(limit=6)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
