"""The README's complete Python blocks run as written (blocks with `...` are sketches)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    runnable = [b for b in blocks if "..." not in b]
    assert len(runnable) >= 2
    namespace: dict = {}
    for block in runnable:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    # The quickstart trained one step with the one-cycle LR at step 0 (max / 25).
    assert abs(float(namespace["fnopt"].hyperparams(namespace["opt_state"])["learning_rate"]) - 0.5 / 25) < 1e-6
