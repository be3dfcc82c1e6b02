"""MkDocs hook: the guide (docs/index.md) is README.md, pulled in by
pymdownx.snippets, which reads paths from the working directory; anchor them
at the repository root so ``mkdocs build -f path/to/mkdocs.yml`` works from
anywhere."""

from pathlib import Path


def on_config(config):
    config.mdx_configs["pymdownx.snippets"]["base_path"] = [str(Path(config.config_file_path).parent)]
    return config
