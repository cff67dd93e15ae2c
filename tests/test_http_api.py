"""``marginbook api``: the HTTP JSON read API over the risk views, tested over a real socket.

The pipeline is real (``submit`` → ``engine`` → ``project`` on the Kafka broker); the API runs
as its own process on a free port, tails the risk and alerts topics and is queried with urllib.
Its answers must be the views of ``marginbook run --json`` of the same commands, and follow a
new mark price live. The committed ``docs/openapi.json`` must be what the code generates.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kafka.conftest import (  # noqa: F401
    ROOT,
    EngineProcess,
    StartProcess,
    embedded_run,
    kafka_bootstrap,
    make_prefix,
    services,
    submit_file,
)
from kafka.test_projections import (
    expected_alerts,
    keyed,
    risk_scenario,
    run_pipeline,
    wait_projected,
)

from projections.reader import RiskStore


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, Any, dict[str, str]]:
    """``(status, parsed JSON body, headers with lower-case names)`` of a GET on the local API."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return int(response.status), json.loads(response.read()), _lower(response.headers)
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read() or b"null"), _lower(err.headers)


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def wait_until(check: Any, timeout: float, process: EngineProcess, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if not process.alive():
            pytest.fail(f"process exited with {process.proc.returncode}:\n{process.tail()}")
        try:
            last = check()
        except OSError:
            last = None
        if last:
            return last
        time.sleep(0.05)
    pytest.fail(f"{what} not seen after {timeout} s (last: {last!r}):\n{process.tail()}")


# ------------------------------------------------------------------------------------ no broker


def test_committed_openapi_document_is_the_generated_one() -> None:
    """``docs/openapi.json`` is ``marginbook api --print-openapi`` (regenerate it when the API
    changes); it documents every route with the contract's view fields."""
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "api", "--print-openapi"], cwd=ROOT, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    generated = json.loads(done.stdout)
    assert json.loads((ROOT / "docs" / "openapi.json").read_text()) == generated
    assert {
        "/accounts/{acct}",
        "/accounts/{acct}/positions",
        "/positions/{acct}/{instId}/{posSide}",
        "/accounts",
        "/alerts",
        "/healthz",
    } <= set(generated["paths"])
    schemas = generated["components"]["schemas"]
    assert {"acct", "totalEq", "imr", "mmr", "mgnRatio", "balances", "acctMode", "wallet", "adjEq", "ordFroz"} == set(
        schemas["AccountView"]["properties"]
    )
    assert {"liqPx", "markPx", "posSide", "instId", "lever"} <= set(schemas["PositionView"]["properties"])
    assert {"type", "seq", "ts", "acct", "mgnRatio"} <= set(schemas["AlertView"]["properties"])


def test_store_ranks_riskiest_first_and_forgets_tombstoned_keys() -> None:
    store = RiskStore(max_alerts=3)
    views = {"x": "2.5", "y": "", "z": "0.9", "w": "2.5"}
    for acct, ratio in views.items():
        store.apply_risk(acct, json.dumps({"acct": acct, "mgnRatio": ratio}).encode(), seq=1)
    assert [v["acct"] for v in store.riskiest(10)] == ["z", "w", "x", "y"]
    store.apply_risk("z", json.dumps({"acct": "z", "mgnRatio": "7"}).encode(), seq=2)
    store.apply_risk("x", None, seq=3)
    store.apply_risk("w/BTC-USDT/net", json.dumps({"acct": "w", "instId": "BTC-USDT"}).encode(), seq=3)
    assert [v["acct"] for v in store.riskiest(10)] == ["w", "z", "y"]
    assert store.account_positions("w") == [{"acct": "w", "instId": "BTC-USDT"}]
    store.apply_risk("w/BTC-USDT/net", None, seq=4)
    assert store.account_positions("w") == [] and "w/BTC-USDT/net" not in store.seqs
    for seq in range(5):
        store.apply_alert(json.dumps({"type": "margin_call", "seq": seq, "ts": seq, "acct": "a", "event": 0}).encode())
    assert [a["seq"] for a in store.recent_alerts(10)] == [4, 3, 2]


# ------------------------------------------------------------------------------------ over a socket


@pytest.mark.kafka
def test_http_api_serves_the_risk_views_over_a_real_socket(
    kafka_bootstrap: str,  # noqa: F811
    make_prefix: Any,  # noqa: F811
    services: StartProcess,  # noqa: F811
    tmp_path: Path,
) -> None:
    prefix = make_prefix()
    flow = tmp_path / "risk.jsonl"
    total = risk_scenario(flow)
    run = embedded_run(flow, tmp_path / "embedded")
    reference, journal = keyed(run.view), run.events
    projection = run_pipeline(kafka_bootstrap, prefix, flow, total, services)

    api = services("api", prefix)
    port = api.metrics_port
    wait_until(lambda: get(port, "/healthz")[0] == 200, 30, api, "/healthz 200")
    wait_until(lambda: get(port, "/accounts/carol")[1] == reference["carol"], 10, api, "carol's view")
    status, health, _ = get(port, "/healthz")
    assert health["ready"] is True and health["accounts"] == 4
    assert health["positions"] == sum(1 for key in reference if "/" in key) == 2
    assert 0 < health["lastSeq"]["0"] <= total

    # One account, one position: exactly the contract's views, with the seq they reflect.
    status, carol, headers = get(port, "/accounts/carol")
    assert status == 200 and carol == reference["carol"]
    assert 0 < int(headers["x-marginbook-seq"]) <= total
    status, position, _ = get(port, "/positions/carol/BTC-USDT/net")
    assert status == 200 and position == reference["carol/BTC-USDT/net"]
    assert get(port, "/accounts/carol/positions")[1] == {"positions": [reference["carol/BTC-USDT/net"]]}
    status, missing, _ = get(port, "/accounts/nobody")
    assert status == 404 and "nobody" in missing["detail"]
    assert get(port, "/positions/alice/BTC-USDT/net")[0] == 404  # liquidated: tombstoned

    # Riskiest first; accounts without a ratio last.
    status, listing, _ = get(port, "/accounts?sort=mgnRatio&limit=10")
    assert status == 200 and listing["total"] == 4
    ranked = [a["acct"] for a in listing["accounts"]]
    with_ratio = sorted((Decimal(v["mgnRatio"]), k) for k, v in reference.items() if "/" not in k and v["mgnRatio"])
    assert ranked[: len(with_ratio)] == [acct for _, acct in with_ratio] == ["carol", "bob"]
    assert sorted(ranked[len(with_ratio) :]) == ["alice", "mm"]
    assert [a["acct"] for a in get(port, "/accounts?sort=mgnRatio&limit=1")[1]["accounts"]] == ["carol"]
    assert [a["acct"] for a in get(port, "/accounts?maxRatio=3")[1]["accounts"]] == ["carol"]
    assert [a["acct"] for a in get(port, "/accounts?sort=acct")[1]["accounts"]] == ["alice", "bob", "carol", "mm"]
    assert get(port, "/accounts?limit=0")[0] == 422

    # Recent alerts, newest first: the journal's, in reverse.
    status, alerts, _ = get(port, "/alerts?limit=100")
    assert status == 200
    expected = expected_alerts(journal)
    assert [(a["type"], a["seq"], a["event"], a["acct"]) for a in alerts["alerts"]] == expected[::-1]
    assert [a["type"] for a in get(port, "/alerts?limit=2&acct=alice")[1]["alerts"]] == [
        "margin_call_cleared",
        "liquidation_finished",
    ]

    status, openapi, _ = get(port, "/openapi.json")
    assert status == 200 and "/accounts/{acct}" in openapi["paths"]

    # Live: a new mark price flows through engine and projection into the API's answers.
    mark = tmp_path / "mark.jsonl"
    mark.write_text('{"type":"mark_price","ts":1800000000000,"id":"m-1","instId":"BTC-USDT","markPx":"83500"}\n')
    both = tmp_path / "both.jsonl"
    both.write_text(flow.read_text() + mark.read_text())
    after = keyed(embedded_run(both, tmp_path / "after").view)
    assert after["carol"]["mgnRatio"] != reference["carol"]["mgnRatio"]
    assert submit_file(kafka_bootstrap, prefix, mark).returncode == 0
    engine = services("engine", prefix)
    wait_projected(projection, total + 1)
    wait_until(lambda: get(port, "/accounts/carol")[1] == after["carol"], 20, api, "carol's new view")
    assert get(port, "/positions/carol/BTC-USDT/net")[1] == after["carol/BTC-USDT/net"]
    assert get(port, "/healthz")[1]["lastSeq"] == {"0": total + 1}

    for process in (api, engine, projection):
        assert process.terminate(timeout=10) == 0, process.tail()
