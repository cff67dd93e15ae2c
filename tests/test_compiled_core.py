"""The compiled core (scripts/build_core.py + scripts/core_loader.py) is never stale, never silent.

The suite itself runs on the compiled core under ``./dev test`` (``MARGINBOOK_CORE=compiled``) and
the golden journals are checked again on the interpreted one there; these tests pin the loader's
own rules: an overlay is used only while every compiled source is byte-identical to what it was
built from, and ``MARGINBOOK_CORE=compiled`` turns a missing or stale overlay into an ImportError.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _loader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("core_loader_under_test", ROOT / "scripts" / "core_loader.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake(tmp_path: Path) -> tuple[Path, Path]:
    core, overlay = tmp_path / "core", tmp_path / "overlay"
    core.mkdir()
    overlay.mkdir()
    (core / "__init__.py").write_text("")
    (core / "snapshot.py").write_text("x = 1\n")
    (core / "book.py").write_text("y = 2\n")
    sources = {"book.py": hashlib.sha256(b"y = 2\n").hexdigest()}
    (overlay / "manifest.json").write_text(json.dumps({"sources": sources}))
    return overlay, core


def test_a_fresh_overlay_is_used(tmp_path: Path) -> None:
    overlay, core = _fake(tmp_path)
    why, built = _loader()._problem(overlay, core)
    assert why is None and set(built) == {"book.py"}


def test_an_edited_source_makes_the_overlay_stale(tmp_path: Path) -> None:
    overlay, core = _fake(tmp_path)
    (core / "book.py").write_text("y = 3\n")
    why, _ = _loader()._problem(overlay, core)
    assert why is not None and "book.py changed" in why


def test_a_new_source_makes_the_overlay_stale(tmp_path: Path) -> None:
    overlay, core = _fake(tmp_path)
    (core / "options.py").write_text("z = 1\n")
    why, _ = _loader()._problem(overlay, core)
    assert why is not None and "options.py is new" in why


def test_no_manifest_means_no_overlay(tmp_path: Path) -> None:
    overlay, core = _fake(tmp_path)
    (overlay / "manifest.json").unlink()
    why, _ = _loader()._problem(overlay, core)
    assert why is not None and "no compiled core" in why


def test_compiled_demanded_but_stale_is_an_import_error(tmp_path: Path) -> None:
    overlay, core = _fake(tmp_path)
    (core / "book.py").write_text("y = 4\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import core_loader as l;"
        "l.install(sys.argv[2], sys.argv[3]); import engine.core.book"
    )
    env = dict(os.environ, MARGINBOOK_CORE="compiled")
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "scripts"), str(overlay), str(core)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "MARGINBOOK_CORE=compiled but engine/core/book.py changed" in done.stderr


@pytest.mark.skipif(os.environ.get("MARGINBOOK_CORE") != "compiled", reason="only under ./dev test's compiled run")
def test_the_suite_runs_on_the_compiled_core() -> None:
    import engine.core.risk
    import engine.core.step

    for module in (engine.core.step, engine.core.risk):
        assert module.__file__ is not None and not module.__file__.endswith(".py"), module.__file__
