"""A real platform on a loopback port, run in a background thread for tests and benchmarks."""

from __future__ import annotations

import asyncio
import io
import threading
import zipfile
from pathlib import Path
from typing import Any

from aiohttp import web

from servelab.platform.api import make_app
from servelab.platform.server import Platform


class RunningPlatform:
    def __init__(self, home: Path, *, token: str | None = None, limits: str = "auto",
                 max_body_bytes: int = 6 * 1024 * 1024, **platform_kwargs: Any) -> None:
        self.home = home
        self.platform_kwargs = platform_kwargs
        self.token = token
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.port = 0
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.platform: Platform | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.platform = Platform(self.home, limits=self.limits, **self.platform_kwargs)  # type: ignore[arg-type]
            runner = web.AppRunner(make_app(self.platform, token=self.token, max_body_bytes=self.max_body_bytes))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            self.platform.home_lock.set_port(self.port)
        except BaseException as e:
            self._error = e
            self._started.set()
            raise
        self._started.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> RunningPlatform:
        self._thread.start()
        self._started.wait(60)
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def __enter__(self) -> RunningPlatform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def lambda_client(self, key: str = "x") -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("lambda", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=key,
                            aws_secret_access_key="x",
                            config=Config(retries={"total_max_attempts": 1}, read_timeout=120))


def zip_code(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PlatformProcess:
    """``servelab platform up`` as a real child process, for tests that kill or restart it."""

    def __init__(self, home: Path, *, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.home = home
        self.port = port or free_port()
        self.args = args
        self.proc: Any = None
        self.log = home.parent / f"platform-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        import sys

        return [sys.executable, "-m", "servelab.cli", "platform", "up", "--home", str(self.home),
                "--port", str(self.port), *self.args]

    def start(self, timeout_s: float = 60.0) -> PlatformProcess:
        import subprocess
        import time
        import urllib.request

        self.home.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - the child keeps writing after we return
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"platform exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/servelab/v1/info", timeout=2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"platform did not answer within {timeout_s} s: {self.log.read_text()}")

    def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except Exception:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> PlatformProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def lambda_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("lambda", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="x",
                            aws_secret_access_key="x",
                            config=Config(retries={"total_max_attempts": 1}, read_timeout=120))
