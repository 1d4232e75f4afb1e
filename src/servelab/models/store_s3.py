"""The model store in an S3 bucket (``s3://bucket/prefix``), through boto3.

Same layout as the local store, under the prefix::

    <prefix>/blobs/sha256/<hex>          the model's bytes (multipart upload for big files)
    <prefix>/refs/<name>/<hex>.json      one JSON document per name and version

S3 makes an object visible only once its upload completes, so a crash mid-upload leaves nothing
a reader can see (an unfinished multipart upload, which a bucket lifecycle rule can expire).
A blob is written before its ref, so a visible ref always has its blob.

``get`` downloads into a local cache, ``<home>/cache/sha256/<hex>``, and serves a cached file only
after re-hashing it. boto3 finds credentials and region itself (environment, ``~/.aws``, an
instance role) and reads ``AWS_ENDPOINT_URL`` when no ``endpoint_url`` is given.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from servelab.config import validate_name
from servelab.errors import ConfigError, IntegrityError, RuntimeNotAvailableError, StoreError
from servelab.models.store_base import BaseStore, StoredModel, sha256_file, utc_now

# Bucket names as S3 allows them (3-63 of lowercase letters, digits, '.', '-').
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REF_KEY_RE = re.compile(r"refs/(?P<name>[^/]+)/(?P<hex>[0-9a-f]{64})\.json")
TMP_PREFIX = ".tmp-"
_CLIENT_LOCK = threading.Lock()


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ("bucket", "a/b/"); the prefix is "" or ends with one '/'."""
    parsed = urlparse(url)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    if parsed.scheme != "s3" or not BUCKET_RE.fullmatch(bucket) or parsed.query or parsed.fragment:
        raise ConfigError(f"store URL {url!r}: expected s3://BUCKET[/PREFIX] with a valid S3 bucket name")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ConfigError(f"store URL {url!r}: the prefix must not have empty, '.' or '..' parts")
    return bucket, f"{prefix}/" if prefix else ""


class S3Store(BaseStore):
    """A content-addressed model store under ``s3://bucket/prefix``, with a verified local cache."""

    def __init__(
        self,
        url: str,
        *,
        cache_dir: Path,
        endpoint_url: str | None = None,
        part_size_bytes: int = 64 * 2**20,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(clock=clock)
        if part_size_bytes < 5 * 2**20:
            raise ConfigError(f"part_size_bytes={part_size_bytes}: S3 parts must be at least 5 MiB")
        # 64 MiB parts: a 550 MB model moves in 9 parts, several at once, and one failed part
        # is retried alone. Files up to one part move in a single request. (boto3's 8 MiB default
        # made a 256 MiB download from moto 2x slower.)
        self.part_size_bytes = part_size_bytes
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.cache_dir = Path(cache_dir)
        self.endpoint_url = endpoint_url
        try:
            import boto3  # noqa: F401  (fail here, at open, rather than on the first call)
        except ImportError:
            raise RuntimeNotAvailableError(
                f"store {url} needs boto3: pip install 'servelab[s3]'"
            ) from None
        self._client_obj: Any = None

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    @property
    def _client(self) -> Any:
        # Made on first use: the first client of a process takes ~0.4 s (later ones ~25 ms, from
        # boto3's default session). Creating clients from that session in several threads at once
        # is not safe, hence the lock; a session per store would cost ~0.25 s each.
        with _CLIENT_LOCK:
            if self._client_obj is None:
                import boto3

                self._client_obj = boto3.client("s3", endpoint_url=self.endpoint_url)
            return self._client_obj

    def blob_key(self, hex_digest: str) -> str:
        return f"{self.prefix}blobs/sha256/{hex_digest}"

    def _ref_key(self, name: str, hex_digest: str) -> str:
        return f"{self.prefix}refs/{name}/{hex_digest}.json"

    def cache_path(self, hex_digest: str) -> Path:
        return self.cache_dir / "sha256" / hex_digest

    # -- put / get ------------------------------------------------------------------------
    def put(self, name: str, file: Path, *, validate: bool = True) -> str:
        validate_name(name, what="model name")
        file = Path(file)
        if not file.is_file():
            raise StoreError(f"cannot store {file}: no such file")
        if validate:
            from servelab.models.onnx_info import inspect_model

            inspect_model(file)
        hex_digest, size = sha256_file(file), file.stat().st_size
        key = self.blob_key(hex_digest)
        if self._object_size(key) != size:  # same bytes already there: skip the upload
            with self._errors(f"upload of {file} to s3://{self.bucket}/{key}"):
                self._client.upload_file(
                    str(file),
                    self.bucket,
                    key,
                    ExtraArgs={"Metadata": {"sha256": hex_digest}},
                    Config=self._transfer_config(),
                )
        model = self._load_ref(name, hex_digest)
        if model is None:  # same name and content again: keep the first ref (idempotent)
            model = StoredModel.make(name, hex_digest, size, self._now())
            with self._errors(f"writing ref {model.ref}"):
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self._ref_key(name, hex_digest),
                    Body=model.to_json(),
                    ContentType="application/json",
                )
        return model.ref

    def get(self, ref_or_name: str) -> Path:
        model = self.resolve(ref_or_name)
        cached = self.cache_path(model.hex)
        with contextlib.suppress(FileNotFoundError):
            if sha256_file(cached) == model.hex:
                return cached
            cached.unlink()  # the cache copy went bad; the store's copy may still be good
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=cached.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                self._download(model, f)
                f.flush()
                os.fsync(f.fileno())
                os.fchmod(f.fileno(), 0o444)
            actual = sha256_file(Path(tmp))
            if actual != model.hex:
                raise IntegrityError(
                    f"{model.ref}: s3://{self.bucket}/{self.blob_key(model.hex)} is corrupted "
                    f"(its sha256 is {actual}); it was not served. Push the original model file again "
                    "after `servelab models rm` of this ref to repair it."
                )
            os.replace(tmp, cached)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return cached

    def _download(self, model: StoredModel, f: Any) -> None:
        key = self.blob_key(model.hex)
        try:
            with self._errors(f"download of s3://{self.bucket}/{key}"):
                self._client.download_fileobj(self.bucket, key, f, Config=self._transfer_config())
        except _NotFound:
            raise IntegrityError(
                f"{model.ref}: its blob s3://{self.bucket}/{key} is missing; push the model again"
            ) from None

    # -- primitives for BaseStore ---------------------------------------------------------
    def _load_refs(self, name: str | None) -> list[StoredModel]:
        found = []
        for ref_name, hex_digest in self._ref_keys(name):
            loaded = self._load_ref(ref_name, hex_digest)
            if loaded is not None:  # deleted between listing and reading
                found.append(loaded)
        return found

    def _ref_keys(self, name: str | None) -> list[tuple[str, str]]:
        """(name, hex) of every ref under the prefix, from the key listing alone."""
        list_prefix = f"{self.prefix}refs/" + (f"{name}/" if name else "")
        keys = []
        with self._errors(f"listing s3://{self.bucket}/{list_prefix}"):
            for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=list_prefix
            ):
                for obj in page.get("Contents", []):
                    m = REF_KEY_RE.fullmatch(obj["Key"].removeprefix(self.prefix))
                    if m is None or (name is not None and m["name"] != name):
                        continue
                    try:
                        validate_name(m["name"])
                    except ValueError:
                        continue  # not written by servelab; never let it name a path
                    keys.append((m["name"], m["hex"]))
        return keys

    def _load_ref(self, name: str, hex_digest: str) -> StoredModel | None:
        key = self._ref_key(name, hex_digest)
        try:
            with self._errors(f"reading s3://{self.bucket}/{key}"):
                raw = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except _NotFound:
            return None
        return StoredModel.from_json(raw, name=name, hex_digest=hex_digest, where=f"s3://{self.bucket}/{key}")

    def _remove_refs(self, models: list[StoredModel]) -> None:
        # S3 has no lock: a put of the same bytes under another name racing this delete can
        # lose its blob. `get` then says so (IntegrityError) and a second push repairs it.
        with self._errors("deleting refs"):
            for m in models:
                self._client.delete_object(Bucket=self.bucket, Key=self._ref_key(m.name, m.hex))
            still_used = {hex_digest for _, hex_digest in self._ref_keys(None)}
            for hex_digest in {m.hex for m in models} - still_used:
                self._client.delete_object(Bucket=self.bucket, Key=self.blob_key(hex_digest))

    # -- helpers --------------------------------------------------------------------------
    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        # One size for upload parts and download ranges; several go at once (boto3's default 10).
        return TransferConfig(
            multipart_threshold=self.part_size_bytes + 1, multipart_chunksize=self.part_size_bytes
        )

    def _object_size(self, key: str) -> int | None:
        try:
            with self._errors(f"checking s3://{self.bucket}/{key}"):
                return int(self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except _NotFound:
            return None

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn botocore's exceptions into StoreErrors that say what to fix.

        A missing key comes out as :class:`_NotFound` for the caller to handle; a missing bucket
        (which HEAD requests also report as a bare 404) becomes a StoreError that says so.
        """
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            yield
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            not_found = code in ("404", "NoSuchKey", "NotFound")
            if code == "NoSuchBucket" or (not_found and self._bucket_missing()):
                raise StoreError(self._no_bucket_message()) from None
            if not_found:
                raise _NotFound() from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StoreError(
                    f"S3 {what}: access denied ({code}); check the credentials boto3 uses "
                    "(AWS_ACCESS_KEY_ID / AWS_PROFILE) and that they may read and write the bucket"
                ) from None
            raise StoreError(f"S3 {what} failed: {e}") from None
        except S3UploadFailedError as e:
            if "NoSuchBucket" in str(e):
                raise StoreError(self._no_bucket_message()) from None
            raise StoreError(f"S3 {what} failed: {e}") from None
        except NoCredentialsError:
            raise StoreError(
                f"S3 {what}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE)"
            ) from None
        except BotoCoreError as e:
            raise StoreError(f"S3 {what} failed: {e}") from None

    def _bucket_missing(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            return str(e.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchBucket")
        return False

    def _no_bucket_message(self) -> str:
        where = self._client.meta.endpoint_url
        return (
            f"S3 bucket {self.bucket!r} does not exist (endpoint {where}); create it "
            f"(`aws s3 mb s3://{self.bucket}`) or point --store at an existing bucket"
        )


class _NotFound(Exception):
    """A key that does not exist; internal, callers turn it into None or a StoreError."""
