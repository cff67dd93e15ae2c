"""The Kafka-facing commands: ``topics``, ``engine`` (and their metrics endpoint)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator

from engine.core.limits import MAX_COMMAND_BYTES
from engine.io.kafka.config import MAX_SHARDS, SHARDS_REFUSED, EngineConfig, HealthPolicy, Topics
from engine.io.kafka.crash_only import CrashOnlyLoop, Halted, install_signal_handlers
from engine.io.kafka.loop import KafkaEngine
from engine.io.kafka.topics import create_topics
from engine.io.metrics import serve_metrics


class JsonLogFormatter(logging.Formatter):
    """Structured logs: one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created * 1000),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def add_kafka_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP)")
    parser.add_argument("--topic-prefix", default="marginbook", help="prefix of every topic name")


def topics_from(args: argparse.Namespace) -> Topics:
    p = args.topic_prefix
    return Topics(
        commands=f"{p}.commands",
        events=f"{p}.events",
        snapshots=f"{p}.snapshots",
        risk=f"{p}.risk",
        alerts=f"{p}.alerts",
        dlq=f"{p}.commands.dlq",
    )


def bootstrap_from(args: argparse.Namespace) -> str:
    import os

    value = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP")
    if not value:
        raise SystemExit("marginbook: no Kafka broker: pass --bootstrap or set KAFKA_BOOTSTRAP")
    return str(value)


def refuse_shards(flag: str, value: int) -> int | None:
    """Exit code 2 with the reason for a shard count or index this version cannot run."""
    bad = value > MAX_SHARDS if flag == "--shards" else value >= MAX_SHARDS
    if value < 0 or bad:
        print(f"marginbook: {flag} {value} refused: {SHARDS_REFUSED}", file=sys.stderr)
        return 2
    return None


def env_float(name: str, default: float) -> float:
    import os

    text = os.environ.get(name)
    if not text:
        return default
    try:
        return float(text)  # det-ok: a configuration value, not money
    except ValueError:
        raise SystemExit(f"marginbook: {name}={text!r} is not a number of seconds") from None


def add_health_args(parser: argparse.ArgumentParser) -> None:
    defaults = HealthPolicy()
    parser.add_argument(
        "--health-broker-timeout",
        type=float,
        default=None,
        metavar="S",
        help="/healthz is 503 when the broker has not answered for S seconds "
        f"(env MARGINBOOK_HEALTH_BROKER_TIMEOUT_S, default {defaults.broker_timeout_s:g})",
    )
    parser.add_argument(
        "--health-stall",
        type=float,
        default=None,
        metavar="S",
        help="/healthz is 503 when no transaction committed for S seconds with input pending "
        f"(env MARGINBOOK_HEALTH_STALL_S, default {defaults.stall_s:g})",
    )


def health_from(args: argparse.Namespace) -> HealthPolicy:
    defaults = HealthPolicy()
    broker = args.health_broker_timeout
    stall = args.health_stall
    return HealthPolicy(
        broker_timeout_s=broker
        if broker is not None
        else env_float("MARGINBOOK_HEALTH_BROKER_TIMEOUT_S", defaults.broker_timeout_s),
        stall_s=stall if stall is not None else env_float("MARGINBOOK_HEALTH_STALL_S", defaults.stall_s),
    )


def cmd_topics(args: argparse.Namespace) -> int:
    refused = refuse_shards("--shards", args.shards)
    if refused is not None:
        return refused
    created = asyncio.run(create_topics(bootstrap_from(args), topics_from(args), args.shards))
    for name in created:
        print(f"created {name}")
    print(f"topics ready ({len(created)} created)")
    return 0


def cmd_engine(args: argparse.Namespace) -> int:
    refused = refuse_shards("--shard", args.shard)
    if refused is not None:
        return refused
    setup_logging(args.log_level)
    config = EngineConfig(
        bootstrap=bootstrap_from(args),
        topics=topics_from(args),
        shard=args.shard,
        batch_max=args.batch_max,
        snapshot_every=args.snapshot_every,
        metrics_port=args.metrics_port,
        record_max_bytes=args.record_max_bytes,
        health=health_from(args),
    )

    engine = KafkaEngine(config)
    return run_service(
        engine, lambda: serve_metrics(engine.stats, config.metrics_port, policy=config.health), config.metrics_port
    )


def run_service(service: CrashOnlyLoop, serve: Callable[[], Awaitable[asyncio.Server]], metrics_port: int) -> int:
    """Run a Kafka service until SIGTERM/SIGINT, with its metrics endpoint if a port is given;
    return the exit code (0, or :class:`Halted`'s: 3 broken invariant, 4 fenced)."""

    async def main() -> int:
        server = await serve() if metrics_port else None
        install_signal_handlers(service, asyncio.get_running_loop())
        try:
            await service.run()
        except Halted as halted:
            print(f"marginbook: {service.name} stopped: {halted}", file=sys.stderr)
            return halted.exit_code
        finally:
            if server is not None:
                server.close()
        return 0

    return asyncio.run(main())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.add_parser("topics", help="create the Kafka topics with their settings")
    add_kafka_args(topics)
    topics.add_argument(
        "--shards", type=int, default=1, help="partitions per shard-keyed topic (only 1 until shards share books)"
    )
    topics.set_defaults(func=cmd_topics)
    engine = sub.add_parser("engine", help="run the engine on its Kafka shard, exactly once")
    add_kafka_args(engine)
    engine.add_argument("--shard", type=int, default=0, help="input partition (only 0 until shards share books)")
    engine.add_argument("--batch-max", type=int, default=2_000)
    engine.add_argument("--snapshot-every", type=int, default=50_000)
    engine.add_argument(
        "--record-max-bytes",
        type=int,
        default=EngineConfig().record_max_bytes,
        metavar="N",
        help="value bytes of one events or dead-letter record at most; larger outcomes are split "
        "(keep it below the topics' max.message.bytes)",
    )
    engine.add_argument("--metrics-port", type=int, default=0, help="serve /metrics and /healthz on this port")
    add_health_args(engine)
    engine.add_argument("--log-level", default="INFO")
    engine.set_defaults(func=cmd_engine)
    register_submit(sub)


def cmd_submit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cli.main import read_commands
    from engine.io.kafka.submit import ShardsRefused, submit

    lines: Iterator[tuple[int, bytes]]
    if args.file == "-":
        lines = ((n, raw.strip()) for n, raw in enumerate(sys.stdin.buffer, start=1) if raw.strip())
        source = "<stdin>"
    else:
        path = Path(args.file)
        if not path.is_file():
            print(f"marginbook: {path}: no such file", file=sys.stderr)
            return 2
        lines = read_commands(path)
        source = str(path)
    try:
        report = asyncio.run(
            submit(bootstrap_from(args), topics_from(args).commands, lines, max_command_bytes=args.max_command_bytes)
        )
    except ShardsRefused as err:
        print(f"marginbook: {err}", file=sys.stderr)
        return 2
    for number, field, message in report.refused:
        print(f"{source}:{number}: {field}: {message}", file=sys.stderr)
    print(
        f"submitted {report.sent} command(s) as {report.records} record(s); "
        f"{report.ids_assigned} id(s) assigned; {len(report.refused)} refused",
        file=sys.stderr,
    )
    return 1 if report.refused else 0


def register_submit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = sub.add_parser("submit", help="validate commands and produce them to their shards")
    add_kafka_args(submit)
    submit.add_argument("file", help="JSONL file, or - for standard input")
    submit.add_argument(
        "--max-command-bytes",
        type=int,
        default=MAX_COMMAND_BYTES,
        metavar="N",
        help=f"refuse lines longer than N bytes (default {MAX_COMMAND_BYTES:,}, engine.core.limits)",
    )
    submit.set_defaults(func=cmd_submit)
