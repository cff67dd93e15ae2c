"""The read side's commands: ``project`` (the risk projection), ``api`` (HTTP) and ``monitor``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from cli.services import (
    add_health_args,
    add_kafka_args,
    bootstrap_from,
    health_from,
    refuse_shards,
    run_service,
    setup_logging,
    topics_from,
)


def cmd_project(args: argparse.Namespace) -> int:
    from projections.metrics import serve_projection_metrics
    from projections.service import KafkaProjection, ProjectionConfig

    refused = refuse_shards("--shard", args.shard)
    if refused is not None:
        return refused
    setup_logging(args.log_level)
    config = ProjectionConfig(
        bootstrap=bootstrap_from(args),
        topics=topics_from(args),
        snapshots_topic=f"{args.topic_prefix}.projection.snapshots",
        shard=args.shard,
        batch_max=args.batch_max,
        snapshot_every=args.snapshot_every,
        metrics_port=args.metrics_port,
        rebuild=args.rebuild,
        stop_when_caught_up=args.stop_when_caught_up,
        health=health_from(args),
    )

    projection = KafkaProjection(config)
    return run_service(
        projection,
        lambda: serve_projection_metrics(projection.stats, config.metrics_port, policy=config.health),
        config.metrics_port,
    )


def cmd_api(args: argparse.Namespace) -> int:
    from projections.http_api import openapi_document, serve
    from projections.reader import RiskStore

    if args.print_openapi:
        sys.stdout.write(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")
        return 0
    setup_logging(args.log_level)
    topics = topics_from(args)
    asyncio.run(serve(RiskStore(), bootstrap_from(args), topics.risk, topics.alerts, args.host, args.port))
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from projections.monitor import run_monitor

    setup_logging("WARNING")
    topics = topics_from(args)
    return asyncio.run(run_monitor(bootstrap_from(args), args.topic_prefix, topics.risk, topics.alerts, rows=args.rows))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    project = sub.add_parser("project", help="publish risk views and alerts from a shard's events, exactly once")
    add_kafka_args(project)
    project.add_argument(
        "--shard", type=int, default=0, help="events partition this projection owns (only 0 until shards share books)"
    )
    project.add_argument("--batch-max", type=int, default=5_000, metavar="N", help="outcomes per transaction at most")
    project.add_argument(
        "--snapshot-every", type=int, default=20_000, metavar="N", help="projection snapshot every N seqs"
    )
    project.add_argument("--metrics-port", type=int, default=0, help="serve /metrics and /healthz on this port")
    add_health_args(project)
    project.add_argument(
        "--rebuild", action="store_true", help="re-fold from the start of the journal and converge the risk topic"
    )
    project.add_argument(
        "--stop-when-caught-up", action="store_true", help="exit 0 once the events partition is fully projected"
    )
    project.add_argument("--log-level", default="INFO")
    project.set_defaults(func=cmd_project)

    api = sub.add_parser("api", help="HTTP JSON read API over the current risk views")
    add_kafka_args(api)
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--print-openapi", action="store_true", help="print the OpenAPI description and exit")
    api.add_argument("--log-level", default="INFO")
    api.set_defaults(func=cmd_api)

    monitor = sub.add_parser("monitor", help="live terminal view of the riskiest accounts and recent alerts")
    add_kafka_args(monitor)
    monitor.add_argument("--rows", type=int, default=15, help="accounts shown")
    monitor.set_defaults(func=cmd_monitor)
