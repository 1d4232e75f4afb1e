"""Packaging limits, the Lambda image context, AWS's REPORT line as AWS writes it, and redaction."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

from servelab.cloud.packaging import (
    MB,
    build_lambda_package,
    choose_lambda_kind,
    write_lambda_image_context,
)
from servelab.cloud.report_line import cloud_request_id, facts_from_log, record_from_invoke
from servelab.cloud.safety import redact


def test_package_kind_follows_awss_zip_and_unzipped_limits() -> None:
    assert choose_lambda_kind(50 * MB, 250 * MB) == "zip"
    assert choose_lambda_kind(50 * MB + 1, 250 * MB) == "zip-s3"
    assert choose_lambda_kind(10 * MB, 250 * MB + 1) == "image"


def test_a_model_too_big_for_a_zip_asks_for_an_image(tiny_models) -> None:
    pkg = build_lambda_package(tiny_models["noop"], model_source="bundled", layer_bytes=250 * MB)
    assert pkg.kind == "image" and any("container image" in n for n in pkg.notes)


def test_zip_bytes_are_reproducible_and_s3_mode_leaves_the_model_out(tiny_models) -> None:
    a = build_lambda_package(tiny_models["tiny-mlp"], model_source="bundled")
    b = build_lambda_package(tiny_models["tiny-mlp"], model_source="bundled")
    assert a.zip_bytes == b.zip_bytes and a.env["MODEL_PATH"] == "model.onnx"
    s3 = build_lambda_package(tiny_models["tiny-mlp"], model_source="s3")
    with zipfile.ZipFile(io.BytesIO(s3.zip_bytes)) as zf:
        assert sorted(zf.namelist()) == ["lambda_function.py", "servelab_infer.py"]
    assert "MODEL_PATH" not in s3.env


def test_image_context_builds_from_the_lambda_base_image(tiny_models, tmp_path: Path) -> None:
    d = write_lambda_image_context(tmp_path / "img", tiny_models["noop"])
    docker = (d / "Dockerfile").read_text()
    assert docker.startswith("# Built by servelab") and 'CMD ["lambda_function.handler"]' in docker
    assert "onnxruntime==" in (d / "requirements.txt").read_text() and (d / "model.onnx").is_file()


AWS_TAIL = (
    "START RequestId: 8f5b2c1e-0d5e-4c1b-9a3e-2b7c1f0e9d11 Version: $LATEST\n"
    "SERVELAB_INIT fetch_ms=812.40 load_ms=95.10 source=s3\n"
    "END RequestId: 8f5b2c1e-0d5e-4c1b-9a3e-2b7c1f0e9d11\n"
    "REPORT RequestId: 8f5b2c1e-0d5e-4c1b-9a3e-2b7c1f0e9d11\tDuration: 61.83 ms\tBilled Duration: 62 ms\t"
    "Memory Size: 1769 MB\tMax Memory Used: 143 MB\tInit Duration: 1204.57 ms\t\n")


def test_report_line_as_aws_writes_it_becomes_record_fields() -> None:
    facts = facts_from_log(AWS_TAIL)
    assert facts == {"duration_ms": 61.83, "billed_ms": 62.0, "memory_mb": 1769, "max_memory_used_mb": 143.0,
                     "init_ms": 1204.57, "cold": True, "start_kind": "cold", "init_fetch_ms": 812.4,
                     "init_load_ms": 95.1}
    assert cloud_request_id(AWS_TAIL) == "8f5b2c1e-0d5e-4c1b-9a3e-2b7c1f0e9d11"
    warm = AWS_TAIL.replace("\tInit Duration: 1204.57 ms", "").replace("SERVELAB_INIT fetch_ms=812.40 load_ms=95.10 "
                                                                       "source=s3\n", "")
    assert facts_from_log(warm)["cold"] is False and "init_ms" not in facts_from_log(warm)
    rec = record_from_invoke(run_id="r", request_id="q", target="f", scheduled_s=1.0, sent_s=1.0, completed_s=1.5,
                             status="ok", http_status=200, error=None, log_tail=AWS_TAIL,
                             facts_header='{"duration_ms": 1.0, "instance_id": "i-1"}')
    assert rec.duration_ms == 61.83 and rec.instance_id == "i-1" and rec.latency_ms == 500.0  # REPORT wins
    assert base64.b64encode(AWS_TAIL.encode())  # what LogResult carries


def test_redact_masks_keys_tokens_and_signatures() -> None:
    text = ("aws_secret_access_key = abc/DEF+123 Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, "
            "Signature=0123456789abcdef0123456789abcdef")
    out = redact(text)
    assert "abc/DEF+123" not in out and "0123456789abcdef0123" not in out and "AWS4-HMAC" not in out
