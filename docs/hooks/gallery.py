"""MkDocs hook: the schedule gallery, one plot per public factory of
``fnopt.schedules``, drawn by ``fnopt.plot.schedules`` at every build.

Each entry below is the example call(s) shown on the page and plotted; the
build fails if a public factory has no entry (or an entry names no public
factory), so a new schedule cannot be left out silently.
"""

from __future__ import annotations

import importlib
import inspect
import io
import re
import sys
from pathlib import Path
from typing import Mapping, NamedTuple

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

PAGE = "gallery.md"
MARKER = "<!-- gallery -->"
IMAGES = "assets/gallery"


class Entry(NamedTuple):
    lr: Mapping[str, str]  # legend label -> call, drawn on the learning-rate axis
    num_steps: int
    momentum: Mapping[str, str] = {}  # legend label -> call, dashed on the momentum axis
    log_scale: bool = False

    @property
    def calls(self) -> tuple[str, ...]:
        return (*self.lr.values(), *self.momentum.values())


GALLERY = {
    "constant": Entry({"constant": "constant(0.1)"}, 1000),
    "step_decay": Entry({"step_decay": "step_decay(0.1, step_size=300, gamma=0.5)"}, 1000),
    "multistep_decay": Entry({"multistep_decay": "multistep_decay(0.1, milestones=[300, 600, 800], gamma=0.5)"}, 1000),
    "exponential_decay": Entry({"exponential_decay": "exponential_decay(0.1, gamma=0.997)"}, 1000),
    "polynomial_decay": Entry(
        {
            "power=1": "polynomial_decay(0.1, total_steps=800, power=1.0)",
            "power=2": "polynomial_decay(0.1, total_steps=800, power=2.0)",
        },
        1000,
    ),
    "linear": Entry({"linear": "linear(0.1, 0.01, total_steps=600)"}, 1000),
    "cosine_decay": Entry({"cosine_decay": "cosine_decay(0.1, total_steps=800, min_value=0.01)"}, 1000),
    "cosine_warm_restarts": Entry(
        {"cosine_warm_restarts": "cosine_warm_restarts(0.1, first_period=100, period_mult=2)"}, 1500
    ),
    "linear_warm_restarts": Entry(
        {"linear_warm_restarts": "linear_warm_restarts(0.1, first_period=100, period_mult=2)"}, 1500
    ),
    "one_cycle": Entry(
        {
            "cos (default)": "one_cycle(0.1, total_steps=1000)",
            "linear, three_phase": "one_cycle(0.1, total_steps=1000, anneal='linear', three_phase=True)",
        },
        1000,
    ),
    "one_cycle_momentum": Entry(
        {"one_cycle LR": "one_cycle(0.1, total_steps=1000)"},
        1000,
        {"one_cycle_momentum": "one_cycle_momentum(total_steps=1000)"},
    ),
    "cyclic": Entry(
        {
            "triangular": "cyclic(0.001, 0.1, step_size_up=100)",
            "triangular2": "cyclic(0.001, 0.1, step_size_up=100, mode='triangular2')",
            "exp_range": "cyclic(0.001, 0.1, step_size_up=100, mode='exp_range', gamma=0.998)",
        },
        1000,
    ),
    "cyclic_momentum": Entry(
        {"cyclic LR": "cyclic(0.001, 0.1, step_size_up=100)"},
        1000,
        {"cyclic_momentum": "cyclic_momentum(0.8, 0.9, step_size_up=100)"},
    ),
    "combined_cos": Entry(  # fastai's fit_one_cycle(lr=1e-3): LR and momentum
        {"LR": "combined_cos(1000, 0.25, 1e-3 / 25, 1e-3, 1e-3 / 1e5)"},
        1000,
        {"momentum": "combined_cos(1000, 0.25, 0.95, 0.85, 0.95)"},
    ),
    "warmup": Entry({"warmup": "warmup(cosine_decay(0.1, total_steps=900), warmup_steps=100)"}, 1000),
    "join": Entry(
        {
            "join": "join([linear(0.01, 0.1, total_steps=100), constant(0.1), exponential_decay(0.1, 0.99)], "
            "boundaries=[100, 500])"
        },
        1000,
    ),
    "multiply": Entry(
        {"multiply": "multiply(cosine_decay(0.1, total_steps=1000), cyclic(0.5, 1.0, step_size_up=50))"}, 1000
    ),
    "warmup_stable_decay": Entry(
        {
            "1-sqrt decay (default)": "warmup_stable_decay(0.1, total_steps=1000, warmup_steps=100, decay_steps=200)",
            "linear decay": 'warmup_stable_decay(0.1, total_steps=1000, warmup_steps=100, decay_steps=200, decay_shape="linear")',
            "cosine, min 0.01": 'warmup_stable_decay(0.1, 1000, 100, 200, decay_shape="cosine", min_value=0.01)',
        },
        1000,
    ),
    "inverse_sqrt": Entry({"inverse_sqrt": "inverse_sqrt(0.1, warmup_steps=100)"}, 1000),
    "inverse_time_decay": Entry(
        {
            "smooth": "inverse_time_decay(0.1, decay_steps=100, decay_rate=0.5)",
            "staircase": "inverse_time_decay(0.1, decay_steps=100, decay_rate=0.5, staircase=True)",
        },
        1000,
    ),
    "swa": Entry(
        {
            "cosine, then swa (cos)": "join([cosine_decay(0.1, total_steps=1000), swa(0.05, 0.02, anneal_steps=100)], "
            "boundaries=[500])",
            "swa(linear) from 0.1": "swa(0.1, 0.02, anneal_steps=300, anneal='linear')",
        },
        1000,
    ),
    "exponential_range": Entry(
        {"exponential_range": "exponential_range(1e-7, 10.0, num_steps=100)"}, 100, log_scale=True
    ),
}


def _factories(schedules) -> dict[str, object]:
    return {
        name: getattr(schedules, name) for name in schedules.__all__ if inspect.isfunction(getattr(schedules, name))
    }


def _calls(call: str, factory: str) -> bool:
    return re.search(rf"\b{factory}\(", call) is not None


def _check_coverage(factories) -> None:
    missing = sorted(set(factories) - set(GALLERY))
    unknown = sorted(set(GALLERY) - set(factories))
    if missing or unknown:
        raise PluginError(
            f"docs/hooks/gallery.py: public schedules without a gallery entry: {missing}; "
            f"entries that are not public schedules: {unknown}"
        )
    for name, entry in GALLERY.items():
        if not any(_calls(call, name) for call in entry.calls):
            raise PluginError(f"docs/hooks/gallery.py: the entry for `{name}` never calls `{name}(...)`")


def _png(schedules, plot, name: str, entry: Entry) -> bytes:
    scope = dict(_factories(schedules))
    try:
        lr = {label: eval(call, {}, scope) for label, call in entry.lr.items()}  # noqa: S307 - the calls above
        momentum = {label: eval(call, {}, scope) for label, call in entry.momentum.items()} or None  # noqa: S307
        fig = plot.schedules(lr, entry.num_steps, momentum=momentum, title=name, log_scale=entry.log_scale)
    except Exception as err:
        raise PluginError(f"docs/hooks/gallery.py: the `{name}` example failed: {err!r}") from err
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _summary(factory) -> str:
    """The docstring's first paragraph, Sphinx roles as inline code."""
    first = inspect.getdoc(factory).split("\n\n")[0].replace("\n", " ")
    return re.sub(r":\w+:`~?([\w.]+)`", r"`\1`", first)


def _import(config, module: str):
    """``fnopt.<module>`` from the checkout being documented (the API pages read
    its sources), not some other installed copy."""
    root = Path(config.config_file_path).parent.resolve()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    mod = importlib.import_module(f"fnopt.{module}")
    if root not in Path(mod.__file__).resolve().parents:
        raise PluginError(f"docs/hooks/gallery.py: imported {mod.__file__}, not the fnopt under {root}")
    return mod


def on_files(files, config):
    plot, schedules = _import(config, "plot"), _import(config, "schedules")
    _check_coverage(_factories(schedules))
    for name, entry in GALLERY.items():
        files.append(File.generated(config, f"{IMAGES}/{name}.png", content=_png(schedules, plot, name, entry)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE} lost its `{MARKER}` line: the gallery has nowhere to go")
    factories = _factories(_import(config, "schedules"))
    sections = []
    for name, entry in GALLERY.items():
        used = sorted(f for f in factories if any(_calls(call, f) for call in entry.calls))
        code = f"from fnopt.schedules import {', '.join(used)}\n\n" + "\n".join(entry.calls)
        sections.append(
            f"## `{name}`\n\n"
            f"[`schedules.{name}`][fnopt.schedules.{name}]: {_summary(factories[name])}\n\n"
            f"```python\n{code}\n```\n\n"
            f"![{name}]({IMAGES}/{name}.png)\n"
        )
    return markdown.replace(MARKER, "\n".join(sections))
