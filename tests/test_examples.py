"""Smoke tests: the examples run end to end in tiny configurations."""

import json
import math

import pytest


def test_quickstart_trains_to_a_low_loss_and_draws_its_schedules(load_example, tmp_path):
    pytest.importorskip("matplotlib")
    # The default run, as a newcomer runs it: the initial loss is about 0.11
    # (predicting 0 for sin(x)); the noise floor is 0.05**2 = 0.0025.
    final = load_example("quickstart").main(["--out", str(tmp_path)])
    assert math.isfinite(final) and final < 0.01, final
    assert (tmp_path / "quickstart_schedules.png").stat().st_size > 0


def test_quickstart_short_run_still_trains(load_example, tmp_path):
    pytest.importorskip("matplotlib")
    final = load_example("quickstart").main(["--steps", "60", "--out", str(tmp_path)])
    assert math.isfinite(final) and final < 0.05, final


def test_compare_schedules_tiny_run_writes_table_and_pictures(load_example, tmp_path, capsys):
    pytest.importorskip("mnist1d")
    pytest.importorskip("matplotlib")
    summary = load_example("compare_schedules").main(
        ["--epochs", "1", "--seeds", "2", "--find-steps", "20", "--out", str(tmp_path), "--no-progress"]
    )
    out = capsys.readouterr().out
    assert "| recipe | final test acc" in out
    assert len(summary["recipes"]) == 6
    for name in ("schedules.png", "lr_find_sgd.png", "lr_find_adam.png", "accuracy.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "compare_schedules.json").read_text())
    assert all(len(r["final_accuracy"]) == 2 for r in saved["recipes"].values())
