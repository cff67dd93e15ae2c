"""Coverage-guided fuzzing of decode + step with atheris (libFuzzer); docs/fuzzing.md.

Targets (``tests/fuzz/targets.py``): ``decode`` — raw bytes through the command codec, then the
engine; ``engine`` — a grammar-built command log (``tests/fuzz/grammar.py``) stepped twice and
once restored from a mid-way snapshot, byte-identical journals and digests required, money
conserved (the audit's own checker).

Commands::

    fuzz_engine.py fuzz [--target decode|engine|all] [--seconds S | --runs N] [--keep-going]
                        [--seed N] [--workdir .fuzz] [--no-coverage] [-- LIBFUZZER_ARGS...]
    fuzz_engine.py replay FILE...          # re-run saved inputs (crash files): exit 1 on a finding
    fuzz_engine.py show FILE               # the JSONL log an engine input steps (for marginbook run)
    fuzz_engine.py coverage --target T DIR...   # coverage.py line coverage of engine/core and events
    fuzz_engine.py digests DIR...          # journal and state digest per engine input
    fuzz_engine.py seeds --target T DIR    # write the seed corpus

``fuzz`` runs one instrumented libFuzzer process per target (``--runs`` executions or
``--seconds`` of fuzzing each; default 60 s), with the persistent corpus ``WORKDIR/T/corpus``
and fresh seeds (every golden scenario and a piece of ``bench/flow.py``'s flow), then reports
executions, libFuzzer's ``cov``/``ft`` figures, the findings with a one-line reproduction each,
and the line coverage of ``engine/core`` and ``events`` reached by the corpus. A finding is an
input file ``WORKDIR/T/findings/T-…``; the exit code is 1 when there is one. ``--keep-going``
saves every distinct finding and fuzzes on (long runs); without it the run stops at the first.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _path in (ROOT / "bench", ROOT, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

TARGET_NAMES = ("decode", "engine")
#: Longest input libFuzzer builds, per target (the engine's seeds carry a 33 KB flow).
MAX_LEN = {"decode": 8192, "engine": 40_000}
#: Seconds one input may take before libFuzzer reports a timeout (an endless step).
TIMEOUT_S = 60
#: The instrumented packages (the fuzz modules' own branches guide the grammar too).
INSTRUMENTED = ("events", "engine", "replay", "grammar", "targets")


def _targets() -> dict[str, Callable[[bytes], None]]:
    from targets import TARGETS

    return TARGETS


def target_of(path: Path, default: str | None = None) -> str:
    """The target a saved input belongs to: named by its folder or its name's prefix."""
    for name in TARGET_NAMES:
        if path.parent.name == name or path.name.startswith(name + "-"):
            return name
    if default is None:
        raise SystemExit(f"{path}: cannot tell the target (decode or engine): pass --target")
    return default


def reproduce_command(path: Path) -> str:
    try:
        shown = path.resolve().relative_to(Path.cwd())
    except ValueError:
        shown = path.resolve()
    return f"{sys.executable} {Path(__file__).resolve().relative_to(ROOT)} replay {shown}"


# --- seeds ------------------------------------------------------------------------------------------


def seed_inputs(target: str) -> dict[str, bytes]:
    """The seed corpus of ``target``: every golden scenario (whole; for ``decode`` also each of
    its lines and their msgpack encodings), the first commands of ``bench/flow.py``'s full-model
    flow and, for ``engine``, grammar-only inputs (a listing prelude and random draws)."""
    import flow

    from events.codec import decode_command_json, encode_command_msgpack

    seeds: dict[str, bytes] = {}
    goldens = sorted((ROOT / "tests" / "golden").glob("*.commands.jsonl"))
    rng = random.Random(0)
    tails = [bytes(rng.randrange(256) for _ in range(n)) for n in (0, 300, 1200)]
    flow_lines, _ = flow.generate(200, seed=1, accounts=3, model="full")
    if target == "decode":
        for path in goldens:
            text = path.read_bytes()
            seeds[path.stem] = text
            for n, raw in enumerate(text.splitlines()):
                seeds[f"{path.stem}.{n}"] = raw
                seeds[f"{path.stem}.{n}.msgpack"] = encode_command_msgpack(decode_command_json(raw))
        seeds["flow"] = b"\n".join(flow_lines[:40])
        return seeds
    for path in goldens:
        for n, tail in enumerate(tails):
            seeds[f"{path.stem}.{n}"] = path.read_bytes() + b"\0" + tail
    seeds["flow"] = b"\n".join(flow_lines) + b"\0" + tails[2]
    for n in range(12):
        seeds[f"grammar.{n}"] = b"\0" + bytes(rng.randrange(256) for _ in range(rng.choice((400, 1200, 3000))))
    seeds["grammar.prelude"] = b"\0" + bytes(64)  # every listing field at its default
    return seeds


def write_dictionary(path: Path) -> Path:
    """libFuzzer dictionary for ``decode``: the wire tags, field names and enum values of every
    command, as JSON tokens (mutations splice them into the seeds)."""
    import msgspec

    from events.commands import COMMAND_TYPES, Tier

    tokens: set[str] = {'"type":', '"id":', '"ts":', "null", "true", "false", '"0"', '"-1"', '"1e5"'}
    for field in msgspec.structs.fields(Tier):
        tokens.add(f'"{field.encode_name}":')
    for struct in COMMAND_TYPES:
        tokens.add(f'"{struct.__struct_config__.tag}"')
        for field in msgspec.structs.fields(struct):
            tokens.add(f'"{field.encode_name}":')
    tokens.update(f'"{v}"' for v in ("buy", "sell", "limit", "market", "post_only", "ioc", "fok", "cash", "cross"))
    tokens.update(f'"{v}"' for v in ("isolated", "net", "long", "short", "SPOT", "SWAP", "add", "reduce"))
    lines = ['"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in sorted(tokens)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_seeds(target: str, folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    seeds = seed_inputs(target)
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    return len(seeds)


# --- the instrumented libFuzzer process -------------------------------------------------------------


def _signature(err: BaseException) -> str:
    """What makes two findings the same: the exception type and the innermost project frame (for
    a failed check, its message with the numbers taken out)."""
    from targets import Finding

    if isinstance(err, Finding):
        return "Finding: " + re.sub(r"\d+", "N", str(err).splitlines()[0])[:120]
    frames = [f for f in traceback.extract_tb(err.__traceback__) if str(ROOT) in f.filename]
    where = f"{Path(frames[-1].filename).relative_to(ROOT)}:{frames[-1].lineno}" if frames else "?"
    return f"{type(err).__name__} at {where}"


def libfuzzer_main(target: str, keep_going: bool, findings: Path, argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        targets = _targets()
    run_one = targets[target]
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        if not keep_going:
            run_one(data)
            return
        try:
            run_one(data)
        except Exception as err:  # every exception is a finding: keep one input per kind
            signature = _signature(err)
            if signature in seen:
                return
            seen.add(signature)
            name = f"{target}-finding-{hashlib.sha1(signature.encode()).hexdigest()[:10]}"
            path = findings / name
            path.write_bytes(data)
            text = "".join(traceback.format_exception(err))
            path.with_suffix(".txt").write_text(f"{signature}\nreproduce: {reproduce_command(path)}\n\n{text}")
            print(f"\n=== finding: {signature}\n=== saved {path}\n", file=sys.stderr, flush=True)

    atheris.Setup([sys.argv[0], *argv], one_input)
    atheris.Fuzz()


# --- the front end ----------------------------------------------------------------------------------

_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")


def fuzz(args: argparse.Namespace) -> int:
    names = TARGET_NAMES if args.target == "all" else (args.target,)
    found_any = False
    for target in names:
        work = Path(args.workdir) / target
        corpus, seeds, findings = work / "corpus", work / "seeds", work / "findings"
        for folder in (corpus, findings):
            folder.mkdir(parents=True, exist_ok=True)
        n_seeds = write_seeds(target, seeds)
        budget = [f"-runs={args.runs}"] if args.runs is not None else [f"-max_total_time={args.seconds}"]
        extra = [f"-dict={write_dictionary(work / 'tokens.dict')}"] if target == "decode" else []
        child = [
            sys.executable,
            str(Path(__file__).resolve()),
            "libfuzzer",
            "--target",
            target,
            "--findings",
            str(findings),
            *(["--keep-going"] if args.keep_going else []),
            "--",
            *budget,
            f"-seed={args.seed}",
            f"-max_len={MAX_LEN[target]}",
            f"-timeout={TIMEOUT_S}",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
            f"-artifact_prefix={findings}/{target}-",
            *extra,
            *args.libfuzzer,
            str(corpus),
            str(seeds),
        ]
        since = time.time()  # a finding written (or rewritten) from now on is this run's
        print(f"== fuzz {target}: {n_seeds} seeds, corpus {corpus}, {' '.join(budget)}", flush=True)
        started = time.monotonic()
        status, stats, rc = _run_libfuzzer(child, work / "libfuzzer.log", args.verbose)
        elapsed = time.monotonic() - started
        new = sorted(p for p in findings.iterdir() if p.suffix != ".txt" and p.stat().st_mtime >= since - 1)
        execs = int(stats.get("number_of_executed_units", status.get("execs", 0)))
        print(
            f"   executions {execs} in {elapsed:.0f} s ({execs / max(elapsed, 1e-9):.0f}/s); "
            f"libFuzzer cov {status.get('cov', '?')} ft {status.get('ft', '?')}; "
            f"corpus {status.get('corp', '?')} inputs ({status.get('size', '?')}); "
            f"new units {stats.get('new_units_added', '?')}; log {work / 'libfuzzer.log'}"
        )
        if rc != 0 and not new:
            print(f"   libFuzzer exited with code {rc} without a finding file: see the log")
            found_any = True
        for path in new:
            found_any = True
            print(f"   FINDING {path}\n     reproduce: {reproduce_command(path)}")
        if not new and rc == 0:
            print("   findings: none")
        if not args.no_coverage:
            coverage_report([corpus, seeds], target, prefix="   ")
    return 1 if found_any else 0


def _run_libfuzzer(command: list[str], log: Path, verbose: bool) -> tuple[dict[str, int | str], dict[str, int], int]:
    status: dict[str, int | str] = {}
    stats: dict[str, int] = {}
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc.stdout is not None
        last_shown = time.monotonic()
        for text in proc.stdout:
            out.write(text)
            if match := _STATUS.match(text):
                status = {
                    "execs": int(match[1]),
                    "cov": int(match[2]),
                    "ft": int(match[3]),
                    "corp": int(match[4]),
                    "size": match[5],
                }
                if verbose or time.monotonic() - last_shown > 60:
                    print("   " + text.rstrip(), flush=True)
                    last_shown = time.monotonic()
            elif match := _STAT.match(text):
                stats[match[1]] = int(match[2])
            elif "=== finding" in text or "Uncaught Python exception" in text or verbose:
                print("   " + text.rstrip(), flush=True)
        rc = proc.wait()
    return status, stats, rc


def _inputs(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix not in (".txt", ".md")))
        elif path.exists():
            files.append(path)
    return files


def replay(paths: list[Path], target: str | None) -> int:
    """Run each saved input through its target, uninstrumented; report each finding."""
    targets = _targets()
    failed = 0
    files = _inputs(paths)
    for path in files:
        name = target or target_of(path)
        try:
            targets[name](path.read_bytes())
        except Exception:
            failed += 1
            print(f"FINDING {path} ({name}):\n{traceback.format_exc()}")
        else:
            print(f"ok {path} ({name})")
    print(f"{len(files)} inputs, {failed} findings")
    return 1 if failed else 0


def coverage_report(paths: list[Path], target: str, prefix: str = "") -> None:
    """Line coverage of ``engine/core`` and ``events`` by ``target`` over the inputs in
    ``paths``, measured by coverage.py in a fresh process (no instrumentation in the way)."""
    command = [sys.executable, str(Path(__file__).resolve()), "coverage", "--target", target, *map(str, paths)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    for text in (result.stdout + result.stderr).splitlines():
        print(prefix + text)


def measure_coverage(paths: list[Path], target: str, per_file: bool) -> int:
    import coverage

    data_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"marginbook-fuzz-{os.getpid()}.coverage"
    cov = coverage.Coverage(data_file=str(data_file), source=[str(ROOT / "engine" / "core"), str(ROOT / "events")])
    cov.start()
    run_one = _targets()[target]
    files = _inputs(paths)
    failed = 0
    for path in files:
        try:
            run_one(path.read_bytes())
        except Exception:
            failed += 1
    cov.stop()
    totals: dict[str, list[int]] = {"engine/core": [0, 0], "events": [0, 0]}
    rows = []
    for measured in sorted(cov.get_data().measured_files()):
        _, statements, _, missing, _ = cov.analysis2(measured)
        rel = Path(measured).relative_to(ROOT).as_posix()
        package = "events" if rel.startswith("events/") else "engine/core"
        totals[package][0] += len(statements) - len(missing)
        totals[package][1] += len(statements)
        rows.append((rel, len(statements) - len(missing), len(statements)))
    data_file.unlink(missing_ok=True)
    print(f"line coverage ({target}, {len(files)} inputs, {failed} with findings):")
    for package, (hit, total) in totals.items():
        print(f"  {package}: {hit} of {total} lines ({100 * hit / max(total, 1):.1f} %)")
    if per_file:
        for rel, hit, total in rows:
            print(f"    {rel}: {hit}/{total} ({100 * hit / max(total, 1):.0f} %)")
    return 0


def digests(paths: list[Path]) -> int:
    """One line per engine input: its name, the journal's SHA-256 and the final state digest."""
    from targets import engine_commands

    from engine.core import snapshot
    from engine.core.step import Engine
    from events.codec import encode_outcome_json

    for path in _inputs(paths):
        commands, _ = engine_commands(path.read_bytes())
        engine = Engine()
        journal = hashlib.sha256()
        try:
            for command in commands:
                journal.update(encode_outcome_json(engine.step(command)) + b"\n")
        except Exception as err:  # a finding: the digests so far, and where it stopped
            print(path.name, journal.hexdigest(), f"stopped at seq {engine.state.last_seq + 1}: {type(err).__name__}")
            continue
        print(path.name, journal.hexdigest(), snapshot.digest(engine.state))
    return 0


def show(path: Path) -> int:
    """Print the JSON lines an engine input steps (``marginbook run`` folds them)."""
    from targets import engine_commands

    from events.codec import encode_command_json

    commands, cut = engine_commands(path.read_bytes())
    for command in commands:
        sys.stdout.buffer.write(encode_command_json(command) + b"\n")
    print(f"# {len(commands)} commands; snapshot cut after seq {cut}", file=sys.stderr)
    return 0


def _failure(run_one: Callable[[bytes], None], data: bytes) -> str | None:
    try:
        run_one(data)
    except Exception as err:
        return _signature(err)
    return None


def minimize(path: Path, out: Path | None) -> int:
    """Shrink an engine finding to the fewest JSON lines that still fail the same way, as an
    engine input ``LINES \\0 C``: the lines are stepped as they are (the one grammar byte ``C``
    is the original's snapshot cut, as a share of the log); print the lines."""
    from grammar import split_input
    from targets import engine_commands, engine_target

    from events.codec import encode_command_json

    data = path.read_bytes()
    commands, _ = engine_commands(data)
    lines = [encode_command_json(c) for c in commands]
    rest = split_input(data)[1]
    cut = rest[-1:] or b"\0"  # the byte FuzzedDataProvider reads first (from the end)

    def as_input(kept: list[bytes]) -> bytes:
        return b"\n".join(kept) + b"\0" + cut

    wanted = _failure(engine_target, as_input(lines))
    if wanted is None:
        print(f"{path}: its {len(lines)} lines stepped as they are do not fail (the cut matters?)")
        return 1
    chunk = max(len(lines) // 2, 1)
    while True:
        at = 0
        while at < len(lines):
            trial = lines[:at] + lines[at + chunk :]
            if trial and _failure(engine_target, as_input(trial)) == wanted:
                lines = trial
            else:
                at += chunk
        if chunk == 1:
            break
        chunk = max(chunk // 2, 1)
    target = out or path.with_name(path.name + ".min")
    target.write_bytes(as_input(lines))
    sys.stdout.buffer.write(b"\n".join(lines) + b"\n")
    print(f"# {len(lines)} lines fail with {wanted}; written to {target}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, passthrough = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("fuzz", help="fuzz the targets and report executions, coverage and findings")
    run.add_argument("--target", choices=(*TARGET_NAMES, "all"), default="all")
    budget = run.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=int, default=60, help="fuzzing time per target (default 60)")
    budget.add_argument("--runs", type=int, help="executions per target instead of a time budget")
    run.add_argument("--seed", type=int, default=0, help="libFuzzer's random seed (0: a fresh one)")
    run.add_argument("--keep-going", action="store_true", help="save every distinct finding and go on")
    run.add_argument("--workdir", default=str(ROOT / ".fuzz"), help="corpus and findings (default .fuzz)")
    run.add_argument("--no-coverage", action="store_true", help="skip the coverage.py report")
    run.add_argument("--verbose", action="store_true", help="show every libFuzzer line")
    inner = sub.add_parser("libfuzzer", help="(internal) the instrumented libFuzzer process")
    inner.add_argument("--target", choices=TARGET_NAMES, required=True)
    inner.add_argument("--findings", type=Path, required=True)
    inner.add_argument("--keep-going", action="store_true")
    rep = sub.add_parser("replay", help="re-run saved inputs; exit 1 on a finding")
    rep.add_argument("--target", choices=TARGET_NAMES)
    rep.add_argument("paths", nargs="+", type=Path)
    sh = sub.add_parser("show", help="print the JSONL log an engine input steps")
    sh.add_argument("path", type=Path)
    cov = sub.add_parser("coverage", help="line coverage of engine/core and events over inputs")
    cov.add_argument("--target", choices=TARGET_NAMES, required=True)
    cov.add_argument("--per-file", action="store_true")
    cov.add_argument("paths", nargs="+", type=Path)
    mini = sub.add_parser("minimize", help="shrink an engine finding to the fewest JSON lines")
    mini.add_argument("path", type=Path)
    mini.add_argument("-o", "--out", type=Path)
    dig = sub.add_parser("digests", help="journal and state digest of each engine input")
    dig.add_argument("paths", nargs="+", type=Path)
    sd = sub.add_parser("seeds", help="write the seed corpus of a target")
    sd.add_argument("--target", choices=TARGET_NAMES, required=True)
    sd.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "fuzz":
        args.libfuzzer = passthrough
        return fuzz(args)
    if args.command == "libfuzzer":
        libfuzzer_main(args.target, args.keep_going, args.findings, passthrough)
        return 0
    if args.command == "replay":
        return replay(args.paths, args.target)
    if args.command == "show":
        return show(args.path)
    if args.command == "coverage":
        return measure_coverage(args.paths, args.target, args.per_file)
    if args.command == "minimize":
        return minimize(args.path, args.out)
    if args.command == "digests":
        return digests(args.paths)
    print(f"{write_seeds(args.target, args.folder)} seeds written to {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
