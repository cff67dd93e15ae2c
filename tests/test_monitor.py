"""``marginbook monitor`` in a real terminal: tmux runs it, ``capture-pane`` reads the screen.

The pipeline is real (``submit`` → ``engine`` → ``project`` on the Kafka broker). The screen must
show the riskiest account first with its margin call highlighted (the text and its colour), the
liquidation of the demo in the alerts pane, and then follow a new mark price live: a liquidation
appearing as it happens. Skipped where tmux is not installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.conftest import (  # noqa: F401
    ROOT,
    StartProcess,
    embedded_run,
    kafka_bootstrap,
    make_prefix,
    services,
    submit_file,
)
from kafka.test_projections import (
    risk_scenario,
    run_pipeline,
    wait_projected,
)

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install -y tmux)"),
]

_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def tmux(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def terminal() -> Iterator[Any]:
    """Factory: ``start(command, env)`` runs ``command`` in a new detached 160×48 tmux session;
    returns its name. Every session is killed at teardown."""
    sessions: list[str] = []

    def start(command: list[str], env: dict[str, str]) -> str:
        name = f"marginbook-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        shell = f'cd {shlex.quote(str(ROOT))} && env {exports} {shlex.join(command)}; echo "exit code $?"; sleep 30'
        done = tmux("new-session", "-d", "-s", name, "-x", "160", "-y", "48", shell)
        assert done.returncode == 0, done.stderr
        sessions.append(name)
        return name

    yield start
    for name in sessions:
        tmux("kill-session", "-t", name)


def screen(session: str, colours: bool = False) -> str:
    done = tmux("capture-pane", "-p", *(["-e"] if colours else []), "-t", session)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_screen(session: str, *needles: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = screen(session)
        if all(needle in text for needle in needles):
            return text
        time.sleep(0.2)
    pytest.fail(f"{needles} not on screen after {timeout} s:\n{text}")


def row_of(text: str, acct: str) -> str:
    """The accounts-table line of ``acct`` (its name in the first column)."""
    for line in text[text.index("riskiest accounts") : text.index("recent alerts")].splitlines():
        cells = line.strip("│┃ ").split()
        if cells and cells[0] == acct and "%" in line:
            return line
    raise AssertionError(f"no row for {acct}:\n{text}")


def test_monitor_shows_the_riskiest_accounts_margin_calls_and_liquidations_live(
    kafka_bootstrap: str,  # noqa: F811
    make_prefix: Any,  # noqa: F811
    services: StartProcess,  # noqa: F811
    terminal: Any,
    tmp_path: Path,
) -> None:
    prefix = make_prefix()
    flow = tmp_path / "risk.jsonl"
    total = risk_scenario(flow)
    projection = run_pipeline(kafka_bootstrap, prefix, flow, total, services)

    command = [sys.executable, "-m", "cli.main", "monitor", "--topic-prefix", prefix]
    env = {"KAFKA_BOOTSTRAP": kafka_bootstrap, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "48"}
    session = terminal(command, env)
    text = wait_screen(session, "carol", "MARGIN CALL", "LIQUIDATION STARTED", f"seq {total}")

    # The riskiest account first: carol at 292.57 %, then bob; no-debt accounts after them.
    accounts = text[text.index("riskiest accounts") : text.index("recent alerts")]
    rows = [line for line in accounts.splitlines() if re.search(r"\b(alice|bob|carol|mm)\b", line)]
    table = [re.search(r"\b(alice|bob|carol|mm)\b", line)[1] for line in rows]  # type: ignore[index]
    assert table[:2] == ["carol", "bob"] and sorted(table[2:]) == ["alice", "mm"], text
    carol = row_of(text, "carol")
    assert "292.57 %" in carol and "MARGIN CALL" in carol
    assert "1 at or below 300 %" in text
    assert "ok" in row_of(text, "bob") and "MARGIN CALL" not in row_of(text, "bob")

    # Highlighted: carol's row is drawn in red, bob's is not.
    coloured = screen(session, colours=True)
    table_part = coloured[coloured.index("riskiest accounts") : coloured.index("recent alerts")]
    carol_line = next(line for line in table_part.splitlines() if "carol" in line)
    bob_line = next(line for line in table_part.splitlines() if "bob" in line)
    carol_codes = {code for group in _SGR.findall(carol_line) for code in group.split(";")}
    assert "31" in carol_codes or "91" in carol_codes, repr(carol_line)
    assert not ({"31", "91"} & {code for group in _SGR.findall(bob_line) for code in group.split(";")})

    # The alerts pane: alice's liquidation and carol's margin call, as they happened.
    alerts = text[text.index("recent alerts") :]
    assert re.search(r"alice\s+│?\s*LIQUIDATION STARTED", alerts), alerts
    assert re.search(r"carol\s+│?\s*MARGIN CALL", alerts), alerts

    # Live: the mark falls to 70,000 — carol is liquidated and the screen follows.
    mark = tmp_path / "mark.jsonl"
    mark.write_text('{"type":"mark_price","ts":1800000000000,"id":"m-1","instId":"BTC-USDT","markPx":"70000"}\n')
    assert submit_file(kafka_bootstrap, prefix, mark).returncode == 0
    engine = services("engine", prefix)
    wait_projected(projection, total + 1)
    text = wait_screen(session, f"seq {total + 1}", "0 at or below 300 %")
    alerts = text[text.index("recent alerts") :]
    assert re.search(r"carol\s+│?\s*LIQUIDATION STARTED", alerts), alerts

    # Ctrl-C quits cleanly, leaving the screen as it was (the pane then shows the exit code).
    tmux("send-keys", "-t", session, "C-c")
    wait_screen(session, "exit code 0", timeout=10)
    for process in (engine, projection):
        assert process.terminate(timeout=10) == 0
