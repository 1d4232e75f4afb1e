"""Runs on the real local platform, for profiling (:mod:`~servelab.calibrate.measure`) and validation
(:mod:`~servelab.calibrate.validate`): start the platform on loopback, deploy a function that matches
a :class:`~servelab.sim.serverless.ServerlessConfig`, drive it with servelab's open-loop load
generator, and read back its records.

The platform runs as a subprocess (:class:`servelab.bench.targets.LocalPlatform`), so the
load generator, the gateway and the instances are separate processes, as in a real run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from servelab.errors import FunctionNotFoundError, PlatformError
from servelab.sim.serverless import ServerlessConfig


@contextlib.contextmanager
def local_platform(work_dir: Path, url: str | None = None, port: int | None = None) -> Iterator[str]:
    """A platform URL: ``url`` (checked to answer), or a fresh platform under ``work_dir`` (on
    ``port`` if given) stopped on exit."""
    from servelab.bench.targets import LocalPlatform

    platform = LocalPlatform(work_dir / "platform", work_dir / "platform.log", url=url, port=port)
    try:
        yield platform.ensure()
    finally:
        platform.stop()


@contextlib.contextmanager
def work_directory(work_dir: Path | None, prefix: str) -> Iterator[Path]:
    """``work_dir`` as given (kept), or a temporary directory removed on exit, even on an error."""
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        yield work_dir
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


class Deployer:
    """Deploys functions on one platform from :class:`ServerlessConfig` values."""

    def __init__(self, url: str, model_path: Path, *, start_mode: str = "fork", runtime: str = "onnxruntime") -> None:
        from servelab.models.store import open_store
        from servelab.platform.client import PlatformClient

        self.client = PlatformClient(url)
        self.url = url
        self.start_mode = start_mode
        self.runtime = runtime
        info = self.client.info()
        store = open_store(info.get("store_url"), home=Path(info["home"]))
        name = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in model_path.stem)[:64] or "model"
        self.ref = store.put(name, model_path)

    def deploy(self, fn: str, cfg: ServerlessConfig) -> str:
        """(Re)create ``fn`` from a cold state with ``cfg``'s settings; wait for provisioned ones."""
        with contextlib.suppress(FunctionNotFoundError):
            self.client.delete(fn)
        from servelab.platform.functions import servelab_vars

        variables = servelab_vars({
            "model": self.ref, "runtime": self.runtime, "start_mode": self.start_mode,
            "batching.max_batch_size": cfg.max_batch_size, "batching.max_wait_ms": cfg.max_wait_ms,
            "max_concurrency": cfg.max_concurrency, "admission": cfg.admission, "max_queue": cfg.max_queue,
            "max_queue_wait_s": cfg.max_queue_wait_s, "keep_alive.kind": cfg.keep_alive,
            "keep_alive.keep_alive_s": cfg.keep_alive_s, "billing_rounding_ms": cfg.billing_rounding_ms,
            "keep_alive.params": dict(cfg.keep_alive_params) or None,
        })
        self.client.create({"FunctionName": fn, "Role": "servelab-sim", "MemorySize": cfg.memory_mb,
                            "Timeout": int(cfg.timeout_s), "Handler": "servelab.model",
                            "Environment": {"Variables": variables}})
        if cfg.provisioned:
            self.client.put_provisioned(fn, cfg.provisioned)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                snap = self.client.instances(fn)
                if sum(1 for i in snap.get("instances", []) if i.get("provisioned") and i.get("state") == "idle") \
                        >= cfg.provisioned:
                    break
                time.sleep(0.05)
            else:
                raise PlatformError(f"{fn}: provisioned instances not ready within 120 s")
        return fn

    def delete(self, fn: str) -> None:
        with contextlib.suppress(FunctionNotFoundError):
            self.client.delete(fn)


def drive(url: str, fn: str, times: np.ndarray, payloads: list[bytes], out_dir: Path, *, run_id: str,
          duration_s: float | None = None, timeout_s: float = 30.0, config: dict[str, Any] | None = None) -> pa.Table:
    """Fire ``times`` at ``fn`` with the open-loop load generator; return the run's records."""
    from servelab.loadgen.runner import run
    from servelab.loadgen.targets import TargetSpec
    from servelab.records import read_records
    from servelab.workload import Arrivals

    arrivals = Arrivals(times_s=np.asarray(times, dtype=np.float64), states=None,
                        duration_s=duration_s or (float(times[-1]) if len(times) else 0.0), state_path=None)
    run(TargetSpec("lambda", url=url, name=fn), arrivals, payloads, out_dir=out_dir, run_id=run_id,
        timeout_s=timeout_s, config={"duration_s": arrivals.duration_s, **(config or {})})
    return read_records(out_dir / "records")
