"""Compile the engine core with mypyc into an overlay the interpreter loads instead of the sources.

    python scripts/build_core.py            # build if the sources changed, then install the loader
    python scripts/build_core.py --force    # rebuild
    python scripts/build_core.py --status   # say which core this interpreter would load, and why

What is compiled: every module of ``engine/core`` except ``__init__`` (a package must stay a
package) and ``snapshot`` (it defines msgspec ``Struct`` classes, whose class keywords mypyc
drops). ``events/`` stays interpreted for the same reason. The sources are not touched: the
extension modules go to ``.build/core-<tag>/`` (git-ignored) with a manifest holding the
SHA-256 of every source they were built from.

The loader (``scripts/core_loader.py``, copied into the virtual environment's site-packages with
a ``.pth`` file that imports it at start-up) puts the overlay in front of ``engine.core`` only
while the manifest matches the sources byte for byte; an edited source therefore falls back to
the interpreted core at once, never to stale machine code. ``MARGINBOOK_CORE=interpreted`` forces
the interpreted core; ``MARGINBOOK_CORE=compiled`` makes a missing or stale overlay an error
(CI uses it so the suite provably ran compiled).

Without a C compiler (or if mypyc fails) the build prints why and exits 0: the interpreted core
is the fallback, identical by construction (the golden journals and the bench digest prove it).
Exit 1 only with ``--strict`` (CI), so a broken build cannot pass unnoticed there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "engine" / "core"
NOT_COMPILED = {"__init__.py", "snapshot.py"}
TAG = sys.implementation.cache_tag  # e.g. cpython-311
OVERLAY = ROOT / ".build" / f"core-{TAG}"
MANIFEST = "manifest.json"
LOADER = ROOT / "scripts" / "core_loader.py"
GROUP = "marginbook_core"


def sources() -> list[Path]:
    return sorted(p for p in CORE.glob("*.py") if p.name not in NOT_COMPILED)


def digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def fresh() -> bool:
    try:
        manifest = json.loads((OVERLAY / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return bool(manifest.get("sources") == digest(sources()))


def build() -> None:
    """Run mypyc in a child process (its setuptools run must not touch this interpreter)."""
    tmp = ROOT / ".build" / f"mypyc-tmp-{TAG}"
    staging = ROOT / ".build" / f"core-{TAG}.new"
    shutil.rmtree(staging, ignore_errors=True)
    paths = sources()
    config = ROOT / ".build" / "mypyc.ini"
    config.parent.mkdir(parents=True, exist_ok=True)
    # Types only: the project's strict per-module overrides would fail the build as "unused".
    config.write_text("[mypy]\npython_version = 3.11\nignore_missing_imports = True\n")
    args = ["--config-file", str(config), *(str(p.relative_to(ROOT)) for p in paths)]
    code = f"""
import sys
from setuptools import Distribution
from mypyc.build import mypycify
ext = mypycify({args!r}, opt_level="3", group_name={GROUP!r},
               target_dir={str(tmp)!r})
dist = Distribution({{"name": "marginbook-core", "ext_modules": ext}})
cmd = dist.get_command_obj("build_ext")
cmd.build_lib = {str(staging)!r}
cmd.build_temp = {str(tmp / "obj")!r}
cmd.inplace = False
dist.run_command("build_ext")
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError((result.stderr or result.stdout).strip().splitlines()[-1:] or ["mypyc failed"])
    (staging / MANIFEST).write_text(json.dumps({"sources": digest(paths), "root": str(ROOT)}, indent=1))
    shutil.rmtree(OVERLAY, ignore_errors=True)
    staging.rename(OVERLAY)


def install_loader() -> Path:
    """Copy the loader into site-packages with a .pth file that imports it at start-up."""
    site = Path(sysconfig.get_paths()["purelib"])
    shutil.copyfile(LOADER, site / "_marginbook_core_loader.py")
    (site / "_marginbook_core_loader.pth").write_text(
        f"import _marginbook_core_loader; _marginbook_core_loader.install({str(OVERLAY)!r}, {str(CORE)!r})\n"
    )
    return site


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the overlay is fresh")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the core cannot be compiled")
    parser.add_argument("--status", action="store_true", help="say which core is loaded and exit")
    args = parser.parse_args()
    if args.status:
        import engine.core.step as step

        compiled = not step.__file__ or not step.__file__.endswith(".py")
        print(f"engine core: {'compiled' if compiled else 'interpreted'} ({step.__file__})")
        return 0
    if args.force or not fresh():
        print(f"build_core: compiling {len(sources())} modules of engine/core with mypyc …", flush=True)
        try:
            build()
        except Exception as exc:  # no compiler, mypyc missing or failing: fall back, say why
            print(f"build_core: not compiled, the interpreted core is used ({exc})", file=sys.stderr)
            return 1 if args.strict else 0
    install_loader()
    print(f"build_core: compiled core ready in {OVERLAY.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
