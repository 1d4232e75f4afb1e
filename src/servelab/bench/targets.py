"""Targets: where an experiment's load goes, behind one small interface (SeBS's habit).

    target = make_target(spec, ctx)
    endpoint = target.prepare(run, model_path)   # deploy this run's configuration, cold
    ... the load generator drives endpoint.target ...
    target.cooldown()                              # no instance of this run survives it
    target.teardown()                              # at the end of the experiment

The executor never branches on the kind. Built-in kinds (:mod:`servelab.bench.registry`):

- ``serverless``: the local platform, the function deployed per run from a cold state;
- ``server``: the same machinery with scaling off — N workers started before the run, a
  bounded queue, no reclaim: the study's self-rented CPU server;
- ``gpu-server``: the server with onnxruntime's CUDA provider; unavailable (the plan says why)
  where there is no GPU or the platform cannot run instances on it;
- ``managed``: a SageMaker-like endpoint: min instances always on, more added by the platform's
  target-tracking autoscaler (utilisation target, metric period, scale-out delay), queueing;
- ``http``: any URL, unmanaged.

A cloud target (AWS Lambda, SageMaker, GCP) is one more subclass of :class:`BenchTarget` plus a
spec class, registered with :func:`servelab.bench.registry.register_target` from its own module
(docs/experiments.md, "Adding a target").
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from servelab.bench.planner import PlannedRun
from servelab.bench.spec import (
    GpuServerTargetSpec,
    HttpTargetSpec,
    ManagedTargetSpec,
    ServerlessTargetSpec,
    ServerTargetSpec,
    TargetSpecBase,
)
from servelab.bench.target_spec import BenchTarget
from servelab.errors import FunctionNotFoundError, PlatformError
from servelab.loadgen.targets import TargetSpec
from servelab.platform.functions import servelab_vars

PLATFORM_READY_TIMEOUT_S = 60.0
PROVISIONED_READY_TIMEOUT_S = 120.0
POLL_S = 0.05
# Effectively infinite keep-alive for always-on targets: ten years.
FOREVER_S = 10 * 365 * 24 * 3600.0
# The function setting that puts a function's instances on the GPU (platform/functions.py).
DEVICE_ENV = "SERVELAB_DEVICE"


@dataclass
class Endpoint:
    """What the load generator needs (``target``) and what the run records about the target."""

    target: TargetSpec
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- the local platform


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the platform when the executor dies, even by kill -9, so an
    interrupted experiment never leaves a platform (and its instances) running."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalPlatform:
    """The platform as a subprocess (``servelab platform up``), started on first use.

    Its state (functions, model store, meter records) lives in ``home``; its output goes to
    ``log_path``. A platform left by an executor that was killed is found by its pid file
    and stopped before a new one starts on the same home.
    """

    def __init__(self, home: Path, log_path: Path, *, url: str | None = None, port: int | None = None) -> None:
        self.home = Path(home)
        self.log_path = Path(log_path)
        self.pid_path = self.home / "platform.pid"
        self.proc: subprocess.Popen | None = None
        self.external = url.rstrip("/") if url else None  # a running platform: used, never started or stopped
        self.port = port
        self.url: str | None = self.external
        self._log: Any = None

    def ensure(self) -> str:
        if self.external:
            self._check_external()
            return self.external
        if self.proc is not None and self.proc.poll() is None and self.url:
            return self.url
        self.home.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        port = self.port or _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "servelab.cli", "platform", "up", "--port", str(port),
             "--home", str(self.home)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.pid_path.write_text(str(self.proc.pid))
        self._wait_ready()
        return self.url

    def _check_external(self) -> None:
        try:
            with urllib.request.urlopen(f"{self.external}/v2/health/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError as e:
            raise PlatformError(f"no servelab platform answers at {self.external} ({e}); start one with "
                                f"`servelab platform up`, or leave out --platform to start one") from None
        raise PlatformError(f"the platform at {self.external} is not ready")

    def _wait_ready(self) -> None:
        assert self.proc is not None and self.url is not None
        deadline = time.monotonic() + PLATFORM_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PlatformError(f"the platform exited with code {self.proc.returncode} during start-up; "
                                    f"see {self.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/v2/health/ready",
                                                                      timeout=1) as r:
                if r.status == 200:
                    return
            time.sleep(POLL_S)
        raise PlatformError(f"the platform did not become ready within {PLATFORM_READY_TIMEOUT_S:.0f} s; "
                            f"see {self.log_path}")

    def _stop_leftover(self) -> None:
        """Stop the platform a previous (killed) executor started on this home, by its pid."""
        try:
            pid = int(self.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            return
        if "platform up" not in cmdline or str(self.home) not in cmdline:
            return  # the pid was reused by something else: not ours
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(POLL_S)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        with contextlib.suppress(OSError):
            self.pid_path.unlink()
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class TargetContext:
    """What targets share within one experiment: the output directory and one local platform."""

    out_dir: Path
    platform: LocalPlatform

    @classmethod
    def for_dir(cls, out_dir: Path, *, platform_url: str | None = None,
                platform_port: int | None = None) -> TargetContext:
        """``platform_url``: use that running platform; else start one (on ``platform_port`` if given)."""
        return cls(out_dir=out_dir, platform=LocalPlatform(out_dir / "platform", out_dir / "platform.log",
                                                           url=platform_url, port=platform_port))

    def close(self) -> None:
        self.platform.stop()


# --------------------------------------------------------------------------------------- targets


class _PlatformTarget(BenchTarget):
    """Targets served by servelab's platform: the function is deleted and re-created per run."""

    spec: ServerlessTargetSpec | ServerTargetSpec | ManagedTargetSpec

    def __init__(self, spec: TargetSpecBase, ctx: TargetContext) -> None:
        super().__init__(spec, ctx)
        self.function: str | None = None
        self._client: Any = None

    # what differs between kinds: max concurrency, provisioned instances, admission, keep-alive
    def shape(self, run: PlannedRun) -> dict[str, Any]:
        raise NotImplementedError

    def notes(self, run: PlannedRun) -> list[str]:
        return []

    def extra_env(self, run: PlannedRun) -> dict[str, str]:
        return {}

    @classmethod
    def overhead_s(cls, run: PlannedRun) -> float:
        # delete + create + (provisioned: start instances ~0.3 s each with fork on this VM) + delete
        settings = run.target_settings
        n = run.provisioned or settings.get("workers") or settings.get("min_instances") or 0
        return 1.0 + 0.5 * int(n)

    def start(self) -> None:
        self.client()

    def client(self) -> Any:
        from servelab.platform.client import PlatformClient

        if self._client is None:
            url = self.spec.url or self.ctx.platform.ensure()
            self._client = PlatformClient(url)
        return self._client

    def _push_model(self, model_path: Path) -> str:
        from servelab.models.store import open_store

        info = self.client().info()
        store = open_store(info.get("store_url"), home=Path(info["home"]))
        name = "".join(c if c.isalnum() or c in "._-" else "-" for c in model_path.stem)[:64] or "model"
        return store.put(name, model_path)

    def prepare(self, run: PlannedRun, model_path: Path) -> Endpoint:
        client = self.client()
        fn = "x-" + run.run_id.rsplit("-", 1)[-1]
        self._delete(fn)  # from a cold state: no instance of an earlier deployment survives
        shape = self.shape(run)
        ref = self._push_model(model_path)
        variables = {**servelab_vars({
            "model": ref, "runtime": run.runtime or "onnxruntime", "batching.max_batch_size": run.batch_size or 1,
            "batching.max_wait_ms": self.spec.batch_wait_ms, "start_mode": self.spec.start_mode,
            "max_concurrency": shape["max_concurrency"], "admission": shape["admission"],
            "max_queue": shape["max_queue"], "max_queue_wait_s": shape.get("max_queue_wait_s", run.timeout_s),
            "keep_alive.keep_alive_s": shape["keep_alive_s"],
            "keep_alive.kind": shape.get("keep_alive_policy", "fixed"),
        }), **self.extra_env(run)}
        body = {"FunctionName": fn, "Role": "servelab-bench", "MemorySize": run.memory_mb or 1769,
                "Timeout": self.spec.function_timeout_s, "Handler": "servelab.model",
                "Description": f"servelab bench run {run.run_id}", "Environment": {"Variables": variables}}
        client.create(body)
        self.function = fn
        provisioned = int(shape["provisioned"])
        ready_s = None
        if provisioned:
            t0 = time.monotonic()
            client.put_provisioned(fn, provisioned)
            self._wait_provisioned(fn, provisioned)
            ready_s = round(time.monotonic() - t0, 3)
        snap = client.instances(fn)
        return Endpoint(
            target=TargetSpec("lambda", url=client.url, name=fn),
            info={"url": client.url, "function": fn, "model_ref": ref, "deployed": body,
                  "provisioned": provisioned, "provisioned_ready_s": ready_s,
                  "instances_at_start": snap.get("by_state", {}), "shape": shape, "notes": self.notes(run)},
        )

    def _wait_provisioned(self, fn: str, n: int) -> None:
        deadline = time.monotonic() + PROVISIONED_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            snap = self.client().instances(fn)
            ready = sum(1 for i in snap.get("instances", [])
                        if i.get("provisioned") and i.get("state") == "idle")
            if ready >= n:
                return
            time.sleep(POLL_S)
        raise PlatformError(f"function {fn}: {n} provisioned instance(s) not ready within "
                            f"{PROVISIONED_READY_TIMEOUT_S:.0f} s; see the platform log")

    def _delete(self, fn: str) -> None:
        with contextlib.suppress(FunctionNotFoundError):
            self.client().delete(fn)  # returns once its instances are stopped

    def cooldown(self) -> None:
        if self.function:
            self._delete(self.function)
            self.function = None
        super().cooldown()

    def teardown(self) -> None:
        if self.function and self._client is not None:
            with contextlib.suppress(PlatformError):
                self._delete(self.function)
            self.function = None


class ServerlessTarget(_PlatformTarget):
    kind: ClassVar[str] = "serverless"
    spec: ServerlessTargetSpec

    def shape(self, run: PlannedRun) -> dict[str, Any]:
        s = self.spec
        return {"max_concurrency": s.max_concurrency, "provisioned": run.provisioned or 0,
                "admission": s.admission, "max_queue": s.max_queue, "keep_alive_s": s.keep_alive_s,
                "keep_alive_policy": s.keep_alive_policy}

    def price_args(self, run: PlannedRun, summary: dict[str, Any]) -> dict[str, Any] | None:
        args = super().price_args(run, summary)
        if args is not None and run.provisioned:
            args["provisioned_instances"] = run.provisioned
        return args


class ServerTarget(_PlatformTarget):
    kind: ClassVar[str] = "server"
    spec: ServerTargetSpec

    def shape(self, run: PlannedRun) -> dict[str, Any]:
        n = self.spec.workers
        return {"max_concurrency": n, "provisioned": n, "admission": "queue",
                "max_queue": self.spec.max_queue, "max_queue_wait_s": run.timeout_s,
                "keep_alive_s": FOREVER_S}

    def extra_env(self, run: PlannedRun) -> dict[str, str]:
        # the same core model as the simulator's server pool: scaling fixed at the worker count
        return servelab_vars({"scaling": {"kind": "fixed"}, "provisioned": self.spec.workers})

    def notes(self, run: PlannedRun) -> list[str]:
        return [f"always-on server: {self.spec.workers} worker instance(s) started before the run, "
                f"scaling fixed, a FIFO queue of at most {self.spec.max_queue} requests"]

    def price_args(self, run: PlannedRun, summary: dict[str, Any]) -> dict[str, Any] | None:
        args = super().price_args(run, summary)
        if args is not None:
            args["instances"] = self.spec.machines
            args["notes"] = [f"{self.spec.machines} x {args['entry_id']} billed for the run's window, "
                             "busy or idle"]
        return args


class GpuServerTarget(ServerTarget):
    kind: ClassVar[str] = "gpu-server"
    spec: GpuServerTargetSpec

    @classmethod
    def availability(cls, spec: TargetSpecBase) -> str | None:
        reason = detect_gpu()
        if reason is not None:
            return reason
        from servelab.platform.functions import LAMBDA_ENV_KEYS

        if DEVICE_ENV not in LAMBDA_ENV_KEYS:
            return (f"a GPU is present, but this platform has no {DEVICE_ENV} function setting to run "
                    "instances on it; a gpu-server run would not use the GPU")
        return None

    def extra_env(self, run: PlannedRun) -> dict[str, str]:
        return {**super().extra_env(run), **servelab_vars({"device": "cuda"})}

    def notes(self, run: PlannedRun) -> list[str]:
        return [*super().notes(run), "instances run the model on the first NVIDIA GPU (device cuda: "
                "onnxruntime's CUDA execution provider, CPU for operators it lacks)"]


class ManagedTarget(_PlatformTarget):
    """A managed endpoint: the platform's metric-driven target-tracking autoscaler.

    At least one instance is always on (``min_instances``, raised to 1: a managed endpoint
    never scales to zero), started before the load; the autoscaler adds instances when the
    measured load per instance exceeds ``target_utilisation``, each serving after
    ``scale_out_delay_s``, and removes idle ones after ``scale_in_idle_s``. Requests queue.
    """

    kind: ClassVar[str] = "managed"
    spec: ManagedTargetSpec

    def shape(self, run: PlannedRun) -> dict[str, Any]:
        s = self.spec
        return {"max_concurrency": s.max_instances, "provisioned": max(1, s.min_instances), "admission": "queue",
                "max_queue": s.max_queue, "max_queue_wait_s": run.timeout_s,
                # instances are removed by the autoscaler's scale-in, not by the keep-alive
                "keep_alive_s": 86_400.0}

    def extra_env(self, run: PlannedRun) -> dict[str, str]:
        s = self.spec
        params = {"target_utilisation": s.target_utilisation, "metric_period_s": s.metric_period_s,
                  "scale_out_delay_s": s.scale_out_delay_s, "scale_out_cooldown_s": s.scale_out_cooldown_s,
                  "scale_in_cooldown_s": s.scale_in_idle_s}
        # the minimum instance count is set at create time: target-tracking refuses a function without one
        return servelab_vars({"scaling": {"kind": "target-tracking", **params},
                              "provisioned": max(1, s.min_instances)})

    def notes(self, run: PlannedRun) -> list[str]:
        s = self.spec
        lo = max(1, s.min_instances)
        return [f"managed endpoint: target-tracking autoscaler, {lo} to {s.max_instances} instance(s), "
                f"target utilisation {s.target_utilisation:g} measured every {s.metric_period_s:g} s, new "
                f"instances serve {s.scale_out_delay_s:g} s after the decision, idle extras removed after "
                f"{s.scale_in_idle_s:g} s; requests above the instances queue"]

    def price_args(self, run: PlannedRun, summary: dict[str, Any]) -> dict[str, Any] | None:
        args = super().price_args(run, summary)
        if args is not None:
            n = max(self.spec.min_instances, int(summary.get("instances") or 0), 1)
            args["instances"] = n
            args["notes"] = [f"{n} instance(s) billed for the whole window: the most that served the run, an "
                             "upper bound (instances started mid-run are billed from the start)"]
        return args


class HttpBenchTarget(BenchTarget):
    kind: ClassVar[str] = "http"
    spec: HttpTargetSpec

    def prepare(self, run: PlannedRun, model_path: Path) -> Endpoint:
        s = self.spec
        return Endpoint(target=TargetSpec(s.protocol, url=s.url, name=s.function or ""),
                        info={"url": s.url, "protocol": s.protocol, "function": s.function,
                              "notes": ["unmanaged target: servelab neither deploys nor cools it down; "
                                        "its state between runs is whatever the system keeps"]})


def make_target(spec: TargetSpecBase, ctx: TargetContext) -> BenchTarget:
    """The target object for one spec, found through the registry (built-in or plugin kind)."""
    from servelab.bench.registry import target_class

    return target_class(spec.kind)(spec, ctx)


def detect_gpu() -> str | None:
    """None when onnxruntime can run on an NVIDIA GPU here; otherwise what is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "no GPU runtime: onnxruntime is not installed"
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return (f"no GPU: onnxruntime {ort.__version__} offers {', '.join(providers)} but not "
                "CUDAExecutionProvider (needs an NVIDIA GPU and the onnxruntime-gpu package)")
    if not any(Path("/dev").glob("nvidia[0-9]*")) and shutil.which("nvidia-smi") is None:
        return "no GPU: onnxruntime has CUDAExecutionProvider but no NVIDIA device is present (/dev/nvidia*)"
    return None
