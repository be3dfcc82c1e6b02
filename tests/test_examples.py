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


@pytest.mark.slow
def test_compare_schedules_tiny_run_writes_table_and_pictures(load_example, tmp_path, capsys):
    pytest.importorskip("mnist1d")
    pytest.importorskip("matplotlib")
    # Four recipes that between them take every path of the training loop
    # (metric reports, early stopping, recorded effective LR, eval params);
    # all ten run in the slow test below.
    summary = load_example("compare_schedules").main(
        ["--epochs", "1", "--seeds", "2", "--find-steps", "20", "--out", str(tmp_path), "--no-progress",
         "--recipes", "plateau + early,Adam + one-cycle,triggered cooldown,Schedule-free"]
    )
    out = capsys.readouterr().out
    assert "| recipe | final test acc" in out
    assert len(summary["recipes"]) == 4
    for name in ("schedules.png", "lr_find_sgd.png", "lr_find_adam.png", "accuracy.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "compare_schedules.json").read_text())
    assert all(len(r["final_accuracy"]) == 2 for r in saved["recipes"].values())
    # It says what it is doing, in order, before each long part.
    lines = out.splitlines()
    assert lines[0].startswith("Generating MNIST-1D")
    assert [line.split(",")[1].split(":")[0].strip() for line in lines if line.startswith("LR range test")] == [
        "SGD (momentum 0.9)", "Adam"]
    assert sum(line.startswith("  ") and line.endswith(" ...") for line in lines) == 4  # one per recipe as it starts
    assert saved["one_cycle_peak"]["sgd"] > saved["lr_find"]["sgd"]["steep"]


def test_compare_schedules_table_marks_early_stopped_rows(load_example):
    import numpy as np

    demo = load_example("compare_schedules")
    row = {"steps": np.array([35, 70]), "accuracy": np.array([[0.9, 0.95], [0.9, 0.93]]), "seconds": 1.0}
    text = demo.table({
        "plateau": {**row, "stopped_at": [1295, 1330]},
        "one-cycle": {**row, "stopped_at": [None, None]},
    })
    assert "| plateau (stopped at step 1295 / 1330) |" in text
    assert "| one-cycle |" in text


def test_compare_schedules_accuracy_picture_has_title_target_and_zoom(load_example, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import numpy as np
    from matplotlib.figure import Figure

    demo = load_example("compare_schedules")
    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: saved.append(self))
    steps = np.arange(1, 61) * 35
    curve = np.stack([np.linspace(0.5, 0.95, 60), np.linspace(0.5, 0.96, 60)])
    demo.plot_accuracy({
        "one-cycle": {"steps": steps, "accuracy": curve, "stopped_at": [None, None]},
        "plateau": {"steps": steps[:37], "accuracy": curve[:, :37], "stopped_at": [1295, 1260]},
    }, str(tmp_path / "acc.png"))
    (fig,) = saved
    assert "test accuracy" in fig.get_suptitle()
    full, zoom = fig.axes
    assert zoom.get_xlim()[0] == pytest.approx(0.7 * 2100)
    assert zoom.get_ylim()[1] - zoom.get_ylim()[0] < full.get_ylim()[1] - full.get_ylim()[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "target 94 %" in labels and "early-stopped here" in labels


@pytest.mark.slow
def test_compare_schedules_all_ten_recipes_tiny(load_example, tmp_path):
    pytest.importorskip("mnist1d")
    summary = load_example("compare_schedules").main(
        ["--epochs", "1", "--seeds", "2", "--find-steps", "20", "--out", str(tmp_path), "--no-progress"]
    )
    assert len(summary["recipes"]) == 10


@pytest.mark.slow
def test_swa_example_tiny_run_writes_table_and_picture(load_example, tmp_path, capsys):
    pytest.importorskip("mnist1d")
    pytest.importorskip("matplotlib")
    summary = load_example("swa").main(["--epochs", "3", "--seeds", "2", "--swa-start", "0.5", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| weights evaluated | final test acc" in out
    assert (tmp_path / "swa.png").stat().st_size > 0
    saved = json.loads((tmp_path / "swa.json").read_text())
    assert saved["swa_start_step"] == 2 * saved["steps_per_epoch"]  # round(0.5 * 3) = 2
    rows = saved["rows"]
    assert len(rows) == 4 and all(len(r["accuracy"]) == 2 for r in rows.values())
    # One SWA snapshot (the end of epoch 3): the average is the last iterate.
    assert rows["SWA (mean of the epoch-end weights)"] == rows["SGD + cosine → SWALR, last iterate"]
    assert rows["EMA (decay 0.998, warmup) of the same run"] != rows["plain SGD + cosine (last iterate)"]
    assert summary["epochs"] == 3
