"""The functional core stays pure: no clock, randomness, I/O, logging, asyncio or floats.

``events/`` and ``engine/core/`` may not import or call any source of non-determinism. An
audited exception carries the marker ``det-ok`` on its line. This test is the enforcement of
the rule in ``docs/architecture.md``; it fails on the first forbidden use it finds.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = [ROOT / "events", ROOT / "engine" / "core"]
FORBIDDEN_MODULES = {
    "time",
    "datetime",
    "random",
    "secrets",
    "uuid",
    "os",
    "sys",
    "io",
    "socket",
    "asyncio",
    "aiokafka",
    "logging",
    "threading",
    "subprocess",
    "pathlib",
    "tempfile",
}
FORBIDDEN_CALLS = re.compile(r"\b(float\(|open\(|print\(|hash\(|id\(|input\()")


def _sources() -> list[Path]:
    return sorted(p for folder in PURE for p in folder.rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_is_pure(path: Path) -> None:
    text = path.read_text()
    tree = ast.parse(text)
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path}:{node.lineno}: imports {name}"
    for number, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0]
        if "det-ok" in line:
            continue
        match = FORBIDDEN_CALLS.search(code)
        assert match is None, f"{path}:{number}: calls {match.group(1) if match else ''}"


def test_the_check_catches_a_clock(tmp_path: Path) -> None:
    """The rule itself can fail: a module importing time is flagged."""
    bad = "import time\nnow = time.time()\n"
    tree = ast.parse(bad)
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert any(name in FORBIDDEN_MODULES for name in imported)
