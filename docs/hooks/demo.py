"""MkDocs hook: the demo's pictures and table on the "Demo" page.

``examples/compare_schedules.py`` takes minutes and needs MNIST-1D, so the
docs build does not run it: it shows what the last run left in ``out/`` (or
in ``$FNOPT_DOCS_DEMO_DIR``) with the run's size from its JSON, and says how to
make them when they are not there. A tiny run would be fast but would publish
pictures of an untrained network as if they were the demo's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

PAGE = "demo.md"
MARKER = "<!-- demo -->"
IMAGES = "assets/demo"
CAPTIONS = {  # the demo's own pictures, in its order; any other PNG follows under its file name
    "schedules.png": "The recipes' schedules",
    "lr_find_sgd.png": "LR range test, SGD",
    "lr_find_adam.png": "LR range test, Adam",
    "accuracy.png": "Test accuracy against step",
}
COMMAND = "python examples/compare_schedules.py"


def _out_dir(config) -> Path:
    root = Path(config.config_file_path).parent
    return root / os.environ.get("FNOPT_DOCS_DEMO_DIR", "out")


def _pictures(config) -> list[Path]:
    """Every PNG there: the demo's own in its order, then any others by name."""
    rank = {name: i for i, name in enumerate(CAPTIONS)}
    return sorted(_out_dir(config).glob("*.png"), key=lambda p: (rank.get(p.name, len(rank)), p.name))


def on_files(files, config):
    for picture in _pictures(config):
        files.append(File.generated(config, f"{IMAGES}/{picture.name}", abs_src_path=str(picture)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE} lost its `{MARKER}` line: the demo's pictures have nowhere to go")
    out, pictures = _out_dir(config), _pictures(config)
    if not pictures:
        body = (
            f'!!! note "No demo pictures in this build"\n\n'
            f"    `{out.name}/` held no pictures when this site was built. Run the demo "
            f"(`{COMMAND}`, 2-3 minutes on 2 CPU cores) and build the docs again to show them here.\n"
        )
        return markdown.replace(MARKER, body)
    parts = []
    summary = out / "compare_schedules.json"
    if summary.exists():
        run = json.loads(summary.read_text())
        parts.append(
            f"From the run in `{out.name}/`: {run.get('epochs')} epochs, {run.get('seeds')} seeds, "
            f"{run.get('total_steps')} steps per recipe."
        )
    table = out / "compare_schedules.md"
    if table.exists():
        parts.append(table.read_text())
    for picture in pictures:
        caption = CAPTIONS.get(picture.name, picture.stem)
        parts.append(f"### {caption}\n\n![{caption}]({IMAGES}/{picture.name})")
    return markdown.replace(MARKER, "\n\n".join(parts) + "\n")
