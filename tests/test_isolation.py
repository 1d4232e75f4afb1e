"""Function isolation, for real: a handler probes what it can see and touch on a platform that
runs as root (the CI machine does). Skipped where the tests do not run as root: then the platform
cannot isolate, which ``servelab platform info`` says."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from platform_harness import RunningPlatform, zip_code
from servelab.platform.isolation import UidMap, instance_env, mode, peer_uid

PROBE = r'''
import os, socket, urllib.request

def probe(event, context):
    out = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "env": dict(os.environ)}
    home, pid, url = event["home"], event["pid"], event["url"]
    checks = {
        "read_db": lambda: open(os.path.join(home, "platform.db"), "rb").read(1),
        "read_other_code": lambda: open(os.path.join(home, "functions", "other", "code", "app.py")).read(),
        "read_records": lambda: os.listdir(os.path.join(home, "records")),
        "platform_environ": lambda: open(f"/proc/{pid}/environ", "rb").read(16),
        "signal_platform": lambda: os.kill(pid, 0),
        "write_tmp": lambda: open("/tmp/mine", "w").write(event.get("tag", "x")),
        "read_tmp": lambda: open("/tmp/mine").read(),
        "own_code": lambda: open(os.path.join(os.path.dirname(__file__), "app.py")).read(8),
        "import_stdlib": lambda: __import__("csv").__name__,
        "delete_other": lambda: urllib.request.urlopen(urllib.request.Request(
            url + "/2015-03-31/functions/other", method="DELETE"), timeout=5).status,
        "invoke_other": lambda: urllib.request.urlopen(urllib.request.Request(
            url + "/2015-03-31/functions/other/invocations", data=b'{"tag": "y"}', method="POST"), timeout=20).status,
    }
    for name, fn in checks.items():
        try:
            out[name] = "ok:" + repr(fn())
        except Exception as e:
            out[name] = "denied:" + type(e).__name__
    return out
'''

root_only = pytest.mark.skipif(mode() != "root", reason="isolation needs the platform to run as root")


def _deploy(p: RunningPlatform, name: str, **env: str) -> None:
    p.lambda_client().create_function(
        FunctionName=name, Role="r", Handler="app.probe", MemorySize=256, Timeout=20,
        Code={"ZipFile": zip_code({"app.py": PROBE})}, Environment={"Variables": env})


def _probe(p: RunningPlatform, name: str, **extra: object) -> dict:
    event = {"home": str(p.home), "pid": os.getpid(), "url": p.url, **extra}
    r = p.lambda_client().invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return json.loads(r["Payload"].read())


@root_only
@pytest.mark.timeout(180)
def test_a_handler_runs_as_its_own_uid_and_sees_nothing_of_the_platform_or_other_functions(tmp_path) -> None:
    os.environ["SERVELAB_TEST_SECRET"] = "platform-secret"  # must not reach any instance
    try:
        with RunningPlatform(tmp_path / "home") as p:
            _deploy(p, "probe", MINE="probe-only")
            _deploy(p, "other", THEIRS="other-only")
            out = _probe(p, "probe", tag="probe")
            other = _probe(p, "other", tag="other")
            uids = json.loads((p.home / "uids.json").read_text())
    finally:
        del os.environ["SERVELAB_TEST_SECRET"]
    assert out["uid"] != 0 and out["uid"] == out["gid"] == uids["probe"] and out["groups"] == []
    assert other["uid"] == uids["other"] != out["uid"]
    for denied in ("read_db", "read_other_code", "read_records", "platform_environ", "signal_platform",
                   "delete_other"):
        assert out[denied].startswith("denied:"), (denied, out[denied])
    assert out["write_tmp"].startswith("ok:") and out["read_tmp"] == "ok:'probe'"
    assert other["read_tmp"] == "ok:'other'"  # each instance has its own /tmp
    assert out["own_code"].startswith("ok:") and out["import_stdlib"] == "ok:'csv'"
    assert out["invoke_other"] == "ok:200"  # invoking is allowed; managing is not
    assert out["env"].get("MINE") == "probe-only" and "THEIRS" not in out["env"]
    assert not any("platform-secret" in v for v in out["env"].values())


@root_only
@pytest.mark.timeout(180)
def test_instance_network_none_has_no_route_to_the_platform(tmp_path) -> None:
    from aiohttp import web  # noqa: F401  (the harness's server)

    with RunningPlatform(tmp_path / "home") as p:
        p.platform.instance_network = "none"  # before any function is deployed
        _deploy(p, "probe")
        out = _probe(p, "probe")
    assert out["uid"] != 0
    assert out["delete_other"].startswith("denied:") and out["invoke_other"].startswith("denied:")
    assert out["write_tmp"].startswith("ok:")


def test_instance_environment_keeps_only_what_python_needs(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
    monkeypatch.setenv("SERVELAB_TOKEN", "t0ken")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    env = instance_env({"FOO": "bar"})
    assert "AWS_SECRET_ACCESS_KEY" not in env and "SERVELAB_TOKEN" not in env
    assert env["PYTHONPATH"] == "/somewhere" and env["FOO"] == "bar" and env["HOME"] == "/tmp"


def test_uids_are_allocated_once_per_function_and_kept(tmp_path) -> None:
    a = UidMap(tmp_path, (500_000, 500_002))
    assert [a.uid("f"), a.uid("g"), a.uid("f")] == [500_000, 500_001, 500_000]
    b = UidMap(tmp_path, (500_000, 500_002))
    assert b.uid("g") == 500_001 and b.uid("h") == 500_002
    with pytest.raises(Exception, match="no free uid"):
        b.uid("i")
    assert b.is_function_uid(500_001) and not b.is_function_uid(0)


def test_peer_uid_finds_the_owner_of_a_loopback_connection() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname())
    conn, addr = srv.accept()
    try:
        assert peer_uid(addr[0], addr[1]) == os.getuid()
        assert peer_uid("127.0.0.1", 1) is None
    finally:
        for s in (conn, cli, srv):
            s.close()


def test_platform_info_says_how_instances_are_isolated(tmp_path) -> None:
    with RunningPlatform(tmp_path / "home") as p, urllib.request.urlopen(f"{p.url}/servelab/v1/info") as r:
        info = json.loads(r.read())
    assert info["isolation"]["mode"] == mode()
    assert Path(p.home).exists()
