"""Griffe extension: Sphinx roles in fnopt's docstrings become Markdown.

fnopt's Google-style docstrings cross-reference with Sphinx roles
(``:func:`cyclic` ``, ``:class:`~fnopt.LRFindResult` ``). mkdocstrings would
print those verbatim, so this rewrites each role before rendering:

- a target that resolves (from the docstring's own scope, as Sphinx does) to an
  object the API pages show becomes an autorefs link to its public path, e.g.
  ``[`cyclic`][fnopt.schedules.cyclic]``: a link that stops resolving fails
  ``mkdocs build --strict``;
- a bare name out of scope that names exactly one shown object links to it;
- any other target (a private helper, matplotlib, ...) becomes inline code.

``~`` keeps only the last component of the shown name, as in Sphinx.
"""

from __future__ import annotations

import re

import griffe

# The modules the API pages render (docs/api/*.md), with their public members.
PUBLIC_MODULES = ("fnopt", "fnopt.schedules", "fnopt.transforms", "fnopt.flax", "fnopt.plot")

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|obj|exc):`(~?)([\w.]+)`")


def _final(obj: griffe.Object | griffe.Alias) -> griffe.Object:
    return obj.final_target if obj.is_alias else obj


def _public_paths(pkg: griffe.Module) -> dict[str, str]:
    """Canonical path -> the public path it is shown under (first module wins)."""
    shown: dict[str, str] = {}
    for module_path in PUBLIC_MODULES:
        module = pkg if module_path == pkg.path else pkg.get_member(module_path.split(".", 1)[1])
        shown.setdefault(module.path, module.path)
        for name, member in module.members.items():
            if not member.is_public:
                continue
            try:
                target = _final(member)
            except griffe.AliasResolutionError:  # re-exported from outside fnopt
                continue
            shown.setdefault(target.path, f"{module_path}.{name}")
            if target.is_class:  # methods and fields of public classes
                for sub in target.members:
                    shown.setdefault(f"{target.path}.{sub}", f"{module_path}.{name}.{sub}")
    return shown


def _rewrite(obj: griffe.Object, text: str, shown: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        tilde, target = match.groups()
        label = target.rsplit(".", 1)[-1] if tilde else target
        try:
            path = _final(obj.modules_collection.get_member(target)).path if "." in target else obj.resolve(target)
        except (KeyError, griffe.NameResolutionError, griffe.AliasResolutionError):
            path = None
        if path in shown:
            return f"[`{label}`][{shown[path]}]"
        # Not in scope (e.g. `adam` named in `_adaptive.py`): a public object
        # of that name, if exactly one.
        named = {public for public in shown.values() if public.rsplit(".", 1)[-1] == target}
        if len(named) == 1:
            return f"[`{label}`][{named.pop()}]"
        return f"`{label}`"

    return ROLE.sub(replace, text)


class SphinxRolesToAutorefs(griffe.Extension):
    """Rewrites Sphinx roles once the whole package is loaded (so that every
    name can be resolved)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        if pkg.path != "fnopt":
            return
        shown = _public_paths(pkg)
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(obj, obj.docstring.value, shown)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
