"""Scale-out: states follow the params' sharding on a mesh, sharded steps equal
unsharded ones, and clipping and metrics are global under ``shard_map``
(SPEC section 4).

The checks need 8 CPU devices, and this process's JAX already started with
one, so they run in one subprocess (``tests/sharding_cases.py``, with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` and this run's
``FNOPT_X64``) that reports every check by name; each check is one test here.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnopt
from fnopt import transforms as T

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
OPTIMIZERS = ["sgd", "adam", "adamw", "radam", "adagrad", "rmsprop", "ranger", "chain", "accumulate", "average"]
CHECKS = [
    *(f"init_sharding[{mesh}-{name}]" for name in OPTIMIZERS for mesh in ("explicit", "explicit-set_mesh", "auto")),
    *(f"sharded_step[{name}]" for name in OPTIMIZERS),
    "shard_map_clip[clipped]",
    "shard_map_clip[unclipped]",
    "shard_map_metric[update_value]",
    "shard_map_metric[report]",
    "shard_map_step",
    "flat_params_step",
]


def run_with_devices(args, timeout):
    """Runs ``python *args`` from the repository root with 8 CPU devices,
    warnings as errors (as in the pytest run)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-W", "error", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def results():
    proc = run_with_devices([str(TESTS / "sharding_cases.py")], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(out) == sorted(CHECKS), "tests/sharding_cases.py and CHECKS list different checks"
    return out


@pytest.mark.slow  # one subprocess with 8 devices runs every check: ~40 s
@pytest.mark.parametrize("name", CHECKS)
def test_on_8_devices(results, name):
    result = results[name]
    assert result["ok"], f"{name}:\n{result['detail']}"


def test_data_parallel_example_runs_and_learns():
    """``examples/data_parallel.py`` in quick mode: 8 devices, exits 0, and the
    validation loss goes down."""
    proc = run_with_devices(
        [str(ROOT / "examples" / "data_parallel.py"), "--epochs", "2", "--steps-per-epoch", "15"], timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("8 devices"), proc.stdout
    losses = [float(v) for v in re.findall(r"val loss (\d+\.\d+)  plateau", proc.stdout)]
    assert len(losses) == 2, proc.stdout
    assert losses[-1] < losses[0], proc.stdout


@pytest.mark.parametrize("via_report", [False, True], ids=["update_value", "report"])
def test_axis_name_under_named_vmap_decides_on_the_mean(via_report):
    """In this process (one device): a named ``vmap`` whose members each pass a
    local loss decides like one run fed the mean, member for member."""
    means = np.array([4.0, 3.0, 3.0, 3.0, 2.0, 2.0, 2.0, 2.0])
    local = means[None, :] + np.array([[-1.0], [1.0], [0.5], [-0.5]]) * (-1.0) ** np.arange(8)

    def run(axis_name, losses):
        tx = fnopt.chain(
            T.reduce_on_plateau(factor=0.5, patience=1, axis_name=axis_name),
            T.early_stopping(patience=2, axis_name=axis_name),
        )
        state = tx.init(jnp.zeros(2))
        for loss in losses:
            if via_report:
                state = fnopt.report(state, loss, axis_name=axis_name)
            else:
                _, state = tx.update(jnp.ones(2), state, value=loss)
        return state

    expected = jax.jit(lambda l: run(None, l))(jnp.asarray(means, jnp.float32))
    members = jax.jit(jax.vmap(lambda l: run("members", l), axis_name="members"))(jnp.asarray(local, jnp.float32))
    assert float(expected[0].scale) < 1.0 and bool(expected[1].stopped)
    for got, want in zip(jax.tree.leaves(members), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(got), np.broadcast_to(np.asarray(want), got.shape))
