"""The fuzz program in the default test run (docs/fuzzing.md).

* a short, seeded run of each target (a bounded number of executions) finds nothing;
* every input saved under ``tests/fuzz/crashes/`` — a finding that was fixed — runs clean, so
  each stays fixed;
* the engine target's journals and digests do not depend on Python's hash seed (a second
  process with another ``PYTHONHASHSEED`` steps the seed corpus to the same bytes).

Longer runs: ``./dev fuzz [seconds]`` or ``python tests/fuzz/fuzz_engine.py fuzz --help``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz_engine import ROOT, target_of, write_seeds
from targets import TARGETS

PROGRAM = Path(__file__).with_name("fuzz_engine.py")
CRASHES = Path(__file__).with_name("crashes")
#: Executions of the short run per target (≈ 6 s for decode, ≈ 20 s for engine on the 2-vCPU CI machine).
SHORT_RUNS = {"decode": 4000, "engine": 500}


def _saved_crashes() -> list[Path]:
    return sorted(p for p in CRASHES.rglob("*") if p.is_file() and p.suffix != ".md")


@pytest.mark.parametrize("target", sorted(SHORT_RUNS))
def test_short_fuzz_run_finds_nothing(target: str, tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(PROGRAM),
        "fuzz",
        "--target",
        target,
        "--runs",
        str(SHORT_RUNS[target]),
        "--seed",
        "1",
        "--workdir",
        str(tmp_path),
        "--no-coverage",
    ]
    # atheris instruments Python bytecode: fuzz the interpreted core even when the suite runs compiled
    env = {**os.environ, "MARGINBOOK_CORE": "interpreted"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600, check=False, env=env)
    report = result.stdout + result.stderr
    log = tmp_path / target / "libfuzzer.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:]) if log.exists() else ""
    assert result.returncode == 0, f"the fuzz run found something:\n{report}\n--- libFuzzer log (tail):\n{tail}"
    executions = re.search(r"executions (\d+)", report)
    assert executions and int(executions[1]) >= SHORT_RUNS[target], report
    assert re.search(r"libFuzzer cov \d+ ft \d+", report), report


@pytest.mark.parametrize("path", _saved_crashes(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_saved_crash_input_stays_fixed(path: Path) -> None:
    """Reproduce by hand: ``python tests/fuzz/fuzz_engine.py replay PATH``."""
    TARGETS[target_of(path)](path.read_bytes())


def test_engine_journals_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    write_seeds("engine", tmp_path / "seeds")
    inputs = [str(tmp_path / "seeds"), *(str(p) for p in _saved_crashes() if target_of(p) == "engine")]
    outputs = []
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, str(PROGRAM), "digests", *inputs],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0].count("\n") >= 20
    assert outputs[0] == outputs[1], "the same commands gave other journals under another hash seed"
