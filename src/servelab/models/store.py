"""The model store: content-addressed ONNX files, addressed by name or by digest.

A stored model is a *blob* (the file's bytes, named by their sha256) plus a small JSON *ref*
per name and version. Refs look like ``mobilenet@sha256:<64 hex>``; a bare name means its newest
version. Two backends share that layout and :mod:`~servelab.models.store_base`'s logic:

- :class:`~servelab.models.store_local.LocalStore`, a directory (the default, ``$SERVELAB_HOME/store``);
- :class:`~servelab.models.store_s3.S3Store`, ``s3://bucket/prefix`` through boto3 (imported
  only when an ``s3://`` store is opened).

Every read is verified: :meth:`ModelStore.get` returns a local path only after the file's sha256
matched its ref, else it raises :class:`~servelab.errors.IntegrityError`. Nothing is ever
unpickled: refs are JSON and models are ONNX protobuf.

Units: sizes in bytes, times as ISO-8601 UTC strings (``2026-05-09T07:35:25.123456Z``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from servelab.errors import ConfigError
from servelab.models.store_base import (
    SHORT_HEX,
    BaseStore,
    ModelStore,
    StoredModel,
    copy_hashing,
    parse_ref,
    sha256_file,
    utc_now,
)
from servelab.models.store_local import LocalStore

if TYPE_CHECKING:
    from servelab.models.store_s3 import S3Store

__all__ = [
    "SHORT_HEX",
    "BaseStore",
    "LocalStore",
    "ModelStore",
    "S3Store",
    "StoredModel",
    "copy_hashing",
    "open_store",
    "parse_ref",
    "sha256_file",
    "utc_now",
]


def _local_path_from_url(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ConfigError(f"store URL {url!r}: file:// URLs must name a local path, like file:///srv/models")
    return Path(unquote(parsed.path))


def open_store(
    url: str | os.PathLike[str] | None,
    *,
    home: Path,
    endpoint_url: str | None = None,
) -> ModelStore:
    """Open the store that ``url`` names; construction is cheap, nothing is created until a put.

    - ``None``: the default local store, ``home / "store"``;
    - a path or a ``file://`` URL: a :class:`LocalStore` there;
    - ``s3://bucket/prefix``: an :class:`S3Store` (needs ``pip install 'servelab[s3]'``).
      ``endpoint_url`` points boto3 at an S3-compatible server (MinIO, moto, …); when it is None,
      boto3 still honours ``AWS_ENDPOINT_URL``. Credentials and region come from boto3's usual
      chain (environment, ``~/.aws``, instance role).
    """
    if url is None:
        return LocalStore(Path(home) / "store")
    if isinstance(url, os.PathLike):
        return LocalStore(Path(url))
    if not isinstance(url, str) or not url:
        raise ConfigError(f"store URL {url!r}: give a directory, file:///path or s3://bucket/prefix")
    scheme = urlparse(url).scheme
    if scheme == "s3":
        from servelab.models.store_s3 import S3Store

        return S3Store(url, cache_dir=Path(home) / "cache", endpoint_url=endpoint_url)
    if scheme == "file":
        return LocalStore(_local_path_from_url(url))
    if scheme and "://" in url:
        raise ConfigError(f"store URL {url!r}: unsupported scheme {scheme!r}; use a path, file:// or s3://")
    return LocalStore(Path(url).expanduser())


def __getattr__(attr: str) -> object:
    if attr == "S3Store":  # boto3 is optional: imported only when asked for
        from servelab.models.store_s3 import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
