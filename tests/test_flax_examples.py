"""Smoke tests: the Flax plateau / early-stopping and checkpoint examples run
end to end in tiny configurations."""

import pytest

pytest.importorskip("flax")


@pytest.mark.parametrize("api", [pytest.param("linen", marks=pytest.mark.slow), "nnx"])
def test_flax_plateau_early_stopping_example(load_example, api, capsys):
    pytest.importorskip("mnist1d")
    result = load_example("flax_plateau_early_stopping").main(
        ["--api", api, "--samples", "500", "--epochs", "40", "--hidden", "16",
         "--patience", "0", "--stop-patience", "2"]
    )
    history = result["history"]
    out = capsys.readouterr().out
    assert "effective lr" in out and "test accuracy" in out
    # patience 0 cuts on the first non-improving epoch, and the loop breaks
    # on the early-stopping flag
    assert history[-1]["stop"] and len(history) < 40
    assert not any(row["stop"] for row in history[:-1])
    assert history[-1]["lr"] < history[0]["lr"]


def test_checkpoint_resume_example_is_bit_identical(load_example, tmp_path, capsys):
    pytest.importorskip("orbax.checkpoint")
    result = load_example("checkpoint_resume").main(["--epochs", "5", "--crash-at", "2", "--out", str(tmp_path)])
    assert result["identical"] and result["steps"] == 5 * 20
    assert "bit-identical: True" in capsys.readouterr().out
    assert (tmp_path / "checkpoints").is_dir()
