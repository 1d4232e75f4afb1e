"""``servelab models push/pull/ls/rm`` against a local store, and once against S3 on loopback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from servelab.cli import app
from servelab.errors import InvalidModelError, RefNotFoundError

SERVELAB = Path(sys.executable).parent / "servelab"
runner = CliRunner()


def servelab(*args: str | os.PathLike[str]) -> str:
    """Run a command in-process and return its stdout; fail the test with its output if it failed."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_prints_the_ref_and_ls_shows_it(tiny_models: dict[str, Path], _isolated_home: Path) -> None:
    ref = servelab("models", "push", tiny_models["tiny-mlp"], "--name", "mlp").strip()
    assert ref == f"mlp@sha256:{digest(tiny_models['tiny-mlp'])}"
    assert (_isolated_home / "store" / "refs" / "mlp").is_dir()  # the default store is under home
    out = servelab("models", "ls")
    assert "mlp" in out and f"sha256:{digest(tiny_models['tiny-mlp'])[:12]}" in out
    assert "<0.01" in out  # a 3 kB model, in MB


def test_pull_copies_the_verified_file(tiny_models: dict[str, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ref = servelab("models", "push", tiny_models["tiny-cnn"], "--name", "cnn").strip()
    out = tmp_path / "deep" / "copy.onnx"
    assert servelab("models", "pull", ref, "--out", out).strip() == str(out)
    assert out.read_bytes() == tiny_models["tiny-cnn"].read_bytes()
    into_dir = tmp_path / "dir"
    into_dir.mkdir()
    assert servelab("models", "pull", "cnn", "-o", into_dir).strip() == str(into_dir / "cnn.onnx")
    monkeypatch.chdir(tmp_path)
    servelab("models", "pull", ref[: len("cnn@sha256:") + 12])
    assert (tmp_path / "cnn.onnx").read_bytes() == tiny_models["tiny-cnn"].read_bytes()
    assert sorted(p.name for p in into_dir.iterdir()) == ["cnn.onnx"]  # no temp file left behind


def test_rm_removes_one_version_or_a_whole_name(tiny_models: dict[str, Path]) -> None:
    old = servelab("models", "push", tiny_models["tiny-mlp"], "--name", "m").strip()
    new = servelab("models", "push", tiny_models["tiny-cnn"], "--name", "m").strip()
    other = servelab("models", "push", tiny_models["noop"], "--name", "other").strip()
    assert servelab("models", "rm", new) == f"removed {new}\n"
    assert servelab("models", "ls", "m").count("sha256:") == 1
    assert servelab("models", "push", tiny_models["tiny-cnn"], "--name", "m").strip() == new
    assert servelab("models", "rm", "m").splitlines() == [f"removed {new}", f"removed {old}"]
    listed = servelab("models", "ls")
    assert f"sha256:{other[-64:][:12]}" in listed and " m " not in listed


def test_ls_name_filters_and_says_when_empty(tiny_models: dict[str, Path]) -> None:
    assert "no models in file://" in servelab("models", "ls")
    servelab("models", "push", tiny_models["noop"], "--name", "a")
    servelab("models", "push", tiny_models["noop"], "--name", "b")
    out = servelab("models", "ls", "a")
    assert " a " in out and " b " not in out
    assert "no versions of 'zzz'" in servelab("models", "ls", "zzz")


def test_store_option_and_env_var_choose_the_store(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    servelab("models", "push", tiny_models["noop"], "--name", "flagged", "--store", tmp_path / "s1")
    assert (tmp_path / "s1" / "refs" / "flagged").is_dir()
    monkeypatch.setenv("SERVELAB_STORE", (tmp_path / "s2").as_uri())
    servelab("models", "push", tiny_models["noop"], "--name", "env")
    assert (tmp_path / "s2" / "refs" / "env").is_dir()
    assert "flagged" not in servelab("models", "ls")
    assert "flagged" in servelab("models", "ls", "--store", tmp_path / "s1")


def test_library_errors_reach_the_cli_as_servelab_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"no")
    assert isinstance(runner.invoke(app, ["models", "push", str(bad), "--name", "x"]).exception,
                      InvalidModelError)
    assert isinstance(runner.invoke(app, ["models", "pull", "absent"]).exception, RefNotFoundError)


def test_errors_exit_2_with_a_message_that_says_what_to_fix(tmp_path: Path) -> None:
    bad = tmp_path / "weights.pkl"
    bad.write_bytes(b"\x80\x04\x95 a pickle")
    env = {**os.environ, "SERVELAB_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    push = subprocess.run([SERVELAB, "models", "push", bad, "--name", "m"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert push.returncode == 2 and "not an ONNX model" in push.stderr, push
    rm = subprocess.run([SERVELAB, "models", "rm", "../etc"], capture_output=True, text=True, env=env,
                        timeout=60)
    assert rm.returncode == 2 and "invalid model name '../etc'" in rm.stderr, rm


# -- S3 -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_bucket_url() -> Iterator[tuple[str, str]]:
    """A moto S3 server on loopback with one bucket: (endpoint, s3://bucket/prefix)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                     "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
            mp.setenv(k, v)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        bucket = f"cli-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        try:
            yield endpoint, f"s3://{bucket}/models"
        finally:
            server.stop()


def test_push_ls_pull_rm_against_s3(
    s3_bucket_url: tuple[str, str], tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    endpoint, url = s3_bucket_url
    s3 = ("--store", url, "--endpoint-url", endpoint)
    ref = servelab("models", "push", tiny_models["tiny-mlp"], "--name", "mlp", *s3).strip()
    assert ref == f"mlp@sha256:{digest(tiny_models['tiny-mlp'])}"
    assert url in servelab("models", "ls", *s3)
    out = tmp_path / "m.onnx"
    servelab("models", "pull", "mlp", "--out", out, *s3)
    assert out.read_bytes() == tiny_models["tiny-mlp"].read_bytes()
    assert servelab("models", "rm", "mlp", *s3) == f"removed {ref}\n"
    assert "no models" in servelab("models", "ls", *s3)
