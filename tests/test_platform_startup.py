"""Clear start-up errors and safe exposure: one line that says what to fix, a non-zero exit, no
traceback; environment values hidden from callers without the token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from platform_harness import RunningPlatform, free_port, zip_code


def _up(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servelab.cli", "platform", "up", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _one_clear_line(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text


def test_a_busy_port_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = _up("--home", str(tmp_path / "h"), "--port", str(port))
    _one_clear_line(done, f"cannot listen on 127.0.0.1:{port}", "pass another --port")
    # the home lock was released: the same home starts fine on a free port afterwards
    assert "in use by platform" not in done.stderr


def test_an_unusable_home_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = _up("--home", str(blocker / "home"), "--port", str(free_port()))
    _one_clear_line(done, "cannot create the home", "--home")


def test_an_unreachable_store_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("boto3")
    done = _up("--home", str(tmp_path / "h"), "--port", str(free_port()), "--store", "s3://no-bucket/models",
               env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "x",
                    "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"},
               timeout=90)
    _one_clear_line(done, "model store s3://no-bucket/models", "unreachable")


def test_binding_beyond_loopback_needs_a_token_or_an_explicit_flag(tmp_path: Path) -> None:
    done = _up("--home", str(tmp_path / "h"), "--host", "0.0.0.0", "--port", str(free_port()))
    _one_clear_line(done, "without a token", "--allow-unauthenticated")


def test_a_missing_model_file_says_so(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "servelab.cli", "deploy", "f", "--model",
                           str(tmp_path / "missing.onnx"), "--platform", f"http://127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=60)
    _one_clear_line(done, f"model file {tmp_path / 'missing.onnx'} not found")
    assert "invalid model name" not in done.stderr


def test_environment_values_are_hidden_from_callers_without_the_token(tmp_path: Path) -> None:
    with RunningPlatform(tmp_path / "home", token="s3cret") as p:
        owner = p.lambda_client(key="s3cret")
        owner.create_function(FunctionName="f", Role="r", Handler="app.h", MemorySize=256,
                              Code={"ZipFile": zip_code({"app.py": "def h(e, c):\n    return {}\n"})},
                              Environment={"Variables": {"API_KEY": "hunter2"}})
        assert owner.get_function(FunctionName="f")["Configuration"]["Environment"]["Variables"]["API_KEY"] == \
            "hunter2"
        for path in ("/2015-03-31/functions/f", "/2015-03-31/functions/f/configuration", "/2015-03-31/functions/"):
            with urllib.request.urlopen(p.url + path, timeout=10) as r:
                text = r.read().decode()
            assert "hunter2" not in text and "API_KEY" in text, (path, text)
        anon = p.lambda_client(key="wrong")
        variables = anon.get_function(FunctionName="f")["Configuration"]["Environment"]["Variables"]
        assert variables["API_KEY"].startswith("(hidden") and "SERVELAB_RUNTIME" in variables
        assert json.loads(urllib.request.urlopen(p.url + "/servelab/v1/info").read())["token_required"] is True
        # an event's error output is the function's, and may hold its secrets too
        owner.create_function(FunctionName="g", Role="r", Handler="app.h", MemorySize=256,
                              Code={"ZipFile": zip_code({"app.py": "def h(e, c):\n    raise KeyError('hunter2')\n"})})
        owner.put_function_event_invoke_config(FunctionName="g", MaximumRetryAttempts=0)
        owner.invoke(FunctionName="g", InvocationType="Event", Payload=b"{}")
        url = p.url + "/servelab/v1/functions/g/events"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and '"failed"' not in urllib.request.urlopen(url).read().decode():
            time.sleep(0.05)
        events = urllib.request.urlopen(url).read().decode()
        assert '"failed"' in events and "hunter2" not in events and "hidden" in events
        req = urllib.request.Request(url, headers={"Authorization": "Bearer s3cret"})
        assert "hunter2" in urllib.request.urlopen(req).read().decode()
