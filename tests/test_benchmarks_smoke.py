"""The benchmark scripts run in their tiny configuration and produce their tables."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def _run(args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=True)


@pytest.mark.slow
def test_step_time_tiny_every_case(tmp_path):
    out = _run([os.path.join(BENCH, "step_time.py"), "--tiny", "--no-torch"])
    assert "| schedule_free_adamw |" in out.stdout and "| adafactor |" in out.stdout


def test_step_time_tiny(tmp_path):
    js, md = tmp_path / "step.json", tmp_path / "step.md"
    # A plain, an Adam, a chained case and a contrib counterpart; every case runs
    # in the slow test above.
    cases = "sgd_momentum,adam,clip+adamw(warmup_cos)+plateau,prodigy"
    out = _run([os.path.join(BENCH, "step_time.py"), "--tiny", "--no-torch", "--cases", cases,
                "--json", str(js), "--md", str(md)])
    assert ("| case | fnopt ms | fnopt apply_gradients ms | fnopt packed ms | optax ms | torch fused ms "
            "| torch foreach ms | XLA roofline ms | limit ms") in out.stdout
    data = json.loads(js.read_text())
    cases = {r["case"] for r in data["results"]}
    assert {"sgd_momentum", "adam", "clip+adamw(warmup_cos)+plateau", "prodigy"} == cases
    assert {r["tree"] for r in data["results"]} == {"tiny"}
    assert data["meta"]["fused_kernel"]
    for r in data["results"]:
        for impl in ("fnopt", "optax", "roofline", "copy"):
            assert r["impls"][impl]["ms"] > 0
        for impl in ("fnopt", "optax"):
            assert r["impls"][impl]["compile_s"] > 0
        assert r["fnopt_over_optax"] > 0 and r["fnopt_over_roofline"] > 0
        assert r["limit_ms"] > 0 and r["bandwidth_gbps"] > 0 and r["fnopt_over_limit"] > 0
        assert r["fnopt_over_torch"] is None  # --no-torch
    assert "| clip+adamw(warmup_cos)+plateau |" in md.read_text()


@pytest.mark.slow
def test_step_time_tiny_loop_and_whole_step(tmp_path, monkeypatch):
    """--tree all at smoke-test size (the many-leaf layout), --loop (steps
    inside a lax.fori_loop), --marginal and, with the fused kernel, the
    ``fnopt.apply_gradients`` and packed columns and the threaded copy probe
    (issue 15)."""
    from fnopt import _fused

    js = tmp_path / "step.json"
    monkeypatch.setenv("FNOPT_FUSED", "auto")
    out = _run([os.path.join(BENCH, "step_time.py"), "--tiny", "--no-torch", "--tree", "all", "--cases",
                "adam,sgd_momentum,rmsprop", "--loop", "3", "--marginal", "5", "--json", str(js)])
    assert "### tiny_many: 60 leaves" in out.stdout and "### tiny: 4 leaves" in out.stdout
    assert "3 steps per call in a lax.fori_loop" in out.stdout
    assert "marginal per-step times, the slope between 3 and 5 steps per call" in out.stdout
    every = json.loads(js.read_text())["results"]
    assert {(r["tree"], r["case"]) for r in every} == {
        (t, c) for t in ("tiny", "tiny_many") for c in ("adam", "sgd_momentum", "rmsprop")}
    assert all(r["limit_ms"] > 0 and r["fnopt_over_limit"] > 0 for r in every)
    results = {r["case"]: r for r in every if r["tree"] == "tiny_many"}
    assert all(r["loop"] == 3 and r["marginal"] == 5 and r["limit_ms"] > 0 for r in results.values())
    for r in results.values():  # every JAX step ran at both lengths
        assert {"fnopt", "optax"} <= set(r["marginal_ratios"])
        assert all(isinstance(r["impls"][n]["marginal_ms"], float) for n in r["marginal_ratios"])
        assert all(f"{n}@5" in r["impls"] for n in r["marginal_ratios"])
    kernel = _fused._library() is not None
    for case in ("adam", "sgd_momentum"):
        assert ("fnopt_step" in results[case]["impls"]) == kernel
        assert ("fnopt_packed" in results[case]["impls"]) == kernel
        assert ("fnopt_flat" in results[case]["impls"]) == kernel
        assert ("optax_flat" in results[case]["impls"]) == kernel  # the anchor on the same flat layout
        assert ("copy_threads" in results[case]["impls"]) == kernel
        if kernel:
            assert results[case]["step_over_optax"] > 0 and results[case]["step_over_limit"] > 0
            assert results[case]["packed_over_optax"] > 0 and results[case]["packed_over_limit"] > 0
            assert results[case]["flat_over_optax"] > 0 and results[case]["flat_over_limit"] > 0
            assert results[case]["flat_over_optax_flat"] > 0 and results[case]["flat_over_torch_flat"] is None
    assert "fnopt_step" not in results["rmsprop"]["impls"]  # no whole-step route
    assert "fnopt_packed" not in results["rmsprop"]["impls"]
    assert "| fnopt packed ms |" in out.stdout
    assert ("the step on flat params" in out.stdout) == kernel
    if kernel:
        assert {"fnopt_step", "fnopt_packed"} <= set(results["adam"]["marginal_ratios"])


def test_marginal_step_removes_a_fixed_cost_per_call():
    """Calls of k steps cost C + k s; timed per step ((C + k s) / k) at two
    lengths, the slope is s whatever C is."""
    sys.path.insert(0, BENCH)
    try:
        from step_time import marginal_step
    finally:
        sys.path.remove(BENCH)
    for fixed, step, short, long in [(40e-3, 2.5e-3, 10, 40), (0.0, 1e-3, 1, 3), (1.0, 0.0, 2, 5)]:
        per_step = lambda k: (fixed + k * step) / k  # noqa: E731
        assert abs(marginal_step(per_step(short), short, per_step(long), long) - step) < 1e-12


def test_step_time_marginal_must_exceed_loop():
    with pytest.raises(subprocess.CalledProcessError) as err:
        _run([os.path.join(BENCH, "step_time.py"), "--tiny", "--no-torch", "--loop", "4", "--marginal", "4"])
    assert "--marginal 4 must exceed --loop 4" in err.value.stderr


def test_train_step_tiny(tmp_path):
    """The whole training step (forward, backward, optimizer) in every layout
    (issue 15), at smoke-test size."""
    js, md = tmp_path / "train.json", tmp_path / "train.md"
    out = _run([os.path.join(BENCH, "train_step.py"), "--tiny", "--no-torch", "--cases", "adam,sgd_momentum",
                "--json", str(js), "--md", str(md)])
    assert "| case | leaves | optax ms | fnopt ms | fnopt_packed ms | fnopt_flat ms |" in out.stdout
    results = json.loads(js.read_text())["results"]
    assert [r["case"] for r in results] == ["adam", "sgd_momentum"]
    for r in results:
        assert r["leaves"] == 9 and r["over_torch"] is None  # 3 blocks, --no-torch
        assert set(r["impls"]) == {"optax", "fnopt", "fnopt_packed", "fnopt_flat", "optax_flat", "grad_tree",
                                   "grad_flat"}
        assert all(v["ms"] > 0 for v in r["impls"].values())
        assert r["impls"]["fnopt_flat"]["compile_s"] > 0
        assert set(r["optimizer_ms"]) == {"optax", "fnopt", "fnopt_packed", "fnopt_flat", "optax_flat"}
    assert "| sgd_momentum | 9 |" in md.read_text()
    with pytest.raises(subprocess.CalledProcessError) as err:
        _run([os.path.join(BENCH, "train_step.py"), "--tiny", "--blocks", "0"])
    assert "--blocks must be at least 1, got 0" in err.value.stderr


@pytest.mark.slow
def test_memory_tiny(tmp_path):
    js = tmp_path / "mem.json"
    out = _run([os.path.join(BENCH, "memory.py"), "--tiny", "--json", str(js)])
    assert "| optimizer | impl | peak RSS MiB |" in out.stdout
    rows = json.loads(js.read_text())["rows"]
    assert {(r["opt"], r["impl"]) for r in rows} == {
        ("adam", "fnopt"), ("adam", "optax"), ("clip+adamw", "fnopt"), ("clip+adamw", "optax")}
    assert all(r["peak_bytes"] > 0 for r in rows)
