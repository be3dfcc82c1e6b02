"""Smoke test: the sweep example runs in a tiny configuration; the vmapped and
sequential fnopt sweeps agree and the sequential one compiles once."""

import json

import numpy as np
import pytest


def test_sweep_tiny_run_writes_table_and_vmap_matches_sequential(load_example, tmp_path, capsys):
    pytest.importorskip("mnist1d")
    pytest.importorskip("optax")
    summary = load_example("sweep").main(
        ["--peaks", "0.1", "0.3", "--pcts", "0.3", "--steps", "20", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert "| mode | wall time (s) | traces/compiles |" in out
    for mode in ("fnopt vmap", "fnopt sequential", "optax sequential"):
        assert f"| {mode} |" in out

    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert "| fnopt vmap |" in (tmp_path / "sweep.md").read_text()
    traces = {r["mode"]: r["traces"] for r in saved["rows"]}
    assert traces == {"fnopt vmap": 1, "fnopt sequential": 1, "optax sequential": 2}

    acc = saved["final_accuracy"]
    assert len(acc["fnopt vmap"]) == len(acc["fnopt sequential"]) == 2
    # Same init, same batches, same hyperparameters: vmapped == sequential up to
    # float rounding (at most one of the 1000 test predictions may flip).
    np.testing.assert_allclose(acc["fnopt vmap"], acc["fnopt sequential"], atol=1 / 1000 + 1e-6)
    assert summary["rows"][0]["mode"] == "fnopt vmap"
