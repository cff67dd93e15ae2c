"""Benchmark of the marginbook engine on a seeded, realistic command flow (``bench/flow.py``).

Usage::

    python bench/engine_bench.py [--smoke] [--commands N] [--seed S] [--accounts A]
                                 [--json-out PATH] [--profile]

Passes, each on a fresh engine over the same pre-generated flow:

a. **step** — every line is decoded first (``events.codec.decode_command_json``, timed on its
   own), then ``Engine.step`` is timed per command with ``time.perf_counter_ns`` (latency
   percentiles; throughput over the loop, timer calls included), then a second pass runs the
   bare loop without per-command timing (pure throughput);
b. **end to end** — decode + ``EmbeddedEngine.submit`` (append the command, step, encode the
   outcome, append it) in a temporary directory with the default policy: fsync ``BATCH``,
   flush every 1,000 commands, a snapshot every 100,000;
c. **outcomes** — events by type, trades, rejections by reason, acceptance ratios, resting
   orders at the end, accounts with debt, margin calls and liquidations.

The three passes must end in the same state (snapshot digest) — else the exit code is 1, as it
is when fewer than 80 % of the orders are accepted. ``--profile`` adds a step pass under
cProfile and prints the 25 functions with the most own time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import flow
from rich.console import Console
from rich.table import Table

from engine.core import snapshot
from engine.core.step import Engine
from engine.io.embedded import COMMANDS_FILE, EVENTS_FILE, EmbeddedEngine, snapshot_paths
from engine.io.filelog import FileLog
from events import commands as cmd
from events import journal as ev
from events.codec import decode_command_json, decode_outcome_json

SMOKE_COMMANDS = 5_000
SMOKE_ACCOUNTS = 200
MIN_ACCEPTANCE = 0.8
REPO = Path(__file__).resolve().parent.parent


# --- helpers ---------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    uname = platform.uname()
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "processor": platform.processor(),
        "logical_cpus": os.cpu_count(),
        "uname": f"{uname.system} {uname.release} {uname.machine}",
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def source_info() -> dict[str, Any]:
    """Commit measured and uncommitted engine changes (read-only git calls, no index refresh)."""

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(REPO), *argv], capture_output=True, text=True, check=False
        )
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""

    modified = git("status", "--porcelain", "--", "engine", "events")
    import engine.core.step as step_module

    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or "unknown",
        # mypyc overlay (scripts/build_core.py) or the sources; MARGINBOOK_CORE picks
        "core": "interpreted" if step_module.__file__.endswith(".py") else "compiled",
        "modified_engine_files": [line[3:] for line in modified.splitlines()],
    }


def percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return 0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, float]:
    ordered = sorted(latencies_ns)
    n = len(ordered)
    return {
        "mean_us": (sum(ordered) / n / 1_000) if n else 0.0,
        "p50_us": percentile(ordered, 0.50) / 1_000,
        "p99_us": percentile(ordered, 0.99) / 1_000,
        "p99_9_us": percentile(ordered, 0.999) / 1_000,
        "max_us": (ordered[-1] / 1_000) if n else 0.0,
    }


def timer_overhead_ns(samples: int = 200_000) -> float:
    """Median cost of one ``t0 = perf_counter_ns(); t1 = perf_counter_ns()`` pair."""
    pc = time.perf_counter_ns
    deltas = []
    for _ in range(samples):
        t0 = pc()
        t1 = pc()
        deltas.append(t1 - t0)
    deltas.sort()
    return float(deltas[len(deltas) // 2])


def command_kind(command: cmd.Command) -> str:
    tag = str(command.__struct_config__.tag)
    if isinstance(command, cmd.PlaceOrder):
        return f"{tag}:{command.ordType}"
    return tag


# --- passes ----------------------------------------------------------------------------------


class GcWatch:
    """Counts garbage collections and their total pause while active (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.pause_ns = 0
        self.max_pause_ns = 0
        self._start = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter_ns()
        else:
            pause = time.perf_counter_ns() - self._start
            self.collections[info["generation"]] += 1
            self.pause_ns += pause
            self.max_pause_ns = max(self.max_pause_ns, pause)

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def summary(self) -> dict[str, Any]:
        return {
            "collections_by_generation": self.collections,
            "pause_ms": self.pause_ns / 1e6,
            "max_pause_ms": self.max_pause_ns / 1e6,
        }


def step_timed(commands: Sequence[cmd.Command]) -> tuple[Engine, list[int], int, dict[str, Any]]:
    """Pass a, timed: latency of every step, plus the wall time of the whole loop. Outcomes
    are dropped at once (keeping them would grow the heap the collector walks)."""
    gc.collect()
    engine = Engine()
    step = engine.step
    pc = time.perf_counter_ns
    latencies = [0] * len(commands)
    with GcWatch() as gc_watch:
        start = pc()
        for i, command in enumerate(commands):
            t0 = pc()
            step(command)
            t1 = pc()
            latencies[i] = t1 - t0
        wall = pc() - start
    return engine, latencies, wall, gc_watch.summary()


def step_untimed(commands: Sequence[cmd.Command]) -> tuple[Engine, int]:
    """Pass a, bare: only the loop is timed."""
    gc.collect()
    engine = Engine()
    step = engine.step
    start = time.perf_counter_ns()
    for command in commands:
        step(command)
    return engine, time.perf_counter_ns() - start


def end_to_end(lines: Sequence[bytes], commands: Sequence[cmd.Command]) -> dict[str, Any]:
    """Pass b: decode + EmbeddedEngine.submit per line (default BATCH fsync, flush per 1000).

    Afterwards (untimed) the journal is read back from ``events.log`` for the outcome
    statistics (part c), with the final state of this engine."""
    gc.collect()
    pc = time.perf_counter_ns
    latencies = [0] * len(lines)
    with tempfile.TemporaryDirectory(prefix="marginbook-bench-") as tmp:
        directory = Path(tmp) / "log"
        with GcWatch() as gc_watch:
            start = pc()
            embedded = EmbeddedEngine(directory)
            submit = embedded.submit
            decode = decode_command_json
            for i, raw in enumerate(lines):
                t0 = pc()
                submit(decode(raw), raw)
                t1 = pc()
                latencies[i] = t1 - t0
            embedded.close()
            wall = pc() - start
        digest = snapshot.digest(embedded.state)
        t0 = pc()
        snapshot.encode(embedded.state)
        snapshot_encode_ms = (pc() - t0) / 1e6
        sizes = {name: (directory / name).stat().st_size for name in (COMMANDS_FILE, EVENTS_FILE)}
        snapshots = len(snapshot_paths(directory))
        with FileLog.open(directory / EVENTS_FILE) as journal:
            outcomes = (decode_outcome_json(payload) for _, payload in journal.read())
            stats = outcome_stats(embedded.engine, commands, outcomes)
    return {
        "wall_s": wall / 1e9,
        "commands_per_s": len(lines) / (wall / 1e9),
        "latency": latency_summary(latencies),
        "gc": gc_watch.summary(),
        "commands_log_bytes": sizes[COMMANDS_FILE],
        "events_log_bytes": sizes[EVENTS_FILE],
        "snapshots_written": snapshots,
        "snapshot_encode_ms_at_end": snapshot_encode_ms,
        "digest": digest,
        "outcomes": stats,
    }


def profile_step(commands: Sequence[cmd.Command], top: int = 25) -> tuple[float, list[dict[str, Any]]]:
    """A step pass under cProfile; the ``top`` functions by own time."""
    gc.collect()
    engine = Engine()
    step = engine.step
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for command in commands:
        step(command)
    profiler.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    rows: list[dict[str, Any]] = []
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        path = Path(filename)
        try:
            where = f"{path.resolve().relative_to(REPO)}:{line}"
        except (ValueError, OSError):
            where = filename if filename.startswith("<") or filename == "~" else f"{path.name}:{line}"
        rows.append(
            {
                "function": f"{where}({func})",
                "ncalls": ncalls,
                "tottime_s": tottime,
                "cumtime_s": cumtime,
                "percall_us": tottime / ncalls * 1e6 if ncalls else 0.0,
            }
        )
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return wall, rows[:top]


# --- outcome statistics ----------------------------------------------------------------------


def outcome_stats(engine: Engine, commands: Sequence[cmd.Command], outcomes: Iterable[ev.Outcome]) -> dict[str, Any]:
    """Part c, from the journal (``outcomes``) and the engine's final state."""
    events: Counter[str] = Counter()
    rejections: Counter[str] = Counter()
    order_rejections = 0
    commands_rejected = 0
    n_outcomes = 0
    liquidation_trades = 0
    auto_borrows = 0
    for outcome in outcomes:
        n_outcomes += 1
        rejected = False
        for event in outcome.events:
            tag = str(event.__struct_config__.tag)
            events[tag] += 1
            if isinstance(event, ev.OrderRejected):
                rejections[f"place_order/{event.reason}"] += 1
                order_rejections += 1
                rejected = True
            elif isinstance(event, ev.CommandRejected):
                rejections[f"{event.command}/{event.reason}"] += 1
                rejected = True
            elif isinstance(event, ev.Traded) and event.liquidation:
                liquidation_trades += 1
            elif isinstance(event, ev.Borrowed) and event.auto:
                auto_borrows += 1
        commands_rejected += rejected
    placed = sum(isinstance(c, cmd.PlaceOrder) for c in commands)
    cancels = sum(isinstance(c, cmd.CancelOrder) for c in commands)
    state = engine.state
    debtors = sum(1 for account in state.accounts.values() if account.has_debt())
    return {
        "commands": n_outcomes,
        "events": sum(events.values()),
        "events_by_type": dict(events.most_common()),
        "trades": events["traded"],
        "liquidation_trades": liquidation_trades,
        "auto_borrows": auto_borrows,
        "orders_placed": placed,
        "orders_accepted": events["order_accepted"],
        "order_acceptance": events["order_accepted"] / placed if placed else 0.0,
        "order_rejections": order_rejections,
        "cancels": cancels,
        "cancels_not_found": rejections["cancel_order/order_not_found"],
        "commands_rejected": commands_rejected,
        "command_acceptance": 1 - commands_rejected / n_outcomes if n_outcomes else 0.0,
        "rejections_by_reason": dict(rejections.most_common()),
        "resting_orders": sum(len(inst.book) for inst in state.instruments.values()),
        "resting_by_instrument": {inst_id: len(inst.book) for inst_id, inst in state.instruments.items()},
        "accounts": len(state.accounts),
        "accounts_with_debt": debtors,
        "isolated_positions": sum(len(a.isolated) for a in state.accounts.values()),
        "perp_positions": sum(len(a.perps) for a in state.accounts.values()),
        "positions_opened": events["position_opened"],
        "funding_settlements": events["funding_residual"],
        "margin_calls_raised": events["margin_call_raised"],
        "margin_calls_cleared": events["margin_call_cleared"],
        "accounts_in_margin_call": sum(a.margin_call for a in state.accounts.values()),
        "liquidations": events["liquidation_started"],
        "final_marks": {inst_id: str(px) for inst_id, px in state.marks.items()},
    }


def latency_by_kind(commands: Sequence[cmd.Command], latencies: Sequence[int]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[int]] = {}
    for command, latency in zip(commands, latencies, strict=True):
        groups.setdefault(command_kind(command), []).append(latency)
    total = sum(latencies) or 1
    result = {}
    for kind, values in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        summary = latency_summary(values)
        result[kind] = {"count": len(values), "time_share": sum(values) / total, **summary}
    return result


# --- report ----------------------------------------------------------------------------------


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def render(console: Console, r: dict[str, Any]) -> None:
    m = r["machine"]
    console.print(
        f"[bold]marginbook engine benchmark[/bold] — {r['flow']['commands']:,} commands, seed {r['flow']['seed']}, "
        f"{r['flow']['accounts']:,} accounts{' (smoke)' if r['smoke'] else ''}"
    )
    console.print(
        f"machine: {m['cpu_model']} · {m['logical_cpus']} logical CPUs · {m['uname']} · {m['python']}"
        f"{' · processor ' + m['processor'] if m['processor'] else ''}"
        + (f" · load average {m['load_average_at_start'][0]:.2f} at start" if m["load_average_at_start"] else "")
    )
    src = r["source"]
    dirty = src["modified_engine_files"]
    console.print(
        f"source: commit {src['commit']}, {src['core']} core"
        + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (engine and events unmodified)")
    )
    f = r["flow"]
    console.print(
        f"flow: {f['setup_commands']:,} setup + {f['main_commands']:,} main commands, generated in "
        f"{f['generate_s']:.2f} s, sha256 {f['sha256'][:16]}…; decode {_n(r['decode']['commands_per_s'])} cmd/s"
    )

    t = Table(title="Throughput and latency", title_justify="left")
    for col in ("pass", "commands/s", "wall s", "p50 µs", "p99 µs", "p99.9 µs", "max µs"):
        t.add_column(col, justify="right" if col != "pass" else "left")
    s, e = r["step"], r["end_to_end"]
    lat = s["timed"]["latency"]
    t.add_row(
        "a. step, timed per command",
        _n(s["timed"]["commands_per_s"]),
        f"{s['timed']['wall_s']:.2f}",
        _n(lat["p50_us"], 1),
        _n(lat["p99_us"], 1),
        _n(lat["p99_9_us"], 1),
        _n(lat["max_us"], 0),
    )
    t.add_row(
        "a. step, untimed loop", _n(s["untimed"]["commands_per_s"]), f"{s['untimed']['wall_s']:.2f}", "", "", "", ""
    )
    el = e["latency"]
    t.add_row(
        "b. decode + EmbeddedEngine.submit",
        _n(e["commands_per_s"]),
        f"{e['wall_s']:.2f}",
        _n(el["p50_us"], 1),
        _n(el["p99_us"], 1),
        _n(el["p99_9_us"], 1),
        _n(el["max_us"], 0),
    )
    console.print(t)
    console.print(
        f"timer overhead ≈ {s['timer_overhead_ns']:.0f} ns per perf_counter_ns pair (included in the timed latencies); "
        f"end to end wrote {e['commands_log_bytes'] / 1e6:.1f} MB commands + {e['events_log_bytes'] / 1e6:.1f} MB "
        f"events, {e['snapshots_written']} snapshot(s) (encoding the final state takes "
        f"{e['snapshot_encode_ms_at_end']:.0f} ms); passes agree on the final state: "
        f"{'yes' if r['deterministic'] else 'NO'}"
    )
    for label, g in (("timed step pass", s["timed"]["gc"]), ("end-to-end pass", e["gc"])):
        gens = "/".join(str(c) for c in g["collections_by_generation"])
        console.print(
            f"GC during the {label}: {gens} collections (gen 0/1/2), {g['pause_ms']:.0f} ms in total, "
            f"longest {g['max_pause_ms']:.1f} ms"
        )

    k = Table(title="Step latency by command (timed pass)", title_justify="left")
    for col in ("command", "count", "time share", "mean µs", "p50 µs", "p99 µs", "max µs"):
        k.add_column(col, justify="right" if col != "command" else "left")
    for kind, row in s["by_command"].items():
        k.add_row(
            kind,
            _n(row["count"]),
            f"{row['time_share']:.1%}",
            _n(row["mean_us"], 1),
            _n(row["p50_us"], 1),
            _n(row["p99_us"], 1),
            _n(row["max_us"], 0),
        )
    console.print(k)

    o = r["outcomes"]
    q = Table(title="Outcomes", title_justify="left")
    q.add_column("figure")
    q.add_column("value", justify="right")
    q.add_row("events produced", _n(o["events"]))
    q.add_row("trades (of which liquidation)", f"{o['trades']:,} ({o['liquidation_trades']:,})")
    q.add_row("auto-borrows on fills", _n(o["auto_borrows"]))
    q.add_row(
        "orders accepted / placed",
        f"{o['orders_accepted']:,} / {o['orders_placed']:,} ({o['order_acceptance']:.1%})",
    )
    q.add_row("commands without a rejection", f"{o['command_acceptance']:.1%}")
    q.add_row("cancels not found / cancels", f"{o['cancels_not_found']:,} / {o['cancels']:,}")
    q.add_row(
        "resting orders at the end",
        f"{o['resting_orders']:,} ({', '.join(f'{k} {v:,}' for k, v in o['resting_by_instrument'].items())})",
    )
    q.add_row("accounts with debt / accounts", f"{o['accounts_with_debt']:,} / {o['accounts']:,}")
    q.add_row(
        "margin calls raised / cleared (in call at end)",
        f"{o['margin_calls_raised']:,} / {o['margin_calls_cleared']:,} ({o['accounts_in_margin_call']:,})",
    )
    q.add_row("liquidations", _n(o["liquidations"]))
    if o.get("positions_opened"):
        q.add_row(
            "isolated + perpetual positions opened (open at end: isolated, perpetual)",
            f"{o['positions_opened']:,} ({o['isolated_positions']:,}, {o['perp_positions']:,})",
        )
        q.add_row("funding settlements", _n(o["funding_settlements"]))
    console.print(q)

    rej = Table(title="Rejections by reason", title_justify="left")
    rej.add_column("command/reason")
    rej.add_column("count", justify="right")
    for reason, count in o["rejections_by_reason"].items():
        rej.add_row(reason, _n(count))
    ev_t = Table(title="Events by type", title_justify="left")
    ev_t.add_column("event")
    ev_t.add_column("count", justify="right")
    for tag, count in o["events_by_type"].items():
        ev_t.add_row(tag, _n(count))
    console.print(rej)
    console.print(ev_t)

    if "profile" in r:
        p = r["profile"]
        pt = Table(
            title=f"cProfile of the step pass ({p['wall_s']:.1f} s under the profiler): top {len(p['top'])} by tottime",
            title_justify="left",
        )
        for col in ("ncalls", "tottime s", "percall µs", "cumtime s", "function"):
            pt.add_column(col, justify="left" if col == "function" else "right")
        for row in p["top"]:
            pt.add_row(
                _n(row["ncalls"]),
                f"{row['tottime_s']:.3f}",
                f"{row['percall_us']:.2f}",
                f"{row['cumtime_s']:.3f}",
                row["function"],
            )
        console.print(pt)


# --- main ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    n = SMOKE_COMMANDS if args.smoke and args.commands is None else (args.commands or 200_000)
    accounts = args.accounts if args.accounts is not None else (SMOKE_ACCOUNTS if args.smoke else 1_000)

    t0 = time.perf_counter()
    lines, fstats = flow.generate(n, args.seed, accounts, args.model)
    generate_s = time.perf_counter() - t0
    console.log(f"generated {len(lines):,} commands in {generate_s:.2f} s")

    t0 = time.perf_counter()
    commands = [decode_command_json(line) for line in lines]
    decode_s = time.perf_counter() - t0

    overhead = timer_overhead_ns()
    engine, latencies, wall, timed_gc = step_timed(commands)
    console.log(f"step pass (timed) {wall / 1e9:.2f} s")
    timed_digest = snapshot.digest(engine.state)
    del engine
    by_command = latency_by_kind(commands, latencies)
    bare, bare_wall = step_untimed(commands)
    console.log(f"step pass (untimed) {bare_wall / 1e9:.2f} s")
    bare_digest = snapshot.digest(bare.state)
    del bare
    e2e = end_to_end(lines, commands)
    console.log(f"end-to-end pass {e2e['wall_s']:.2f} s")
    stats = e2e.pop("outcomes")

    report: dict[str, Any] = {
        "machine": machine_info(),
        "source": source_info(),
        "smoke": bool(args.smoke),
        "flow": {
            "commands": len(lines),
            "seed": args.seed,
            "accounts": accounts,
            "model": args.model,
            "setup_commands": fstats.setup,
            "main_commands": fstats.main,
            "by_kind": fstats.by_kind,
            "sha256": flow.digest(lines),
            "generate_s": generate_s,
        },
        "decode": {"wall_s": decode_s, "commands_per_s": len(lines) / decode_s},
        "step": {
            "timer_overhead_ns": overhead,
            "timed": {
                "wall_s": wall / 1e9,
                "commands_per_s": len(commands) / (wall / 1e9),
                "latency": latency_summary(latencies),
                "gc": timed_gc,
            },
            "untimed": {"wall_s": bare_wall / 1e9, "commands_per_s": len(commands) / (bare_wall / 1e9)},
            "by_command": by_command,
        },
        "end_to_end": e2e,
        "outcomes": stats,
        "state_digest": timed_digest,
        "deterministic": timed_digest == bare_digest == e2e["digest"],
    }
    if args.profile:
        prof_wall, top = profile_step(commands)
        console.log(f"profiled step pass {prof_wall:.2f} s")
        report["profile"] = {"wall_s": prof_wall, "top": top}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_COMMANDS:,} commands, {SMOKE_ACCOUNTS} accounts")
    parser.add_argument("--commands", type=int, default=None, help="commands to generate (default 200,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--accounts", type=int, default=None, help="retail accounts (default 1,000)")
    parser.add_argument("--json-out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--profile", action="store_true", help="also profile a step pass (top 25 by tottime)")
    parser.add_argument(
        "--model",
        choices=("spot", "full"),
        default="spot",
        help="flow mix: spot (cash + cross spot margin) or full (adds isolated margin, perpetuals, funding)",
    )
    args = parser.parse_args(argv)

    console = Console(width=None if sys.stdout.isatty() else 140)
    report = run(args, console)
    render(console, report)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"figures written to {args.json_out}")

    status = 0
    if not report["deterministic"]:
        console.print("[red]FAIL[/red]: the passes ended in different states (digests differ)")
        status = 1
    if report["outcomes"]["orders_placed"] and report["outcomes"]["order_acceptance"] < MIN_ACCEPTANCE:
        console.print(
            f"[red]FAIL[/red]: only {report['outcomes']['order_acceptance']:.1%} of the orders were accepted "
            f"(expected at least {MIN_ACCEPTANCE:.0%})"
        )
        status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
