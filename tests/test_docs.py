"""The documentation site (mkdocs.yml): `mkdocs build --strict` passes, the API
pages carry every public name with its docstring, the gallery has a plot per
schedule factory, the demo page shows the demo's pictures, and a headless
browser renders the front page and an API page.

Needs the ``docs`` extra (``pip install -e ".[docs]"``), which the ``test``
extra does not install; the screenshots also need a Chromium binary (Debian:
``apt-get install chromium``). Each part skips without them.
"""

from __future__ import annotations

import functools
import html
import http.server
import importlib.util
import inspect
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

for _module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
    pytest.importorskip(_module, reason="the docs extra is not installed")

import fnopt  # noqa: E402
from fnopt import plot, schedules, transforms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    return struct.unpack(">II", data[16:24])


def _factories() -> list[str]:
    return [name for name in schedules.__all__ if inspect.isfunction(getattr(schedules, name))]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def _page_text(path: Path) -> str:
    """The page's visible words: tags dropped, entities decoded."""
    return " ".join(_words(html.unescape(re.sub(r"<[^>]+>", " ", path.read_text()))))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """What a demo run leaves in out/ (a picture, its JSON and table)."""
    out = tmp_path_factory.mktemp("demo_out")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(out / "accuracy.png")
    (out / "compare_schedules.json").write_text(json.dumps({"epochs": 7, "seeds": 3, "total_steps": 4200}))
    (out / "compare_schedules.md").write_text("| recipe | acc |\n|---|---|\n| one-cycle | 95.0 % |\n")
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory, demo_dir) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "FNOPT_DOCS_DEMO_DIR": str(demo_dir)}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return site_dir


def test_front_page_is_the_readme(site):
    text = _page_text(site / "index.html")
    for heading in re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), flags=re.M):
        assert " ".join(_words(heading)) in text, heading


@pytest.mark.parametrize("module", [fnopt, schedules, transforms, plot], ids=lambda m: m.__name__)
def test_api_page_has_every_public_name(site, module):
    page = site / "api" / module.__name__.split(".")[-1] / "index.html"
    shown = set(re.findall(r'id="(fnopt\.[\w.]+)"', page.read_text()))
    public = getattr(module, "__all__", None) or [name for name in vars(module) if not name.startswith("_")]
    documented = {
        name
        for name in public
        if inspect.getdoc(getattr(module, name))  # fnopt's own, not Optax's re-exports or the submodules
        and getattr(getattr(module, name), "__module__", "").startswith("fnopt")
    }
    assert documented and not {f"{module.__name__}.{name}" for name in documented} - shown


def test_api_page_carries_the_docstring(site):
    text = _page_text(site / "api" / "schedules" / "index.html")
    doc = inspect.getdoc(schedules.one_cycle)
    summary = doc.split("\n\n")[0]
    first_arg = doc.split("Args:")[1].split("\n")[1]  # "    max_value: peak value."
    name, description = first_arg.split(":", 1)
    for passage in (summary, name, description):
        assert " ".join(_words(passage)) in text, passage


def test_docstring_cross_references_become_links(site):
    source = (site / "api" / "schedules" / "index.html").read_text()
    assert ":func:" not in source and ":class:" not in source
    # `one_cycle_momentum` refers to :func:`one_cycle`: a link to its anchor.
    assert re.search(r'href="[^"]*#fnopt\.schedules\.one_cycle"', source)


def test_gallery_has_a_plot_per_schedule_factory(site):
    page = (site / "gallery" / "index.html").read_text()
    for name in _factories():
        picture = site / "assets" / "gallery" / f"{name}.png"
        width, height = _png_size(picture.read_bytes())
        assert width >= 400 and height >= 250 and picture.stat().st_size > 10_000, name
        assert f"assets/gallery/{name}.png" in page, name


def test_gallery_build_fails_when_a_factory_has_no_entry():
    from mkdocs.exceptions import PluginError

    spec = importlib.util.spec_from_file_location("docs_gallery_hook", ROOT / "docs" / "hooks" / "gallery.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    factories = {name: getattr(schedules, name) for name in _factories()}
    hook._check_coverage(factories)
    with pytest.raises(PluginError, match="without a gallery entry: \\['brand_new'\\]"):
        hook._check_coverage({**factories, "brand_new": schedules.constant})


def test_demo_page_shows_the_run_in_out(site, demo_dir):
    page = (site / "demo" / "index.html").read_text()
    assert (site / "assets" / "demo" / "accuracy.png").read_bytes() == (demo_dir / "accuracy.png").read_bytes()
    assert "assets/demo/accuracy.png" in page
    assert "7 epochs, 3 seeds" in page and "<table>" in page


# ---------------------------------------------------------------- screenshots


WINDOW = (1280, 1000)
# Root in a container needs --no-sandbox; the virtual-time budget lets the page's scripts settle.
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--virtual-time-budget=3000",
)


@pytest.fixture(scope="module")
def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium binary (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _screenshot(browser: str, url: str, path: Path) -> bytes:
    subprocess.run(
        [browser, *HEADLESS, f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={path}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return path.read_bytes()


def _assert_rendered(data: bytes) -> None:
    """A full window of a real page: not blank, not an error stub."""
    image_module = pytest.importorskip("PIL.Image")
    assert _png_size(data) == WINDOW
    assert len(data) > 40_000  # a blank window compresses to a few KB
    image = image_module.open(io.BytesIO(data)).convert("L")
    histogram = image.histogram()
    non_white = sum(histogram[:200]) / sum(histogram)
    assert 0.06 < non_white < 0.5  # the header bar alone is ~5 %; with the text ~9 %


@pytest.mark.parametrize("page", ["", "api/schedules/"], ids=["front", "api"])
def test_screenshot(browser, served, tmp_path, page):  # browser first: no build when it skips
    data = _screenshot(browser, f"{served}/{page}", tmp_path / "page.png")
    _assert_rendered(data)
    if keep := os.environ.get("FNOPT_DOCS_SCREENSHOTS"):  # a folder to keep them in, to look at
        Path(keep, f"{page.strip('/').replace('/', '_') or 'front'}.png").write_bytes(data)
