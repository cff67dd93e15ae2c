"""``marginbook`` — the command line.

Commands: ``demo``, ``run FILE.jsonl [--json] [--log DIR]``, ``replay DIR``, ``recover DIR``, and
the services and audits registered from ``cli/services.py``, ``cli/project.py`` and
``cli/audit.py``. Errors go to stderr as one line naming the file, the record or line and what is
wrong — never a traceback — with the exit codes of :data:`EXIT_CODES` (``docs/audit.md``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from engine.core.context import InvariantBroken
from engine.io.atomic import DISK_FULL_ERRNOS, DiskFull
from engine.io.embedded import Divergence, EmbeddedEngine
from engine.io.filelog import FsyncPolicy, LogError
from engine.io.lock import LogLocked
from events.codec import BadCommand, decode_command_json, encode_json
from projections.risk_view import build_view

EXIT_OK: Final = 0
#: A problem was found (audit, replay, conservation) or input lines were refused (run, submit).
EXIT_FOUND: Final = 1
#: A usage error, or a file or log directory that cannot be used as it is (the message names the
#: repair when there is one).
EXIT_UNUSABLE: Final = 2
EXIT_HALTED: Final = 3
#: Another writer holds the log directory (Kafka: a newer instance fenced this one).
EXIT_LOCKED: Final = 4
EXIT_DISK_FULL: Final = 5
#: A bug: an error no file or input should cause.
EXIT_INTERNAL: Final = 70
EXIT_CODES: Final = {
    EXIT_OK: "success",
    EXIT_FOUND: "a problem was found, or input lines were refused",
    EXIT_UNUSABLE: "usage error, or a damaged, foreign or unknown file (the message names the repair)",
    EXIT_HALTED: "the engine halted on a broken invariant; nothing was committed for that command",
    EXIT_LOCKED: "another writer holds the log directory",
    EXIT_DISK_FULL: "disk full; what was written before is kept and the log recovers on the next open",
    EXIT_INTERNAL: "internal error (a bug)",
}


def _warn(message: str) -> None:
    print(f"marginbook: warning: {message}", file=sys.stderr)


def read_commands(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, stripped bytes)`` of every non-blank line of a JSONL file."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if stripped:
                yield number, stripped


def run_file(
    path: Path, log_dir: Path, snapshot_every: int, fsync: FsyncPolicy, wait_lock: float = 0.0
) -> tuple[EmbeddedEngine, int, int]:
    """Fold a command file on the embedded log; return ``(engine, applied now, refused lines)``.

    A line that cannot be decoded is reported on stderr (file:line: field: message) and not
    journaled; every other line is applied. When ``log_dir`` already holds a log (a run that was
    interrupted), the file's accepted lines must start with exactly the journaled commands:
    those are skipped and the run continues after them — every command is applied once.
    """
    applied = refused = 0
    engine = EmbeddedEngine(log_dir, snapshot_every=snapshot_every, fsync=fsync, warn=_warn, wait_lock=wait_lock)
    if engine.recovered:
        origin = f"snapshot {engine.recovered_from}" if engine.recovered_from else "the start"
        _warn(f"{log_dir}: re-derived {engine.recovered} outcome(s) missing from events.log (stepping from {origin})")
    journaled = engine.commands.read() if engine.commands.last_seq else iter(())
    try:
        for number, raw in read_commands(path):
            try:
                command = decode_command_json(raw)
            except BadCommand as bad:
                refused += 1
                print(f"{path}:{number}: {bad.field}: {bad.message}", file=sys.stderr)
                continue
            previous = next(journaled, None)
            if previous is not None:
                if previous[1] != raw:
                    raise ResumeMismatch(_resume_mismatch(path, number, log_dir, *previous))
                continue
            engine.submit(command, raw)
            applied += 1
        engine.flush()
    except BaseException:
        engine.close()
        raise
    if next(journaled, None) is not None:
        _warn(f"{log_dir} holds more commands than {path} provides")
    return engine, applied, refused


def _resume_mismatch(path: Path, number: int, log_dir: Path, seq: int, journaled: bytes) -> str:
    message = f"{path}:{number}: differs from command {seq} journaled in {log_dir}"
    try:
        decode_command_json(journaled)
    except BadCommand as bad:
        return (
            f"{message}, which is not a command ({bad}): {log_dir}/commands.log is damaged or foreign at seq {seq}; "
            f"repair: marginbook recover {log_dir} --cut-after {seq - 1} (drops seq {seq} and after; the run then "
            f"resubmits them from {path})"
        )
    return message


class ResumeMismatch(ValueError):
    """``run --log DIR`` on a directory journaled from a different input."""


def _cmd_run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"marginbook: {path}: no such file", file=sys.stderr)
        return EXIT_UNUSABLE
    with tempfile.TemporaryDirectory(prefix="marginbook-") as scratch:
        log_dir = Path(args.log) if args.log else Path(scratch)
        engine, applied, refused = run_file(
            path, log_dir, args.snapshot_every, FsyncPolicy[args.fsync.upper()], args.wait_lock
        )
        with engine:
            if args.json:
                sys.stdout.write(encode_json(build_view(engine.state)).decode() + "\n")
            print(
                f"marginbook: {applied} command(s) applied, {refused} refused, last seq {engine.state.last_seq}",
                file=sys.stderr,
            )
    return EXIT_FOUND if refused else EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    from cli.audit import first_problem_line, print_problem_list
    from engine.core import RULES_VERSION
    from replay.verify import replay_dir

    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"marginbook: {folder}: no such directory", file=sys.stderr)
        return EXIT_UNUSABLE
    report = replay_dir(folder, from_snapshot=args.from_snapshot, full_sweep=args.full_sweep)
    for seq, ok in report.snapshots_checked:
        print(f"snapshot {seq}: {'ok' if ok else 'DIGEST MISMATCH'}")
    first = first_problem_line(report.audit)
    if first is not None:
        print(first, file=sys.stderr)
    if report.mismatch is not None:
        m = report.mismatch
        print(f"DIVERGED at seq {m.seq}", file=sys.stderr)
        print(f"  command:  {m.command.decode(errors='replace')}", file=sys.stderr)
        print(f"  expected: {(m.expected or b'').decode(errors='replace')}", file=sys.stderr)
        print(f"  actual:   {m.actual.decode(errors='replace')}", file=sys.stderr)
    if report.missing_outcomes:
        print(f"{report.missing_outcomes} command(s) have no recorded outcome", file=sys.stderr)
    for note in report.audit.notes:
        if report.rules_version is not None and report.rules_version != RULES_VERSION and "rules version" in note:
            continue  # said below, as before
        print(f"note: {note}", file=sys.stderr)
    if report.rules_version is not None and report.rules_version != RULES_VERSION:
        print(
            f"note: the log was written under engine rules version {report.rules_version}, "
            f"this engine applies {RULES_VERSION}: a divergence may come from the rules, not tampering",
            file=sys.stderr,
        )
    if not report.ok:
        print_problem_list(report.audit, sys.stderr)
    print(f"replayed {report.commands} command(s) from seq {report.start_seq}: {report.matched} identical")
    print(f"digest sha256:{report.digest}")
    return EXIT_OK if report.ok else EXIT_FOUND


def _cmd_recover(args: argparse.Namespace) -> int:
    from engine.io.repair import recover

    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"marginbook: {folder}: no such directory", file=sys.stderr)
        return EXIT_UNUSABLE
    report = recover(
        folder,
        rewrite_meta=args.rewrite_meta,
        rebuild_events=args.rebuild_events,
        cut_after=args.cut_after,
        wait_lock=args.wait_lock,
        fsync=FsyncPolicy[args.fsync.upper()],
        warn=_warn,
    )
    for action in report.actions:
        print(f"marginbook: {action}")
    origin = f"snapshot {report.rederived_from}" if report.rederived_from else "the start"
    rederived = f"; {report.rederived} outcome(s) re-derived (from {origin})" if report.rederived else ""
    print(f"marginbook: {folder} recovered: last seq {report.last_seq}{rederived}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from cli.demo import run_demo

    code: int = run_demo(args.log)
    return code


def _wait_lock_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait-lock",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another writer of the log directory to finish (default: refuse at once)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marginbook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the built-in scenario on the embedded log")
    demo.add_argument("--log", help="keep the embedded log in this directory")
    demo.set_defaults(func=_cmd_demo)
    run = sub.add_parser("run", help="fold a JSONL command file on the embedded log")
    run.add_argument("file")
    run.add_argument("--json", action="store_true", help="print the final risk view on stdout")
    run.add_argument("--log", help="keep the embedded log (commands, events, snapshots) in DIR")
    run.add_argument("--snapshot-every", type=int, default=100_000, metavar="N")
    run.add_argument("--fsync", choices=["always", "batch", "never"], default="batch")
    _wait_lock_arg(run)
    run.set_defaults(func=_cmd_run)
    replay = sub.add_parser("replay", help="re-run a log directory and verify the recorded events")
    replay.add_argument("dir")
    replay.add_argument("--from-snapshot", type=int, metavar="SEQ", help="start from the snapshot at SEQ")
    replay.add_argument(
        "--full-sweep",
        action="store_true",
        help="replay with the slow reference engine: every exposed account evaluated after every command",
    )
    replay.set_defaults(func=_cmd_replay)
    recover = sub.add_parser(
        "recover", help="recover a log directory (as a writer does on open) and repair what a writer refuses to"
    )
    recover.add_argument("dir")
    recover.add_argument(
        "--rewrite-meta", action="store_true", help="write a new meta.json for an empty or garbage one"
    )
    recover.add_argument(
        "--rebuild-events",
        action="store_true",
        help="set events.log aside (events.log.bad) and re-derive every outcome from commands.log",
    )
    recover.add_argument(
        "--cut-after",
        type=int,
        metavar="SEQ",
        help="keep seqs 1..SEQ of both logs, set the rest aside (drops accepted commands: resubmit them)",
    )
    recover.add_argument("--fsync", choices=["always", "batch", "never"], default="batch")
    _wait_lock_arg(recover)
    recover.set_defaults(func=_cmd_recover)
    from cli import services

    services.register(sub)
    from cli import project as project_cli

    project_cli.register(sub)
    from cli import audit as audit_cli

    audit_cli.register(sub)
    return parser


def _where(err: BaseException) -> str:
    """``file:line`` of the innermost frame of ``err``'s traceback, for an internal error."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{os.path.relpath(frame.filename)}:{frame.lineno}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        assert isinstance(code, int)
    except LogLocked as err:
        print(f"marginbook: {err}", file=sys.stderr)
        return EXIT_LOCKED
    except DiskFull as err:
        print(
            f"marginbook: {err}; nothing written before it is lost: free some space and run again "
            f"(the log recovers on open)",
            file=sys.stderr,
        )
        return EXIT_DISK_FULL
    except InvariantBroken as err:
        print(f"marginbook: engine halted, outcome not committed: {err}", file=sys.stderr)
        return EXIT_HALTED
    except (LogError, Divergence, FileNotFoundError, ResumeMismatch) as err:
        print(f"marginbook: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    except OSError as err:
        name = f"{err.filename}: " if err.filename else ""
        reason = err.strerror or str(err)
        if err.errno in DISK_FULL_ERRNOS:
            print(f"marginbook: disk full: cannot write {name}{reason}", file=sys.stderr)
            return EXIT_DISK_FULL
        print(f"marginbook: {name}{reason}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        print("marginbook: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the last line of defence: a bug must not print a traceback at a user
        if os.environ.get("MARGINBOOK_DEBUG"):
            raise
        print(
            f"marginbook: internal error: {err!r} at {_where(err)} (a bug: please report it; "
            f"MARGINBOOK_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return code


if __name__ == "__main__":
    sys.exit(main())
