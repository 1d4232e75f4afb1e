"""From a cloud's answer to servelab's one request record.

AWS Lambda's ``Invoke`` with ``LogType=Tail`` returns the last 4 KB of the invocation's log,
base64-encoded, ending with the ``REPORT`` line::

    REPORT RequestId: 3f5…  Duration: 12.34 ms  Billed Duration: 13 ms  Memory Size: 1769 MB
    Max Memory Used: 95 MB  Init Duration: 412.50 ms

The REPORT parsing itself is the load generator's (:func:`servelab.loadgen.targets.parse_report_line`),
so records from the bench runs and from ``servelab cloud invoke`` agree. This module adds the
``SERVELAB_INIT`` line the shipped handler prints on an instance's first request (init parts:
model fetch and load) and builds the :class:`~servelab.records.RequestRecord`.

Units: ms for durations, MB for memory, seconds since the run's start for clock fields.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from servelab.cloud.safety import redact
from servelab.loadgen.targets import clean_facts, parse_facts_header, parse_report_line
from servelab.records import RequestRecord, Status

_INIT_RE = re.compile(r"SERVELAB_INIT fetch_ms=([0-9.]+) load_ms=([0-9.]+)")
_REQUEST_ID_RE = re.compile(r"REPORT RequestId: (\S+)")


def decode_log_tail(log_result: str | None) -> str:
    """``LogResult`` (base64) as text; empty when absent or not base64."""
    if not log_result:
        return ""
    try:
        return base64.b64decode(log_result).decode("utf-8", "replace")
    except (ValueError, TypeError):
        return ""


def facts_from_log(text: str) -> dict[str, Any]:
    """Record fields from a log tail: the REPORT line's, plus the handler's init parts."""
    facts = parse_report_line(text)
    m = _INIT_RE.search(text)
    if m:
        facts["init_fetch_ms"] = float(m.group(1))
        facts["init_load_ms"] = float(m.group(2))
    return clean_facts(facts)


def cloud_request_id(text: str) -> str | None:
    """The cloud's own request id, from the REPORT line (for looking the request up in its logs)."""
    m = _REQUEST_ID_RE.search(text)
    return m.group(1) if m else None


def record_from_invoke(*, run_id: str, request_id: str, target: str, scheduled_s: float, sent_s: float,
                       completed_s: float, status: Status, http_status: int | None, error: str | None,
                       log_tail: str = "", facts_header: str | None = None) -> RequestRecord:
    """One request's record. The REPORT line is authoritative; the local platform's
    ``X-Servelab-Facts`` header (absent on AWS) only fills fields the REPORT line lacks."""
    facts = parse_facts_header(facts_header)
    facts.update(facts_from_log(log_tail))
    return RequestRecord(
        run_id=run_id, request_id=request_id, target=target, scheduled_s=scheduled_s, sent_s=sent_s,
        completed_s=completed_s, latency_ms=(completed_s - scheduled_s) * 1000.0,
        send_lag_ms=(sent_s - scheduled_s) * 1000.0, status=status, error=redact(error) if error else None,
        http_status=http_status,
        **facts)
