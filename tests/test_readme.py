"""Every Python block of the README runs, in order, each on its own: in a
fresh namespace, unless it begins with ``# (continues the previous block)``,
then in the namespace the previous block left."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
CONTINUES = "# (continues the previous block)"


def blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_blocks_are_complete_and_continuations_follow_a_block():
    found = blocks()
    assert len(found) >= 10
    assert not found[0].startswith(CONTINUES)
    for block in found:
        # no elided sketches: every block is real code that runs
        assert not re.search(r"^\s*\.\.\.\s*$", block, flags=re.M), block


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block that writes a file writes it here
    namespaces = []
    for i, block in enumerate(blocks()):
        namespace = dict(namespaces[-1]) if block.startswith(CONTINUES) else {}
        try:
            exec(compile(block, f"{README}:block{i}", "exec"), namespace)  # noqa: S102
        except Exception as error:  # pragma: no cover - the message names the block
            pytest.fail(f"README block {i} failed: {error!r}\n{block}")
        namespaces.append(namespace)
    quickstart = namespaces[0]
    # The quickstart trained one step with the one-cycle LR at step 0 (max / 25).
    assert abs(float(quickstart["fnopt"].hyperparams(quickstart["opt_state"])["learning_rate"]) - 0.5 / 25) < 1e-6
    # The early-stopping block ended on the best weights it kept.
    plateau = next(ns for ns in namespaces if "x_val" in ns)
    assert plateau["fnopt"].best_params(plateau["opt_state"]) is not None
