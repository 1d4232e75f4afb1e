"""One platform per home, and start-up clean-up that touches only its own home's instances.

Real ``servelab platform up`` processes on loopback, killed with SIGKILL where the test says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from platform_harness import PlatformProcess, free_port, zip_code
from servelab.platform.limits import detect

ECHO = """
import time

def echo(event, context):
    time.sleep(event.get("sleep_s", 0))
    return {"event": event}
"""
needs_cgroup = pytest.mark.skipif(detect().mode == "rlimit", reason="instance cgroups need a writable cgroup")


def _deploy_and_warm(p: PlatformProcess, name: str = "echo") -> dict:
    p.lambda_client().create_function(FunctionName=name, Role="r", Handler="app.echo", MemorySize=256,
                                      Code={"ZipFile": zip_code({"app.py": ECHO})})
    return _invoke(p, name)


def _invoke(p: PlatformProcess, name: str = "echo", body: bytes = b'{"x": 1}') -> dict:
    req = urllib.request.Request(f"{p.url}/2015-03-31/functions/{name}/invocations", data=body,
                                 method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200
        return json.loads(r.headers["X-Servelab-Facts"])


def _instance_pids(p: PlatformProcess, name: str = "echo") -> list[int]:
    with urllib.request.urlopen(f"{p.url}/servelab/v1/functions/{name}/instances", timeout=10) as r:
        return [i["pid"] for i in json.loads(r.read())["instances"] if i["pid"]]


def _invoke_ignoring_errors(p: PlatformProcess, body: bytes) -> None:
    with contextlib.suppress(OSError):  # the platform is killed while this waits: no answer comes
        _invoke(p, "echo", body)


def _states(p: PlatformProcess, name: str = "echo") -> list[str]:
    with urllib.request.urlopen(f"{p.url}/servelab/v1/functions/{name}/instances", timeout=10) as r:
        return [i["state"] for i in json.loads(r.read())["instances"]]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by its parent) is dead for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(cond, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_a_second_platform_on_the_same_home_refuses_at_once(tmp_path: Path) -> None:
    with PlatformProcess(tmp_path / "a") as a:
        third = PlatformProcess(tmp_path / "a", port=free_port())
        t0 = time.monotonic()
        done = subprocess.run(third.command(), capture_output=True, text=True, timeout=10)
        elapsed = time.monotonic() - t0
        assert done.returncode != 0
        msg = done.stdout + done.stderr
        assert f"home {tmp_path / 'a'} is in use by platform pid {a.proc.pid} on port {a.port}" in " ".join(
            msg.split()), msg
        assert "Traceback" not in msg
        assert elapsed < 10
        # the first one is untouched
        with urllib.request.urlopen(f"{a.url}/servelab/v1/info", timeout=5) as r:
            assert json.loads(r.read())["home"] == str(tmp_path / "a")


@needs_cgroup
def test_another_homes_platform_never_kills_our_instances_and_ours_are_cleaned_after_a_crash(
        tmp_path: Path) -> None:
    a = PlatformProcess(tmp_path / "a").start()
    b = PlatformProcess(tmp_path / "b")
    try:
        first = _deploy_and_warm(a)
        (a_pid,) = _instance_pids(a)
        b.start()  # platform B, another home: its start-up clean-up must leave A's instance alone
        _deploy_and_warm(b)
        (b_pid,) = _instance_pids(b)
        assert _alive(a_pid)
        again = _invoke(a)
        assert again["instance_id"] == first["instance_id"] and again["start_kind"] == "warm"

        # A dies without cleaning up while its instance executes a long request: the instance
        # outlives it (an idle one would exit when its socket closes; a busy or hung one does not)
        threading.Thread(target=_invoke_ignoring_errors, args=(a, b'{"sleep_s": 60}'), daemon=True).start()
        assert _wait(lambda: _states(a) == ["busy"])
        a.kill()
        time.sleep(0.5)
        assert _alive(a_pid), "the orphan should outlive its platform (else this test proves nothing)"
        a2 = PlatformProcess(tmp_path / "a").start()  # A's home again: cleans what A left, only that
        try:
            assert _wait(lambda: not _alive(a_pid)), f"A's orphan {a_pid} survived A's restart"
            assert _alive(b_pid), "B's instance was killed by A's restart"
            assert _invoke(b)["start_kind"] == "warm"
            assert _invoke(a2)["start_kind"] == "cold"
        finally:
            a2.stop()
    finally:
        a.stop()
        b.stop()
