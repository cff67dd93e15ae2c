"""Start-up hook that loads the mypyc-compiled engine core (installed by ``scripts/build_core.py``).

A ``.pth`` file in site-packages calls :func:`install` with the overlay directory and the
``engine/core`` source directory. The overlay is used only if its manifest lists exactly the
SHA-256 of every compiled source as it is now; otherwise (an edited source, a checkout of another
commit) the interpreted core is used, silently unless ``MARGINBOOK_CORE=compiled`` demands the
compiled one, in which case the first import of ``engine.core`` raises ``ImportError`` naming
the stale module. ``MARGINBOOK_CORE=interpreted`` skips the overlay.

This file is copied into the virtual environment; it imports nothing from the project.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
_GROUP_LIB = "marginbook_core__mypyc"  # the shared library of the compiled group (build_core.GROUP)


def _problem(overlay: Path, core: Path) -> tuple[str | None, dict[str, str]]:
    try:
        manifest = json.loads((overlay / "manifest.json").read_text())
    except (OSError, ValueError):
        return f"no compiled core in {overlay} (run scripts/build_core.py)", {}
    built: dict[str, str] = manifest.get("sources", {})
    for name, sha in sorted(built.items()):
        try:
            now = hashlib.sha256((core / name).read_bytes()).hexdigest()
        except OSError:
            return f"engine/core/{name} is gone since the core was compiled", {}
        if now != sha:
            return f"engine/core/{name} changed since the core was compiled (run scripts/build_core.py)", {}
    for path in core.glob("*.py"):
        if path.name not in built and path.name not in ("__init__.py", "snapshot.py"):
            return f"engine/core/{path.name} is new since the core was compiled", {}
    return None, built


class _CompiledCore(importlib.abc.MetaPathFinder):
    """Finds ``engine.core.<name>`` in the overlay for every compiled, unchanged source, and the
    group's shared library. (The overlay is never put on ``sys.path``: its ``engine/`` folder would
    shadow the real package as a namespace package in a process started outside the repo.)"""

    def __init__(self, overlay: Path, names: set[str]) -> None:
        self.overlay = overlay
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == _GROUP_LIB:
            so = self.overlay / f"{fullname}{_SUFFIX}"
        else:
            package, _, name = fullname.rpartition(".")
            if package != "engine.core" or name not in self.names:
                return None
            so = self.overlay / "engine" / "core" / f"{name}{_SUFFIX}"
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(so))
        return importlib.util.spec_from_file_location(fullname, so, loader=loader)


class _Refuse(importlib.abc.MetaPathFinder):
    """``MARGINBOOK_CORE=compiled`` without a usable overlay: importing the core fails loudly."""

    def __init__(self, why: str) -> None:
        self.why = why

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.startswith("engine.core."):
            raise ImportError(f"MARGINBOOK_CORE=compiled but {self.why}")
        return None


def install(overlay_dir: str, core_dir: str) -> None:
    mode = os.environ.get("MARGINBOOK_CORE", "auto")
    if mode == "interpreted":
        return
    overlay, core = Path(overlay_dir), Path(core_dir)
    why, built = _problem(overlay, core)
    if why is not None:
        if mode == "compiled":
            sys.meta_path.insert(0, _Refuse(why))
        return
    sys.meta_path.insert(0, _CompiledCore(overlay, {name.removesuffix(".py") for name in built}))
