"""The crash-only restart policy shared by the Kafka services (engine, projection).

A service is a loop over Kafka with state rebuilt by ``_recover()`` and advanced by ``_loop()``;
any failure closes both clients, drops in-memory state and recovers again, with exponential
backoff (reset by the subclass after each committed transaction). Two failures are not retried:
a broken invariant (deterministic — the same input would break it again: :class:`Halted`, exit
code 3) and being fenced by a newer instance of the same transactional id (it steps aside: exit
code 4). SIGTERM (:meth:`CrashOnlyLoop.stop`) ends the loop after the current transaction.

Beside the loop, a probe (:meth:`CrashOnlyLoop._probe`, its own consumer) asks the broker for the
end of the input partition every ``probe_interval_s``: it records when the broker last answered
and how many input records lie past the committed offset, which ``/healthz`` turns into
``broker_unreachable`` and ``stalled`` (``engine.io.health``) — aiokafka retries through an
outage inside the loop, so without the probe nothing would notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced, TransactionCoordinatorFenced

from engine.core.context import InvariantBroken
from engine.io.health import ServiceHealth
from engine.io.kafka.config import HealthPolicy

log = logging.getLogger("marginbook.service")

#: Errors by which the broker says a newer instance holds this transactional id.
FENCED = (ProducerFenced, InvalidProducerEpoch, TransactionCoordinatorFenced)


class Halted(RuntimeError):
    """The service stopped for good: a broken invariant, or another instance fenced it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ServiceStats(Protocol):
    ready: bool
    halted: bool
    restarts: int
    health: ServiceHealth


class CrashOnlyLoop:
    """Base of a Kafka service: subclasses implement :meth:`_recover` and :meth:`_loop`."""

    #: Used in log messages ("engine", "projection").
    name = "service"

    def __init__(
        self, stats: ServiceStats, shard: int, bootstrap: str, input_tp: TopicPartition, policy: HealthPolicy
    ) -> None:
        self.stats = stats
        self.shard = shard
        self.bootstrap = bootstrap
        self.input_tp = input_tp
        self.policy = policy
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        #: The committed input offset (after recovery and each commit; kept across restarts);
        #: None until the first recovery.
        self.committed_offset: int | None = None
        self._stopping = asyncio.Event()
        self._backoff = 0.2

    def _pending(self, end: int) -> int:
        """Input records past the committed offset, given the input partition's end offset."""
        return 0 if self.committed_offset is None else max(0, end - self.committed_offset)

    def _progressed(self) -> None:
        """A transaction committed: the service is making progress."""
        self.stats.health.progress_at = time.monotonic()

    async def _probe(self) -> None:
        """Forever (until cancelled): one ListOffsets of the input partition per interval."""
        policy, health = self.policy, self.stats.health
        timeout = max(policy.probe_interval_s, 1.0)
        consumer: AIOKafkaConsumer | None = None
        try:
            while True:
                try:
                    if consumer is None:
                        consumer = AIOKafkaConsumer(
                            bootstrap_servers=self.bootstrap,
                            enable_auto_commit=False,
                            isolation_level="read_committed",
                            request_timeout_ms=int(timeout * 1000) + 1000,
                        )
                        await asyncio.wait_for(consumer.start(), timeout)
                    ends = await asyncio.wait_for(consumer.end_offsets([self.input_tp]), timeout)
                    health.broker_ok_at = now = time.monotonic()
                    health.broker_error = ""
                    health.observe_pending(self._pending(int(ends[self.input_tp])), now)
                except Exception as err:  # the broker is down or slow: say so on /healthz
                    health.broker_error = f"{type(err).__name__}: {err}"[:300] if str(err) else type(err).__name__
                    if consumer is not None:
                        await _quietly_stop(consumer)
                        consumer = None
                await asyncio.sleep(policy.probe_interval_s)
        finally:
            if consumer is not None:
                await _quietly_stop(consumer)

    def stop(self) -> None:
        """Ask the loop to stop after the current transaction (SIGTERM)."""
        self._stopping.set()

    async def _open_clients(
        self, bootstrap: str, transactional_id: str, group_id: str, tp: TopicPartition, linger_ms: int
    ) -> int:
        """Start the transactional producer, then the consumer of ``tp``; return the committed
        offset. The order matters: ``producer.start()`` fences any older instance and waits for
        its open transaction to be aborted or completed, so the offset read after it is final (read
        before, it could be stale and inputs would be processed twice)."""
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            transactional_id=transactional_id,
            enable_idempotence=True,
            linger_ms=linger_ms,
            max_batch_size=1 << 20,
            max_request_size=64 << 20,
            request_timeout_ms=30_000,
        )
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 << 20,
        )
        await self.consumer.start()
        self.consumer.assign([tp])
        committed = await self.consumer.committed(tp)
        return int(committed or 0)

    async def _recover(self) -> None:
        raise NotImplementedError

    async def _loop(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        """Run until :meth:`stop`; restart crash-only on any failure; raise :class:`Halted`
        when restarting cannot help."""
        self._backoff = 0.2
        probe = asyncio.create_task(self._probe(), name=f"{self.name}-probe")
        try:
            await self._run()
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._recover()
                await self._loop()
            except asyncio.CancelledError:
                raise
            except InvariantBroken as err:
                self.stats.halted, self.stats.ready = True, False
                log.critical("%s halted, nothing committed for the failing batch: %s", self.name, err)
                raise Halted(str(err), 3) from err
            except FENCED as err:
                self.stats.ready = False
                log.warning("another %s instance took over shard %d; stepping aside", self.name, self.shard)
                raise Halted("fenced by a newer instance", 4) from err
            except Exception:
                self.stats.restarts += 1
                self.stats.ready = False
                log.exception("%s loop failed; restarting from the last committed state", self.name)
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, 5.0)
            finally:
                await self._close()

    async def _close(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                try:
                    await client.stop()
                except (Exception, asyncio.CancelledError):  # already failing; the cause was logged
                    log.warning("error while closing a Kafka client", exc_info=True)
        self.consumer = self.producer = None


async def _quietly_stop(consumer: AIOKafkaConsumer) -> None:
    try:
        await consumer.stop()
    except (Exception, asyncio.CancelledError):
        log.debug("error while closing the probe's consumer", exc_info=True)


def install_signal_handlers(service: CrashOnlyLoop, loop: asyncio.AbstractEventLoop) -> None:
    """SIGTERM and SIGINT stop the service after its current transaction."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
