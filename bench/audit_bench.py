"""Audit benchmark: how fast ``marginbook audit`` replays and checks a long history.

1. generate a seeded realistic flow with ``bench/flow.generate`` (default one million commands);
2. journal it with ``marginbook run FLOW --log DIR`` (a real process; ``--fsync never``, default
   snapshot interval) — timed too, for reference;
3. time ``marginbook audit DIR --no-progress --chain-every N`` (a real process): every command is
   decoded and stepped, every outcome compared byte for byte with ``events.log``, the digest chain
   kept, every snapshot checked.

Reports commands/s of the audit (commands replayed / wall time of the ``audit`` process, start-up
included) and exits 1 if the audit does not pass.

    .venv/bin/python bench/audit_bench.py --smoke             # 20,000 commands, a few seconds
    .venv/bin/python bench/audit_bench.py                     # 1,000,000 commands, several minutes
    .venv/bin/python bench/audit_bench.py --commands 200000 --keep /tmp/audit-log --json-out r.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from flow import digest, generate  # noqa: E402

_SCRIPT = Path(sys.executable).parent / "marginbook"
MARGINBOOK = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cli.main"]


def _run(args: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    return time.perf_counter() - started, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=1_000_000, help="commands in the flow (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--smoke", action="store_true", help="small run (20,000 commands, 200 accounts)")
    parser.add_argument("--chain-every", type=int, default=100_000, metavar="N")
    parser.add_argument("--keep", metavar="DIR", help="keep the flow and the log in DIR (default: a temporary dir)")
    parser.add_argument("--json-out", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.commands, args.accounts = 20_000, 200

    with tempfile.TemporaryDirectory(prefix="audit-bench-") as scratch:
        work = Path(args.keep) if args.keep else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        flow_path, log_dir = work / "flow.jsonl", work / "log"
        if log_dir.exists() and any(log_dir.iterdir()):
            print(f"{log_dir} is not empty", file=sys.stderr)
            return 2

        started = time.perf_counter()
        lines, _stats = generate(args.commands, args.seed, args.accounts)
        with open(flow_path, "wb") as handle:
            for line in lines:
                handle.write(line + b"\n")
        generated = time.perf_counter() - started
        flow_sha = digest(lines)
        del lines
        print(f"generated {args.commands:,} commands in {generated:.1f} s (sha256 {flow_sha[:16]}…)", flush=True)

        run_s, run = _run([*MARGINBOOK, "run", str(flow_path), "--log", str(log_dir), "--fsync", "never"])
        if run.returncode != 0:
            print(f"marginbook run failed ({run.returncode}):\n{run.stderr}", file=sys.stderr)
            return 1
        sizes = {p.name: p.stat().st_size for p in log_dir.iterdir() if p.is_file()}
        run_rate = args.commands / run_s
        print(f"marginbook run: {run_rate:,.0f} commands/s, {run_s:.1f} s ({run.stderr.strip()})", flush=True)

        audit_s, audit = _run(
            [*MARGINBOOK, "audit", str(log_dir), "--no-progress", "--chain-every", str(args.chain_every)]
        )
        match = re.search(r"replayed ([\d,]+) command\(s\)", audit.stdout)
        replayed = int(match.group(1).replace(",", "")) if match else 0
        rate = replayed / audit_s if audit_s else 0.0
        print(audit.stdout.rstrip())
        if audit.stderr.strip():
            print(audit.stderr.rstrip(), file=sys.stderr)
        print(
            f"marginbook audit: {replayed:,} commands in {audit_s:.1f} s wall = {rate:,.0f} commands/s "
            f"(exit {audit.returncode}; commands.log {sizes.get('commands.log', 0) / 1e6:.0f} MB, "
            f"events.log {sizes.get('events.log', 0) / 1e6:.0f} MB)"
        )
        figures = {
            "commands": args.commands,
            "seed": args.seed,
            "accounts": args.accounts,
            "flow_sha256": flow_sha,
            "run_seconds": round(run_s, 2),
            "audit_seconds": round(audit_s, 2),
            "audit_commands_per_second": round(rate),
            "audit_exit": audit.returncode,
            "log_bytes": sizes,
            "machine": f"{platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
            f"{platform.python_implementation()} {platform.python_version()}",
        }
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(figures, indent=2) + "\n")
        ok = audit.returncode == 0 and replayed == args.commands
        if not ok:
            print("the audit did not pass", file=sys.stderr)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
