"""Prometheus metrics (``GET /metrics``), safe with several worker processes on one host.

With ``PROMETHEUS_MULTIPROC_DIR`` set (systemd or compose point every worker of a host at one
empty directory, cleared at boot), each process writes its samples to files there and any
worker's ``/metrics`` reports the sum over all of them (``prometheus_client.multiprocess``);
without it, a process reports its own. Gauges that describe shared state — outbox depth,
scheduler lease holder — are read from the database at scrape time, so every worker reports
the same truth instead of a per-process guess.

Labels are channels, languages, outcomes: never a user, a chat, a question or a patient.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

MESSAGES_IN = Counter("yilian_messages_in_total", "Inbound messages accepted, per channel", ["channel"])
MESSAGES_OUT = Counter("yilian_messages_out_total", "Outbound messages delivered, per channel", ["channel"])
OUTBOX_RETRIES = Counter("yilian_outbox_retries_total", "Outbound deliveries that failed and will be retried",
                         ["channel"])
OUTBOX_FAILED = Counter("yilian_outbox_failed_total", "Outbound deliveries given up", ["channel"])
ANSWERS = Counter("yilian_answers_total", "Policy questions answered, per language and outcome",
                  ["language", "outcome"])
ANSWER_SECONDS = Histogram("yilian_answer_seconds", "Time to answer a policy question",
                           buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56))
DEGRADED_ANSWERS = Counter("yilian_answers_degraded_total",
                           "Answers given from the lexical index alone (vector store unreachable)")
INGEST_SECONDS = Histogram("yilian_ingest_seconds", "Time to ingest one policy document, per status",
                           ["status"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))


def observe_answer(answer, degraded: bool) -> None:  # noqa: ANN001 - knowledge.answer.Answer
    """The knowledge base's answer observer (``KnowledgeBase.observers``)."""
    ANSWERS.labels(answer.language, "refused" if answer.refused else "answered").inc()
    ANSWER_SECONDS.observe(answer.ms / 1000)
    if degraded:
        DEGRADED_ANSWERS.inc()


def observe_ingest(status: str, seconds: float) -> None:
    INGEST_SECONDS.labels(status).observe(seconds)


class _SharedStateCollector:
    """Outbox depth per channel and status, and who holds the scheduler lease, from the database."""

    def __init__(self, sessions) -> None:  # noqa: ANN001 - sessionmaker
        self._sessions = sessions

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from sqlalchemy import func, select

        from storage.models import OutboxMessage, SchedulerLease
        from storage.types import utcnow

        depth = GaugeMetricFamily("yilian_outbox_depth", "Outbound messages not yet delivered",
                                  labels=["channel", "status"])
        leader = GaugeMetricFamily("yilian_scheduler_lease_held", "1 while a scheduler holds the lease",
                                   labels=["holder"])
        try:
            with self._sessions() as session:
                rows = session.execute(
                    select(OutboxMessage.channel, OutboxMessage.status, func.count())
                    .where(OutboxMessage.status.in_(("pending", "sending")))
                    .group_by(OutboxMessage.channel, OutboxMessage.status)
                ).all()
                lease = session.scalars(select(SchedulerLease)).first()
        except Exception:  # noqa: BLE001 - a scrape during a database restart reports what it can
            log.warning("metrics: database unreachable for the shared gauges")
            return
        for channel, status, count in rows:
            depth.add_metric([channel, status], count)
        yield depth
        if lease is not None:
            held = lease.holder is not None and lease.expires_at is not None and lease.expires_at > utcnow()
            leader.add_metric([lease.holder or ""], 1.0 if held else 0.0)
        yield leader


def render(sessions) -> tuple[bytes, str]:  # noqa: ANN001 - sessionmaker
    """The exposition text of this process (or of every process of the host, multiprocess mode)."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    shared = CollectorRegistry()
    shared.register(_SharedStateCollector(sessions))
    return generate_latest(registry) + generate_latest(shared), CONTENT_TYPE_LATEST
