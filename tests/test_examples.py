"""Smoke tests: the examples run end to end in tiny configurations."""

import json

import pytest


def test_quickstart_runs_and_draws_its_schedules(load_example, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    load_example("quickstart").main(["--steps", "60", "--out", str(tmp_path)])
    assert "loss" in capsys.readouterr().out
    assert (tmp_path / "quickstart_schedules.png").stat().st_size > 0


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
