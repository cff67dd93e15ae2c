"""Audit commands: ``audit``, ``statement``, ``conservation``, ``export``.

* ``marginbook audit DIR`` — replay a log directory through the engine and check every recorded
  outcome; ``--kafka`` audits a topic range instead. Exit 0 when everything matches, 1 naming the
  first problem (divergence, damage, gap…), 2 on a usage error. ``--chain-every N`` prints
  ``seq <n> chain <hex>`` lines (``replay.chain``).
* ``marginbook statement DIR --acct A`` — the account's balance, debt, interest and position
  changes as CSV or JSON.
* ``marginbook conservation DIR`` — per currency, deposits − withdrawals against what the
  accounts and the pools hold; exit 1 if a currency is not conserved.
* ``marginbook export --out DIR`` — copy a Kafka topic range into a file log directory.

Long replays show a progress bar on stderr (rate, time remaining) when stderr is a terminal,
unless ``--no-progress``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from replay.audit import AuditReport
from replay.chain import chain_line
from replay.directory import audit_dir
from replay.journal import IncompleteLog

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

#: Problems listed in full by ``audit`` (all are counted).
SHOWN_PROBLEMS = 50


def _err(message: str) -> None:
    print(f"marginbook: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------- progress


class _Bar:
    """A rich progress bar on stderr (rate, time remaining): ``total(start, end)`` once known,
    then ``update(position)``; a no-op when disabled."""

    def __init__(self, label: str, unit: str, enabled: bool) -> None:
        self.label = label
        self.unit = unit
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._start = 0

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                Task,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.text import Text

            unit = self.unit

            class Rate(ProgressColumn):
                def render(self, task: Task) -> Text:
                    speed = task.finished_speed or task.speed
                    return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")

            self._progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                Rate(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                refresh_per_second=4,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None)
        return self

    def total(self, start: int, end: int) -> None:
        """Positions run from ``start`` to ``end`` (seqs or offsets)."""
        self._start = start
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=max(0, end - start), completed=0)

    def update(self, position: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=max(0, position - self._start))

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


# --------------------------------------------------------------------------------- audit


def _clip(data: bytes, limit: int = 2_000) -> str:
    """An outcome for the terminal: long ones are cut (the differing event is shown in full)."""
    text = data.decode(errors="replace")
    return text if len(text) <= limit else f"{text[:limit]}… ({len(data):,} bytes in all)"


def _print_report(report: AuditReport, chain_every: int, out: TextIO, err: TextIO) -> int:
    span = f"seq {report.start_seq}..{report.last_seq}" if report.last_seq else "nothing"
    print(
        f"audit of {report.source}: replayed {report.commands:,} command(s), {span}: {report.matched:,} identical",
        file=out,
    )
    for note in report.notes:
        print(f"note: {note}", file=out)
    if report.snapshots_checked:
        shown = ", ".join(f"{seq} {'ok' if ok else 'MISMATCH'}" for seq, ok in report.snapshots_checked)
        print(f"snapshots: {shown}", file=out)
    print(f"digest sha256:{report.digest}", file=out)
    if report.chain_hex and report.chain_seq and not (chain_every and report.chain_seq % chain_every == 0):
        print(chain_line(report.chain_seq, bytes.fromhex(report.chain_hex)), file=out)
    if report.chain_note:
        print(f"chain: {report.chain_note}", file=out)
    if report.ok:
        print("OK: every recorded outcome is reproduced exactly", file=out)
        return 0
    first = first_problem_line(report)
    if first is not None:
        print(first, file=err)
    d = report.first_divergence
    if d is not None:
        print(
            f"FIRST DIVERGENCE at seq {d.seq} (command at {d.command_where}; recorded at {d.expected_where})", file=err
        )
        print(f"  command:  {d.command.decode(errors='replace')}", file=err)
        diff = d.diff
        if diff.index is not None:
            counts = f"recorded {diff.expected_count} event(s), replay {diff.actual_count}"
            print(f"  first differing event: events[{diff.index}] ({counts})", file=err)
            print(f"    expected: {diff.expected_event or '(none)'}", file=err)
            print(f"    actual:   {diff.actual_event or '(none)'}", file=err)
        for line in diff.fields:
            print(f"    {line}", file=err)
        if diff.note:
            print(f"    {diff.note}", file=err)
        print(f"  expected outcome: {_clip(d.expected)}", file=err)
        print(f"  actual outcome:   {_clip(d.actual)}", file=err)
    print_problem_list(report, err)
    print(
        f"FAILED: {report.divergences:,} divergence(s), {report.problem_count:,} problem(s), "
        f"{len(report.scan_errors):,} integrity error(s)",
        file=out,
    )
    return 1


def first_problem_line(report: AuditReport) -> str | None:
    """The ``FIRST PROBLEM …`` line of a failed audit (``replay`` prints the same one)."""
    first = report.first_problem
    if first is not None:
        return f"FIRST PROBLEM at seq {first.seq}: {first.message}"
    if report.scan_errors:
        return f"FIRST PROBLEM: {report.scan_errors[0]}"
    if report.stopped:
        return f"FIRST PROBLEM: {report.stopped}"
    return None


def print_problem_list(report: AuditReport, err: TextIO) -> None:
    """Why the replay stopped, every problem (the first :data:`SHOWN_PROBLEMS`), the integrity errors."""
    if report.stopped:
        print(f"STOPPED: {report.stopped}", file=err)
    if report.problem_count:
        print(f"problems ({report.problem_count:,}):", file=err)
        for problem in sorted(report.problems, key=lambda p: (p.seq == 0, p.seq))[:SHOWN_PROBLEMS]:
            print(f"  seq {problem.seq} [{problem.kind}] {problem.message}", file=err)
        if report.problem_count > SHOWN_PROBLEMS:
            print(f"  … and {report.problem_count - SHOWN_PROBLEMS:,} more", file=err)
    if report.scan_errors:
        print("log integrity (engine.io.filelog.scan):", file=err)
        for line in report.scan_errors[:SHOWN_PROBLEMS]:
            print(f"  {line}", file=err)


def _on_chain(out: TextIO) -> Callable[[int, bytes], None]:
    def emit(seq: int, digest: bytes) -> None:
        print(chain_line(seq, digest), file=out, flush=True)

    return emit


def _bootstrap(args: argparse.Namespace) -> str | None:
    value = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP")
    if not value:
        _err("no Kafka broker: pass --bootstrap or set KAFKA_BOOTSTRAP")
        return None
    return str(value)


def cmd_audit(args: argparse.Namespace) -> int:
    if args.chain_every < 0:
        _err("--chain-every must be >= 0")
        return 2
    every = args.chain_every
    on_chain = _on_chain(sys.stdout) if every else None
    if args.kafka:
        if args.dir is not None or args.from_snapshot is not None:
            _err("--kafka audits a topic range: give no DIR and no --from-snapshot (use --from-offset)")
            return 2
        bootstrap = _bootstrap(args)
        if bootstrap is None:
            return 2
        from aiokafka.errors import KafkaError

        from replay.kafka_source import KafkaSourceError, audit_kafka, topics_for

        try:
            with _Bar("audit (offsets)", "cmd", _progress_enabled(args)) as bar:
                report = asyncio.run(
                    audit_kafka(
                        bootstrap,
                        topics_for(args.topic_prefix),
                        args.shard,
                        args.from_offset,
                        args.to_offset,
                        every,
                        on_chain,
                        bar.update,
                        bar.total,
                    )
                )
        except (KafkaSourceError, KafkaError, TimeoutError) as err:
            _err(f"cannot read the topics: {err}")
            return 2
        return _print_report(report, every, sys.stdout, sys.stderr)
    if args.dir is None:
        _err("audit: give a log DIR, or --kafka with a topic range")
        return 2
    if args.from_offset or args.to_offset is not None:
        _err("--from-offset/--to-offset are for --kafka audits")
        return 2
    folder = Path(args.dir)
    if not folder.is_dir():
        _err(f"{folder}: no such directory")
        return 2
    with _Bar("audit", "cmd", _progress_enabled(args)) as bar:
        report = audit_dir(folder, args.from_snapshot, every, on_chain, bar.update, lambda s, e: bar.total(s - 1, e))
    return _print_report(report, every, sys.stdout, sys.stderr)


# --------------------------------------------------------------------------------- statement


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if path is None or path == "-":
        yield sys.stdout
        return
    with open(path, "w", newline="") as handle:
        yield handle


def cmd_statement(args: argparse.Namespace) -> int:
    from replay.statements import build_statements, statement_rows, write_csv, write_json

    folder = Path(args.dir)
    if not folder.is_dir():
        _err(f"{folder}: no such directory")
        return 2
    accounts = list(dict.fromkeys(args.acct))
    warnings: list[str] = []
    try:
        rows = statement_rows(folder, accounts, args.from_snapshot, warnings.append)
        with _output(args.out) as out:
            if args.format == "csv":
                count = write_csv(rows, out)
            else:
                statements = build_statements(rows, accounts)
                write_json(statements, out, str(folder))
                count = sum(len(s.entries) for s in statements)
    except IncompleteLog as err:
        _err(str(err))
        return 1
    if count == 0:
        warnings.append(f"no entries for {', '.join(accounts)}: no event names such an account")
    for warning in warnings:
        _err(f"warning: {warning}")
    where = f" to {args.out}" if args.out and args.out != "-" else ""
    print(f"marginbook: {count:,} statement row(s) for {', '.join(accounts)}{where}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------- conservation


def cmd_conservation(args: argparse.Namespace) -> int:
    from replay.conservation import conservation
    from replay.statements import fmt

    folder = Path(args.dir)
    if not folder.is_dir():
        _err(f"{folder}: no such directory")
        return 2
    warnings: list[str] = []
    try:
        with _Bar("conservation", "seq", _progress_enabled(args)) as bar:
            if bar.enabled and (folder / "events.log").exists():
                from engine.io.filelog import scan

                bar.total(0, scan(folder / "events.log").last_seq)
            report = conservation(folder, args.from_snapshot, args.full_every, warnings.append, bar.update)
    except IncompleteLog as err:
        _err(str(err))
        return 1
    for warning in warnings:
        _err(f"warning: {warning}")
    if args.json:
        import msgspec

        doc = {
            "source": report.source,
            "start_seq": report.start_seq,
            "last_seq": report.last_seq,
            "ok": report.ok,
            "currencies": {
                ccy: {
                    "opening": fmt(line.opening),
                    "deposits": fmt(line.deposits),
                    "withdrawals": fmt(line.withdrawals),
                    "net_flows": fmt(line.net_flows),
                    "cash": fmt(line.cash),
                    "liab": fmt(line.liab),
                    "interest": fmt(line.interest),
                    "net_balances": fmt(line.net_balances),
                    "fees": fmt(line.fees),
                    "insurance": fmt(line.insurance),
                    "interest_income": fmt(line.interest_income),
                    "written_off": fmt(line.written_off),
                    "clearing": fmt(line.clearing),
                    "held": fmt(line.held),
                    "difference": fmt(line.difference),
                    "first_seq": line.first_seq,
                }
                for ccy, line in sorted(report.lines.items())
            },
            "recount_errors": [message for _, message in report.recount_errors],
        }
        print(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode())
    else:
        from rich.console import Console
        from rich.table import Table

        title = f"conservation of {report.source}, seq {report.start_seq}..{report.last_seq}"
        table = Table(
            title=title,
            caption="net balances = Σ accounts (cash and positions − liab − interest); difference = net balances"
            " + fees + insurance + interest income + clearing − written off − (deposits − withdrawals)",
        )
        columns = ["ccy", "deposits", "withdrawals", "net balances", "fees", "insurance", "interest income"]
        columns += ["clearing", "written off"]
        columns += ["difference", "first at seq"]
        opening = any(line.opening for line in report.lines.values())
        if opening:
            columns.insert(1, "opening")
        for name in columns:
            table.add_column(name, justify="left" if name == "ccy" else "right")
        for ccy, line in sorted(report.lines.items()):
            cells = [
                ccy,
                fmt(line.deposits),
                fmt(line.withdrawals),
                fmt(line.net_balances),
                fmt(line.fees),
                fmt(line.insurance),
                fmt(line.interest_income),
                fmt(line.clearing),
                fmt(line.written_off),
                fmt(line.difference),
                "" if line.first_seq is None else str(line.first_seq),
            ]
            if opening:
                cells.insert(1, fmt(line.opening))
            table.add_row(*cells)
        Console(width=max(150, Console().width)).print(table)
    failed = [line for line in report.lines.values() if line.first_seq is not None or line.difference != 0]
    for line in failed:
        _err(
            f"{line.ccy} is not conserved: difference {fmt(line.first_difference)} first appears at seq "
            f"{line.first_seq}; {fmt(line.difference)} at seq {report.last_seq}"
        )
    for _, message in report.recount_errors:
        _err(message)
    if report.ok:
        if not args.json:
            print(f"OK: every currency is conserved at every seq {report.start_seq}..{report.last_seq}")
        return 0
    return 1


# --------------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from replay.export import export_kafka
    from replay.kafka_source import KafkaSourceError, topics_for

    bootstrap = _bootstrap(args)
    if bootstrap is None:
        return 2
    try:
        with _Bar("export (offsets)", "cmd", _progress_enabled(args)) as bar:
            report = asyncio.run(
                export_kafka(
                    bootstrap,
                    topics_for(args.topic_prefix),
                    args.out,
                    args.shard,
                    args.from_offset,
                    args.to_offset,
                    bar.update,
                    bar.total,
                )
            )
    except FileExistsError as err:
        _err(str(err))
        return 2
    except (KafkaSourceError, KafkaError, TimeoutError) as err:
        _err(f"cannot read the topics: {err}")
        return 2
    span = f"seqs {report.first_seq}..{report.last_seq}" if report.first_seq else "no seq"
    print(
        f"exported offsets {report.start_offset}..{report.end_offset} of {args.topic_prefix}.commands[{args.shard}] "
        f"to {report.out}: {report.commands:,} command(s), {report.outcomes:,} outcome(s), {span}"
    )
    if report.snapshot_seq:
        origin = (
            f"the Kafka snapshot at seq {report.kafka_snapshot_seq} and the commands after it"
            if report.kafka_snapshot_seq
            else "all the commands before it"
        )
        print(f"snapshot at seq {report.snapshot_seq} (the state before the range, from {origin})")
    if report.dead_letters:
        print(f"{len(report.dead_letters)} undecodable command(s) skipped (dead-lettered, no seq)")
    if report.pending:
        print(f"{report.pending} command(s) at the end have no committed outcome yet: not exported")
    for problem in report.problems[:SHOWN_PROBLEMS]:
        _err(problem)
    return 0 if report.ok else 1


# --------------------------------------------------------------------------------- parser


def _kafka_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP)")
    parser.add_argument("--topic-prefix", default="marginbook", help="prefix of every topic name")
    parser.add_argument("--shard", type=int, default=0, help="partition (engine shard) to read")
    parser.add_argument("--from-offset", type=int, default=0, metavar="X", help="first commands-topic offset")
    parser.add_argument(
        "--to-offset", type=int, default=None, metavar="Y", help="end of the range, exclusive (default: the end)"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="replay a log (or a Kafka topic range) and check every recorded event")
    audit.add_argument("dir", nargs="?", help="log directory (commands.log, events.log, snapshots/)")
    audit.add_argument("--kafka", action="store_true", help="audit a Kafka topic range instead of a directory")
    _kafka_args(audit)
    audit.add_argument("--from-snapshot", type=int, metavar="SEQ", help="start from the snapshot at SEQ")
    audit.add_argument("--chain-every", type=int, default=0, metavar="N", help="print the digest chain every N seqs")
    audit.add_argument("--no-progress", action="store_true", help="no progress bar")
    audit.set_defaults(func=cmd_audit)

    statement = sub.add_parser("statement", help="an account's balance, debt, interest and position changes")
    statement.add_argument("dir")
    statement.add_argument("--acct", action="append", required=True, help="account (repeatable)")
    statement.add_argument("--format", choices=["csv", "json"], default="csv")
    statement.add_argument("--out", help="write to FILE instead of stdout")
    statement.add_argument("--from-snapshot", type=int, metavar="SEQ", help="start from the snapshot at SEQ")
    statement.set_defaults(func=cmd_statement)

    conservation = sub.add_parser("conservation", help="check per currency that funds are conserved at every seq")
    conservation.add_argument("dir")
    conservation.add_argument("--from-snapshot", type=int, metavar="SEQ", help="start from the snapshot at SEQ")
    conservation.add_argument("--json", action="store_true", help="print the report as JSON")
    conservation.add_argument(
        "--full-every", type=int, default=100_000, metavar="N", help="recount all balances every N seqs"
    )
    conservation.add_argument("--no-progress", action="store_true", help="no progress bar")
    conservation.set_defaults(func=cmd_conservation)

    export = sub.add_parser("export", help="copy a Kafka topic range into a file log directory")
    _kafka_args(export)
    export.add_argument("--out", required=True, help="new log directory to write")
    export.add_argument("--no-progress", action="store_true", help="no progress bar")
    export.set_defaults(func=cmd_export)
