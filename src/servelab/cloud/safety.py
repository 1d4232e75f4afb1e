"""Safety around anything that spends money: plans, cost estimates, budgets, guaranteed teardown.

- A :class:`CloudPlan` lists every resource a command would create and what it would cost,
  priced from servelab's dated catalog (:func:`servelab.billing.pricing.estimate`). ``--dry-run``
  prints it and stops; ``--max-cost`` refuses a plan whose estimate is above the budget.
- :func:`teardown_guard` runs a teardown after success, an error, Ctrl-C or SIGTERM.
- Credentials come only from the SDKs' standard chains (environment, shared files, instance
  roles); servelab never takes a secret as an argument and writes none: :func:`redact` is
  applied to anything recorded about a request or a resource.

Units: USD (``*_usd``), seconds (``*_s``), ms (``*_ms``), MB (``*_mb``).
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from servelab.errors import ConfigError

TAG_RUN_ID = "servelab:run-id"
TAG_CREATED_BY = "servelab:created-by"


def run_tags(run_id: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The tags every cloud resource servelab creates carries: cleanup finds leftovers by them."""
    return {**(extra or {}), TAG_RUN_ID: run_id, TAG_CREATED_BY: "servelab"}


@dataclass(frozen=True)
class PlannedResource:
    kind: str  # "lambda-function", "s3-object", "sagemaker-endpoint", …
    name: str
    detail: str = ""


@dataclass
class CloudPlan:
    """What a deploy (and its load) would create and cost. ``estimate_usd`` is the budget figure."""

    target: str
    resources: list[PlannedResource]
    estimate_usd: float
    entry_id: str
    assumptions: list[str] = field(default_factory=list)
    worst_case_usd: float | None = None  # every request running to the function timeout

    def lines(self) -> list[str]:
        out = [f"plan for {self.target}: {len(self.resources)} resource(s)"]
        out += [f"  + {r.kind:<28} {r.name}" + (f"  ({r.detail})" if r.detail else "") for r in self.resources]
        out.append(f"estimated cost: ${self.estimate_usd:.6f} (price entry {self.entry_id})")
        if self.worst_case_usd is not None:
            out.append(f"worst case (every request runs to the timeout): ${self.worst_case_usd:.6f}")
        out += [f"  - {a}" for a in self.assumptions]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "estimate_usd": self.estimate_usd, "worst_case_usd": self.worst_case_usd,
                "entry_id": self.entry_id, "assumptions": self.assumptions,
                "resources": [r.__dict__ for r in self.resources]}


def check_budget(plan: CloudPlan, max_cost_usd: float | None) -> None:
    """Refuse (ConfigError) a plan whose estimate exceeds ``max_cost_usd``; None means no budget."""
    if max_cost_usd is None:
        return
    if max_cost_usd < 0:
        raise ConfigError(f"--max-cost must not be negative (got {max_cost_usd})")
    if plan.estimate_usd > max_cost_usd:
        raise ConfigError(f"refusing to start: the estimated cost ${plan.estimate_usd:.6f} ({plan.entry_id}) is over "
                          f"the budget --max-cost ${max_cost_usd:.6f}; raise the budget, or shrink the plan "
                          "(fewer requests, less memory, no provisioned concurrency); --dry-run shows the plan")


def estimate_serverless_usd(entry_id: str, *, requests: int, duration_ms: float, memory_mb: int,
                            provisioned: int = 0, window_s: float = 0.0) -> tuple[float, list[str]]:
    """Price ``requests`` of ``duration_ms`` (plus provisioned capacity held for ``window_s``)."""
    from servelab.billing.pricing import estimate

    c = estimate(entry_id, requests=requests, duration_ms=duration_ms, memory_mb=memory_mb,
                 provisioned_instances=provisioned, duration_s=window_s if provisioned else None)
    return c.total_usd, list(c.notes)


def estimate_instances_usd(entry_id: str, *, instances: int, window_s: float,
                           requests: int = 0) -> tuple[float, list[str]]:
    """Price ``instances`` always-on instances for ``window_s`` (SageMaker real-time, Cloud Run min)."""
    from servelab.billing.pricing import estimate

    c = estimate(entry_id, requests=requests, duration_ms=0.0, duration_s=window_s, instances=instances)
    return c.total_usd, list(c.notes)


# ------------------------------------------------------------------------------- secrets

_SECRET_PATTERNS = (
    re.compile(r"(?i)(aws_secret_access_key|secret[_-]?access[_-]?key|x-amz-security-token|"
               r"aws_session_token|authorization)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"),
    re.compile(r"(Signature=)[0-9a-f]{16,}"),
)


def redact(text: str) -> str:
    """Mask secret-looking values (keys, tokens, signatures) before text is written anywhere."""
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: m.group(1) + (m.group(2) if m.lastindex and m.lastindex >= 2 else "") + "***",
                       text)
    return text


# ---------------------------------------------------------------------------- teardown


@contextlib.contextmanager
def teardown_guard(teardown: Callable[[], Any]) -> Iterator[None]:
    """Run ``teardown`` however the block ends: normally, by an exception, by Ctrl-C (SIGINT)
    or by SIGTERM. The SIGTERM handler only raises KeyboardInterrupt in the main thread, so the
    ``finally`` does the work (a signal handler that did the teardown itself could run in the
    middle of a boto3 call). A second Ctrl-C during the teardown is ignored until it is done."""
    previous = None
    main = threading.current_thread() is threading.main_thread()
    if main:
        def _on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        yield
    finally:
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            teardown()
        finally:
            if main:
                signal.signal(signal.SIGINT, old_int)
                signal.signal(signal.SIGTERM, previous)
