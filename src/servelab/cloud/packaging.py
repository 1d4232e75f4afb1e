"""Function packages for the clouds: what gets uploaded, built from one shipped handler.

Every package holds the same two files from ``servelab/cloud/runtime/``: ``servelab_infer.py``
(load an ONNX model, answer Open Inference Protocol requests) and an entry point —
``lambda_function.py`` (AWS Lambda) or ``main.py`` (Google Cloud Functions / Cloud Run). The
local platform runs the very same files in servelab's tests.

AWS Lambda packages (real limits, docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html):

- ``zip``: uploaded inline with CreateFunction — at most 50 MB zipped;
- ``zip-s3``: the same zip uploaded to S3 first — allowed while the function and its layers
  stay within 250 MB unzipped;
- ``image``: a container image (up to 10 GB) for anything larger: servelab writes the build
  context (Dockerfile, handler, requirements, model) and you push it to ECR.

onnxruntime and numpy (about 150 MB unzipped) are not in the zip: they come from a layer
(``layers``) or, for the image, from ``requirements.txt``. :func:`dependency_bytes` measures them
from the installed wheels so the 250 MB check counts them.

Units: bytes (``*_bytes``).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal

from servelab.errors import ConfigError, LimitsError

RUNTIME_DIR = Path(__file__).parent / "runtime"
CORE_FILE = "servelab_infer.py"
LAMBDA_ENTRY = "lambda_function.py"
LAMBDA_HANDLER = "lambda_function.handler"
GCP_ENTRY = "main.py"
GCP_ENTRY_POINT = "predict"
BUNDLED_MODEL_NAME = "model.onnx"

MB = 1024 * 1024
ZIP_DIRECT_UPLOAD_MAX_BYTES = 50 * MB  # CreateFunction's Code.ZipFile
UNZIPPED_MAX_BYTES = 250 * MB  # function code + all layers, unzipped
IMAGE_MAX_BYTES = 10 * 1024 * MB  # a container image, uncompressed
GCF_SOURCE_MAX_BYTES = 100 * MB  # Cloud Functions source upload (zipped), per its quotas page

ModelSource = Literal["s3", "bundled", "gcs"]
LambdaPackageKind = Literal["zip", "zip-s3", "image"]
DEPENDENCIES = ("onnxruntime", "numpy")
LAMBDA_BASE_IMAGE = "public.ecr.aws/lambda/python:3.11"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dependency_bytes(packages: tuple[str, ...] = DEPENDENCIES) -> int:
    """Unzipped size of the installed ``packages`` (from their wheels' RECORD): what a layer with
    them adds to the function's 250 MB. Linux x86-64 manylinux wheels are within a few MB."""
    total = 0
    for name in packages:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for f in dist.files or ():
            total += f.size or 0
    return total


def requirements_txt(*, extra: tuple[str, ...] = ()) -> str:
    """Pinned to the versions servelab was tested with here, so the cloud runs the same code."""
    lines = []
    for name in DEPENDENCIES:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(name)
    return "\n".join([*lines, *extra]) + "\n"


def choose_lambda_kind(zipped_bytes: int, unzipped_bytes: int) -> LambdaPackageKind:
    """The cheapest upload that fits AWS's limits."""
    if unzipped_bytes > UNZIPPED_MAX_BYTES:
        return "image"
    if zipped_bytes > ZIP_DIRECT_UPLOAD_MAX_BYTES:
        return "zip-s3"
    return "zip"


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


@dataclass(frozen=True)
class LambdaPackage:
    """A built Lambda package: the zip (for ``zip``/``zip-s3``), its sizes and the environment
    the handler needs to find the model."""

    kind: LambdaPackageKind
    zip_bytes: bytes
    zipped_bytes: int
    unzipped_bytes: int  # the zip's content + the dependency layer
    model_sha256: str
    model_bytes: int
    env: dict[str, str] = field(default_factory=dict)
    handler: str = LAMBDA_HANDLER
    notes: tuple[str, ...] = ()

    @property
    def code_sha256(self) -> str:
        return hashlib.sha256(self.zip_bytes).hexdigest()


def build_lambda_package(model_path: str | os.PathLike, *, model_source: ModelSource = "s3",
                         layer_bytes: int | None = None) -> LambdaPackage:
    """The zip for ``model_path``: the handler, and the model itself when ``bundled``.

    ``layer_bytes``: the unzipped size of the layers the function will use (default: the
    installed onnxruntime + numpy). The result's ``kind`` says how it must be uploaded.
    """
    model = Path(model_path)
    if not model.is_file():
        raise ConfigError(f"model file {model} does not exist")
    if model_source not in ("s3", "bundled"):
        raise ConfigError(f"model_source for AWS Lambda must be 's3' or 'bundled' (got {model_source!r})")
    files = {CORE_FILE: (RUNTIME_DIR / CORE_FILE).read_bytes(),
             LAMBDA_ENTRY: (RUNTIME_DIR / LAMBDA_ENTRY).read_bytes()}
    env = {"MODEL_NAME": model.stem}
    if model_source == "bundled":
        files[BUNDLED_MODEL_NAME] = model.read_bytes()
        env["MODEL_PATH"] = BUNDLED_MODEL_NAME
    data = _zip(files)
    deps = dependency_bytes() if layer_bytes is None else layer_bytes
    unzipped = sum(len(v) for v in files.values()) + deps
    kind = choose_lambda_kind(len(data), unzipped)
    model_size = model.stat().st_size
    notes = [f"package {kind}: {len(data) / MB:.1f} MB zipped, {unzipped / MB:.1f} MB unzipped "
             f"(incl. {deps / MB:.0f} MB of onnxruntime+numpy in a layer)"]
    if kind == "image":
        notes.append(f"over Lambda's {UNZIPPED_MAX_BYTES // MB} MB unzipped limit: build a container image "
                     "(servelab cloud image-context) and deploy it with --image-uri")
    return LambdaPackage(kind=kind, zip_bytes=data, zipped_bytes=len(data), unzipped_bytes=unzipped,
                         model_sha256=sha256_file(model), model_bytes=model_size, env=env, notes=tuple(notes))


def write_lambda_image_context(out_dir: str | os.PathLike, model_path: str | os.PathLike, *,
                               model_source: ModelSource = "bundled",
                               base_image: str = LAMBDA_BASE_IMAGE) -> Path:
    """A Docker build context for a Lambda container image (for packages over the zip limits).

    ``docker build -t IMAGE DIR`` then push to ECR; deploy with ``PackageType=Image``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(model_path)
    for name in (CORE_FILE, LAMBDA_ENTRY):
        shutil.copyfile(RUNTIME_DIR / name, out / name)
    (out / "requirements.txt").write_text(requirements_txt())
    copy_model = ""
    env_line = f'ENV MODEL_NAME="{model.stem}"\n'
    if model_source == "bundled":
        shutil.copyfile(model, out / BUNDLED_MODEL_NAME)
        copy_model = f"COPY {BUNDLED_MODEL_NAME} ${{LAMBDA_TASK_ROOT}}/\n"
        env_line += f'ENV MODEL_PATH="{BUNDLED_MODEL_NAME}"\n'
    (out / "Dockerfile").write_text(
        f"# Built by servelab: the AWS Lambda Python base image, onnxruntime, the model handler.\n"
        f"FROM {base_image}\n"
        "COPY requirements.txt ${LAMBDA_TASK_ROOT}/\n"
        "RUN pip install --no-cache-dir -r ${LAMBDA_TASK_ROOT}/requirements.txt\n"
        f"COPY {CORE_FILE} {LAMBDA_ENTRY} ${{LAMBDA_TASK_ROOT}}/\n"
        f"{copy_model}{env_line}"
        f'CMD ["{LAMBDA_HANDLER}"]\n')
    return out


def layer_build_command(target_dir: str, *, architecture: Literal["x86_64", "arm64"] = "x86_64",
                        python: str = "3.11") -> list[str]:
    """The pip command that builds the onnxruntime + numpy layer for Lambda's Linux (run it, zip
    ``target_dir``'s parent, publish it with ``aws lambda publish-layer-version``)."""
    plat = "manylinux2014_x86_64" if architecture == "x86_64" else "manylinux2014_aarch64"
    return ["pip", "install", "--platform", plat, "--implementation", "cp", "--python-version", python,
            "--only-binary=:all:", "--target", f"{target_dir}/python", *requirements_txt().split()]


@dataclass(frozen=True)
class GcpSource:
    """Source for Cloud Functions (2nd gen) or Cloud Run: a folder and its zip."""

    directory: Path
    zip_bytes: bytes
    entry_point: str
    model_sha256: str
    env: dict[str, str]


def write_gcp_source(out_dir: str | os.PathLike, model_path: str | os.PathLike, *,
                     model_source: ModelSource = "bundled", model_uri: str | None = None,
                     container: bool = False) -> GcpSource:
    """``main.py`` + ``servelab_infer.py`` + ``requirements.txt`` (+ the model when bundled), as the
    study deployed to GCP. ``container`` adds a Dockerfile serving ``predict`` with
    functions-framework (Cloud Run); Cloud Functions builds the source itself."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(model_path)
    if not model.is_file():
        raise ConfigError(f"model file {model} does not exist")
    for name in (CORE_FILE, GCP_ENTRY):
        shutil.copyfile(RUNTIME_DIR / name, out / name)
    env = {"MODEL_NAME": model.stem}
    extra = ["functions-framework>=3.5"]
    if model_source == "bundled":
        shutil.copyfile(model, out / BUNDLED_MODEL_NAME)
        env["MODEL_PATH"] = BUNDLED_MODEL_NAME
    elif model_source == "gcs":
        if not model_uri or not model_uri.startswith("gs://"):
            raise ConfigError("model_source 'gcs' needs model_uri gs://bucket/key")
        env["MODEL_GCS_URI"] = model_uri
        extra.append("google-cloud-storage>=2")
    else:
        raise ConfigError(f"model_source for GCP must be 'bundled' or 'gcs' (got {model_source!r})")
    (out / "requirements.txt").write_text(requirements_txt(extra=tuple(extra)))
    if container:
        (out / "Dockerfile").write_text(
            "# Built by servelab: Cloud Run serves main.predict with functions-framework on $PORT.\n"
            "FROM python:3.11-slim\nWORKDIR /app\nCOPY requirements.txt .\n"
            "RUN pip install --no-cache-dir -r requirements.txt\nCOPY . .\n"
            + "".join(f'ENV {k}="{v}"\n' for k, v in env.items())
            + f'CMD exec functions-framework --target={GCP_ENTRY_POINT} --port=${{PORT:-8080}}\n')
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    data = _zip(files)
    if len(data) > GCF_SOURCE_MAX_BYTES and not container:
        raise LimitsError(f"the source is {len(data) / MB:.0f} MB zipped, over Cloud Functions' "
                          f"{GCF_SOURCE_MAX_BYTES // MB} MB: use model_source 'gcs' or Cloud Run")
    return GcpSource(directory=out, zip_bytes=data, entry_point=GCP_ENTRY_POINT,
                     model_sha256=sha256_file(model), env=env)
