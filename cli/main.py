"""``marginbook`` — the command line.

Commands: ``demo``, ``run FILE.jsonl [--json] [--log DIR]``, ``replay DIR``. Errors go to stderr
with a non-zero exit code, naming the file, the line and the field.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from engine.core import RULES_VERSION
from engine.core.context import InvariantBroken
from engine.io.embedded import Divergence, EmbeddedEngine
from engine.io.filelog import FsyncPolicy, LogError
from events.codec import BadCommand, decode_command_json, encode_json
from projections.risk_view import build_view
from replay.verify import LogDamaged


def _warn(message: str) -> None:
    print(f"marginbook: warning: {message}", file=sys.stderr)


def read_commands(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, stripped bytes)`` of every non-blank line of a JSONL file."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if stripped:
                yield number, stripped


def run_file(path: Path, log_dir: Path, snapshot_every: int, fsync: FsyncPolicy) -> tuple[EmbeddedEngine, int, int]:
    """Fold a command file on the embedded log; return ``(engine, applied now, refused lines)``.

    A line that cannot be decoded is reported on stderr (file:line: field: message) and not
    journaled; every other line is applied. When ``log_dir`` already holds a log (a run that was
    interrupted), the file's accepted lines must start with exactly the journaled commands:
    those are skipped and the run continues after them — every command is applied once.
    """
    applied = refused = 0
    engine = EmbeddedEngine(log_dir, snapshot_every=snapshot_every, fsync=fsync, warn=_warn)
    if engine.recovered:
        _warn(f"{log_dir}: recovered {engine.recovered} outcome(s) missing after a crash")
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
                    raise ResumeMismatch(f"{path}:{number}: differs from command {previous[0]} journaled in {log_dir}")
                continue
            engine.submit(command, raw)
            applied += 1
    except BaseException:
        engine.close()
        raise
    engine.flush()
    if next(journaled, None) is not None:
        _warn(f"{log_dir} holds more commands than {path} provides")
    return engine, applied, refused


class ResumeMismatch(ValueError):
    """``run --log DIR`` on a directory journaled from a different input."""


def _cmd_run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"marginbook: {path}: no such file", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="marginbook-") as scratch:
        log_dir = Path(args.log) if args.log else Path(scratch)
        engine, applied, refused = run_file(path, log_dir, args.snapshot_every, FsyncPolicy[args.fsync.upper()])
        with engine:
            if args.json:
                sys.stdout.write(encode_json(build_view(engine.state)).decode() + "\n")
            print(
                f"marginbook: {applied} command(s) applied, {refused} refused, last seq {engine.state.last_seq}",
                file=sys.stderr,
            )
    return 1 if refused else 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from replay.verify import replay_dir

    report = replay_dir(args.dir, from_snapshot=args.from_snapshot, full_sweep=args.full_sweep)
    for seq, ok in report.snapshots_checked:
        print(f"snapshot {seq}: {'ok' if ok else 'DIGEST MISMATCH'}")
    if report.mismatch is not None:
        m = report.mismatch
        print(f"DIVERGED at seq {m.seq}", file=sys.stderr)
        print(f"  command:  {m.command.decode()}", file=sys.stderr)
        print(f"  expected: {(m.expected or b'').decode()}", file=sys.stderr)
        print(f"  actual:   {m.actual.decode()}", file=sys.stderr)
    if report.missing_outcomes:
        print(f"{report.missing_outcomes} command(s) have no recorded outcome", file=sys.stderr)
    if report.rules_version is not None and report.rules_version != RULES_VERSION:
        print(
            f"note: the log was written under engine rules version {report.rules_version}, "
            f"this engine applies {RULES_VERSION}: a divergence may come from the rules, not tampering",
            file=sys.stderr,
        )
    print(f"replayed {report.commands} command(s) from seq {report.start_seq}: {report.matched} identical")
    print(f"digest sha256:{report.digest}")
    return 0 if report.ok else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from cli.demo import run_demo

    code: int = run_demo(args.log)
    return code


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
    from cli import services

    services.register(sub)
    from cli import project as project_cli

    project_cli.register(sub)
    from cli import audit as audit_cli

    audit_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        assert isinstance(code, int)
    except (LogError, Divergence, FileNotFoundError, ResumeMismatch, LogDamaged) as err:
        print(f"marginbook: {err}", file=sys.stderr)
        return 2
    except InvariantBroken as err:
        print(f"marginbook: engine halted, outcome not committed: {err}", file=sys.stderr)
        return 3
    return code


if __name__ == "__main__":
    sys.exit(main())
