"""The platform: functions, their services, the instance backend, the meter, the reconciler.

:class:`Platform` is the control plane; ``api.py`` puts HTTP in front of it. Start it with
``async with Platform(home) as p:`` or ``servelab platform up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import shutil
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from servelab.config import validate_name
from servelab.core.host import HostCore
from servelab.core.policies import EvictionOrder
from servelab.errors import ConfigError, FunctionNotFoundError, LimitsError, StartupError
from servelab.platform.backends.local import LocalProcessBackend
from servelab.platform.events import EventDispatcher, EventQueue
from servelab.platform.functions import FunctionConfig, FunctionRegistry
from servelab.platform.homelock import HomeLock
from servelab.platform.isolation import InstanceNetwork, UidMap
from servelab.platform.isolation import plan as plan_isolation
from servelab.platform.limits import InstanceLedger, LimitsInfo, cleanup_stale, detect
from servelab.platform.limits.stale import LEDGER_NAME
from servelab.platform.meter import Meter
from servelab.platform.names import function_arn
from servelab.platform.service import FunctionService, Invocation

if TYPE_CHECKING:
    from servelab.models.store import ModelStore

LimitsChoice = Literal["auto", "cgroup2", "cgroup1", "rlimit", "none"]
LIMITS_CHOICES: tuple[LimitsChoice, ...] = ("auto", "cgroup2", "cgroup1", "rlimit", "none")
MAX_CODE_BYTES = 50 * 1024 * 1024  # Lambda's zipped deployment package limit


def resolve_limits(choice: LimitsChoice) -> LimitsInfo | None:
    """The limits mode to use: ``auto`` picks the strongest this machine allows."""
    if choice == "none":
        return None
    if choice not in LIMITS_CHOICES:
        raise ConfigError(f"limits must be one of {', '.join(LIMITS_CHOICES)}, got {choice!r}")
    return detect(prefer=None if choice == "auto" else choice)


class Platform:
    def __init__(self, home: Path, *, store_url: str | None = None, limits: LimitsChoice = "auto",
                 preload: list[str] | None = None, reconcile_interval_s: float = 0.1,
                 instance_network: InstanceNetwork = "host", isolate: bool = True,
                 port: int | None = None, max_event_queue: int = 10_000,
                 event_retry_delay_s: float = 60.0, host_memory_mb: float | None = None,
                 host_eviction: EvictionOrder = "lru") -> None:
        self.home = Path(home)
        self.instance_network = instance_network
        self.isolate = isolate  # as root: each function's instances in their own uid and views
        self.port = port  # only for the home lock's "in use by ... on port P" message
        self.platform_id = f"platform-{uuid.uuid4().hex[:8]}"
        self.home_lock = HomeLock(self.home, self.platform_id)
        self.stale_cleaned = 0
        self.max_event_queue = max_event_queue
        self.event_retry_delay_s = event_retry_delay_s
        self.store_url = store_url
        self.limits_choice = limits
        self.preload = preload or ["onnxruntime"]
        self.reconcile_interval_s = reconcile_interval_s
        self.services: dict[str, FunctionService] = {}
        # one memory budget shared by every function (--host-memory-mb): idle instances of any
        # function are evicted by policy, starts that cannot fit wait (servelab.core.host)
        self.host = HostCore(host_memory_mb, order=host_eviction) if host_memory_mb else None
        self.limits_info: LimitsInfo | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._model_meta: dict[str, dict[str, Any]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # ---- lifecycle -----------------------------------------------------------------------
    def lock_home(self) -> None:
        """Make the home usable and take its lock (idempotent); raises :class:`StartupError`.

        Called by :meth:`start`; the CLI calls it before binding the port, so that a second
        platform on the same home stops at once with a message naming the first.
        """
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StartupError(f"cannot create the home {self.home}: {e.strerror}; pass a writable "
                               "--home (or set $SERVELAB_HOME)") from None
        if not os.access(self.home, os.R_OK | os.W_OK | os.X_OK):
            raise StartupError(f"the home {self.home} is not readable and writable by uid {os.getuid()}; "
                               "fix its permissions or pass another --home")
        self.home_lock.acquire(self.port)

    async def start(self) -> None:
        self.lock_home()
        try:
            await self._start_locked()
        except BaseException:
            self.home_lock.release()
            raise

    async def _start_locked(self) -> None:
        info = resolve_limits(self.limits_choice)
        if info is not None and info.mode != "rlimit":
            # Only the cgroups this home's earlier (now dead: we hold its lock) platform wrote
            # down are cleaned; another platform's instances beside them are never touched.
            info = dataclasses.replace(info, ledger=InstanceLedger(self.home / LEDGER_NAME, self.platform_id))
            with contextlib.suppress(LimitsError, OSError):
                self.stale_cleaned = cleanup_stale(info)
        self.limits_info = info
        await self._check_store()
        self.uids = UidMap(self.home)
        self.registry = FunctionRegistry(self.home / "platform.db")
        self.meter = Meter(self.home / "records", run_id=self.platform_id)
        self.backend = LocalProcessBackend(preload=self.preload, limits_info=self.limits_info)
        for cfg, _ in self.registry.list():
            self._add_service(cfg)
        if any(s.config.start_mode == "fork" for s in self.services.values()):
            await self.backend.warm_up()
        self._reconciler = asyncio.create_task(self._reconcile_loop())
        # after the services exist: events accepted before a crash run as soon as we are up
        self.event_queue = EventQueue(self.home / "events.db", max_queued=self.max_event_queue)
        self.events = EventDispatcher(self.event_queue, self.invoke, retry_delay_s=self.event_retry_delay_s,
                                      function_arn=function_arn, concurrency=self._concurrency)
        self.events.start()

    def _concurrency(self) -> dict[str, int]:
        return {name: svc.config.max_concurrency for name, svc in self.services.items()}

    async def _check_store(self, timeout_s: float = 15.0) -> None:
        """Fail start-up with one line when the model store cannot be listed."""
        try:
            await asyncio.wait_for(asyncio.to_thread(lambda: self.store().list()), timeout_s)
        except TimeoutError:
            raise StartupError(f"the model store {self.store_url} did not answer within {timeout_s:g} s; "
                               "check the URL, the network and the endpoint") from None
        except Exception as e:  # boto3/OS errors of every kind: the message is what matters here
            where = self.store_url or str(self.home / "store")
            raise StartupError(f"the model store {where} is unreachable: {type(e).__name__}: {e}; check the "
                               "URL and credentials (or leave --store unset for the local store)") from None

    async def close(self) -> None:
        events = getattr(self, "events", None)
        if events is not None:
            await events.close()  # events still running stay in the queue and run at the next start
            self.event_queue.close()
        if self._reconciler:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        await asyncio.gather(*(s.close() for s in self.services.values()), *self._background,
                             return_exceptions=True)
        await self.backend.close()
        self.meter.close()
        self.registry.close()
        self.home_lock.release()

    async def __aenter__(self) -> Platform:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _reconcile_loop(self) -> None:
        while True:
            for svc in list(self.services.values()):
                try:
                    svc.reconcile()
                except Exception:  # one function's trouble must not stop the others' reconcile
                    import logging

                    logging.getLogger(__name__).exception("reconcile failed for %s", svc.config.name)
            await asyncio.sleep(self.reconcile_interval_s)

    # ---- functions -----------------------------------------------------------------------
    def code_dir(self, name: str) -> Path:
        return self.home / "functions" / validate_name(name, what="function name") / "code"

    def _add_service(self, cfg: FunctionConfig) -> FunctionService:
        code = self.code_dir(cfg.name)
        if self.host is not None and cfg.name in self.host.cores:  # replaced: the old service leaves the host
            old = self.services.get(cfg.name)
            if old is not None:
                old.host = None
            self.host.detach(cfg.name)
        isolation = plan_isolation(home=self.home, function=cfg.name, code_dir=code if code.exists() else None,
                                   uids=self.uids, network=self.instance_network) if self.isolate else None
        svc = FunctionService(cfg, backend=self.backend, meter=self.meter, isolation=isolation,
                              home=self.home, store_url=self.store_url,
                              code_dir=code if code.exists() else None, host=self.host, peers=self._to_peer)
        self.services[cfg.name] = svc
        return svc

    def _to_peer(self, name: str, actions: list[Any]) -> None:
        """Carry out actions the host decided for another function (an eviction, a held start)."""
        svc = self.services.get(name)
        if svc is not None:
            svc._carry_out(actions)

    def store(self) -> ModelStore:
        from servelab.models.store import open_store

        return open_store(self.store_url, home=self.home)

    def resolve_model(self, model: str | None) -> str | None:
        """A store ref or name → the full ref (so a function always runs one exact model)."""
        if model is None:
            return None
        return self.store().resolve(model).ref

    async def create(self, cfg: FunctionConfig, *, code_zip: bytes | None = None) -> str:
        cfg = cfg.updated(model=await asyncio.to_thread(self.resolve_model, cfg.model))
        if code_zip:
            sha, size = await asyncio.to_thread(self._unpack_code, cfg.name, code_zip)
            cfg = cfg.updated(code_sha256=sha, code_size=size)
        if self.host is not None and cfg.memory_mb > self.host.budget_mb:
            raise ConfigError(f"MemorySize {cfg.memory_mb} MB is more than the host's whole memory budget "
                              f"({self.host.budget_mb:g} MB, --host-memory-mb): lower it or raise the budget")
        ts = self.registry.create(cfg)
        self._add_service(cfg)
        if cfg.start_mode == "fork":
            await self.backend.warm_up()
        return ts

    async def update(self, name: str, **changes: Any) -> tuple[FunctionConfig, str]:
        cfg, _ = self.registry.get(name)
        if "model" in changes:
            changes["model"] = await asyncio.to_thread(self.resolve_model, changes["model"])
        new = cfg.updated(**changes)
        ts = self.registry.update(new)
        old = self.services.pop(name, None)
        self._add_service(new)  # new requests see the new configuration at once
        self._model_meta.pop(name, None)
        if old is not None:
            # Like Lambda: requests already admitted finish on the old configuration; its
            # instances are not reused for the new one.
            self._background.add(t := asyncio.create_task(old.drain(old.config.timeout_s + 1.0)))
            t.add_done_callback(self._background.discard)
        return new, ts

    async def delete(self, name: str) -> None:
        self.registry.delete(name)
        await asyncio.to_thread(self.event_queue.drop_function, name, "the function was deleted")
        svc = self.services.pop(name, None)
        self._model_meta.pop(name, None)
        if svc is not None:
            await svc.close()
        shutil.rmtree(self.home / "functions" / name, ignore_errors=True)

    def get(self, name: str) -> tuple[FunctionConfig, str]:
        return self.registry.get(name)

    def service(self, name: str) -> FunctionService:
        try:
            return self.services[name]
        except KeyError:
            raise FunctionNotFoundError(f"Function not found: {name}", function=name) from None

    async def invoke(self, name: str, body: bytes, request_id: str | None = None) -> Invocation:
        return await self.service(name).invoke(body, request_id)

    async def model_metadata(self, name: str) -> dict[str, Any]:
        """Inputs and outputs of a function's model (inspected once, then cached)."""
        if name not in self._model_meta:
            model = self.service(name).config.model
            if not model:
                raise ConfigError(f"function {name!r} has no model")

            def inspect() -> dict[str, Any]:
                from servelab.models.onnx_info import inspect_model

                info = inspect_model(self.store().get(model))
                return {"inputs": [s.v2_metadata() for s in info.inputs],
                        "outputs": [s.v2_metadata() for s in info.outputs]}

            self._model_meta[name] = await asyncio.to_thread(inspect)
        return self._model_meta[name]

    def _unpack_code(self, name: str, code_zip: bytes) -> tuple[str, int]:
        """Unpack a Lambda deployment zip safely (no absolute paths, no '..', size-bounded)."""
        import base64
        import hashlib

        if len(code_zip) > MAX_CODE_BYTES:
            raise ConfigError(f"the code zip is {len(code_zip)} bytes; the limit is {MAX_CODE_BYTES}")
        try:
            zf = zipfile.ZipFile(io.BytesIO(code_zip))
        except zipfile.BadZipFile:
            raise ConfigError("Code.ZipFile is not a zip archive") from None
        total = 0
        for info in zf.infolist():
            parts = PurePosixPath(info.filename).parts
            if info.filename.startswith("/") or ".." in parts or "\\" in info.filename:
                raise ConfigError(f"unsafe path in the code zip: {info.filename!r}")
            total += info.file_size
            if total > 5 * MAX_CODE_BYTES:
                raise ConfigError("the code zip unpacks to more than 250 MB (Lambda's limit)")
        dest = self.code_dir(name)
        tmp = dest.with_name("code.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        zf.extractall(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return base64.b64encode(hashlib.sha256(code_zip).digest()).decode(), len(code_zip)
