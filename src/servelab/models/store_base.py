"""What every model store shares: the stored-model record, refs, digests and the base class.

See :mod:`servelab.models.store` for the store itself; the backends build on this module.

A stored model is a *blob* (the file's bytes, named by their sha256) plus a small JSON *ref*
per name and version. Refs look like ``mobilenet@sha256:<64 hex>``; a bare name means its newest
version. Two backends share that layout and this module's logic:

- :class:`~servelab.models.store_local.LocalStore`, a directory (the default, ``$SERVELAB_HOME/store``);
- :class:`~servelab.models.store_s3.S3Store`, ``s3://bucket/prefix`` through boto3.

Every read is verified: :meth:`ModelStore.get` returns a local path only after the file's sha256
matched its ref, else it raises :class:`~servelab.errors.IntegrityError`. Nothing is ever
unpickled: refs are JSON and models are ONNX protobuf.

Units: sizes in bytes, times as ISO-8601 UTC strings (``2026-05-09T07:35:25.123456Z``).
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from servelab.config import NAME_RE, validate_name
from servelab.errors import InvalidNameError, RefNotFoundError, StoreError

DIGEST_ALGO = "sha256"
HEX_RE = re.compile(r"^[0-9a-f]{64}$")
# A full ref, or a name with a digest prefix of at least 12 hex digits (what `models ls` shows).
REF_RE = re.compile(rf"^(?P<name>{NAME_RE.pattern[1:-1]})@sha256:(?P<hex>[0-9a-f]{{12,64}})$")
SHORT_HEX = 12
CHUNK_BYTES = 4 * 1024 * 1024
REF_FORMAT = 1  # version of the JSON ref document, written into each one


@dataclass(frozen=True)
class StoredModel:
    """One version of one model in a store."""

    name: str
    digest: str  # "sha256:<64 hex>"
    ref: str  # "<name>@sha256:<64 hex>"
    size_bytes: int
    created_at: str  # ISO-8601 UTC

    @property
    def hex(self) -> str:
        """The digest's hex part: the blob's file name."""
        return self.digest.removeprefix("sha256:")

    def to_json(self) -> bytes:
        doc = {
            "format": REF_FORMAT,
            "name": self.name,
            "digest": self.digest,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at,
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def make(cls, name: str, hex_digest: str, size_bytes: int, created_at: str) -> StoredModel:
        return cls(name, f"sha256:{hex_digest}", f"{name}@sha256:{hex_digest}", size_bytes, created_at)

    @classmethod
    def from_json(cls, raw: bytes, *, name: str, hex_digest: str, where: str) -> StoredModel:
        """Parse a ref document and check that it says what its location says.

        ``name`` and ``hex_digest`` come from the ref's path; a document that disagrees with its
        own path was tampered with or misplaced, and is refused rather than trusted.
        """
        try:
            doc: Any = json.loads(raw)
            ok = (
                isinstance(doc, dict)
                and doc.get("name") == name
                and doc.get("digest") == f"sha256:{hex_digest}"
                and isinstance(doc.get("size_bytes"), int)
                and doc["size_bytes"] >= 0
                and isinstance(doc.get("created_at"), str)
            )
        except ValueError:
            ok = False
        if not ok:
            raise StoreError(
                f"malformed ref {where}: expected JSON with name {name!r}, digest sha256:{hex_digest}, "
                "size_bytes and created_at; delete it with `servelab models rm` and push the model again"
            )
        return cls.make(name, hex_digest, doc["size_bytes"], doc["created_at"])


@runtime_checkable
class ModelStore(Protocol):
    """What the platform, the trainer and the CLI need from a store, whatever its backend."""

    url: str

    def put(self, name: str, file: Path, *, validate: bool = True) -> str:
        """Store ``file`` as a new version of ``name``; return its ref. Same content twice: one blob."""
        ...

    def get(self, ref_or_name: str) -> Path:
        """A local path to the model's bytes, sha256-verified on this call."""
        ...

    def resolve(self, ref_or_name: str) -> StoredModel:
        """The stored version a ref names; a bare name means its newest version."""
        ...

    def list(self, name: str | None = None) -> list[StoredModel]:
        """Stored versions, by name, newest first within a name."""
        ...

    def delete(self, ref_or_name: str) -> None:
        """Delete one version, or every version of a bare name."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(t: datetime) -> str:
    """Fixed-width ISO-8601 UTC, so that string order is time order."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ref(ref_or_name: str) -> tuple[str, str | None]:
    """Split ``name`` or ``name@sha256:<hex>`` into (name, hex or None), refusing anything else.

    The hex may be a prefix of 12 or more digits. Names are checked with
    :func:`servelab.config.validate_name`, so nothing parsed here can escape a directory.
    """
    if not isinstance(ref_or_name, str):
        raise InvalidNameError(f"expected a model name or ref, got {type(ref_or_name).__name__}")
    if "@" in ref_or_name:
        m = REF_RE.fullmatch(ref_or_name)
        if m is None or set(m["name"]) <= {"."}:
            raise InvalidNameError(
                f"invalid model ref {ref_or_name!r}: use NAME@sha256:HEX with 12-64 lowercase hex "
                "digits (as `servelab models ls` prints), or a bare NAME for its newest version"
            )
        return m["name"], m["hex"]
    return validate_name(ref_or_name, what="model name"), None


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks (models reach ~550 MB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, DIGEST_ALGO).hexdigest()


def copy_hashing(src: BinaryIO, dst: BinaryIO) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` in chunks and return (hex sha256, bytes): one read of the source."""
    h = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK_BYTES):
        h.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def newest_first(models: Iterable[StoredModel]) -> list[StoredModel]:
    """Sort by name, then newest first; equal times fall back to the digest so order is stable."""
    by_time = sorted(models, key=lambda m: (m.created_at, m.digest), reverse=True)
    return sorted(by_time, key=lambda m: m.name)


class BaseStore(ABC):
    """Resolve / list / delete over a backend's few primitives; backends add put and get.

    A backend stores each ref as ``refs/<name>/<hex>.json`` and each blob as
    ``blobs/sha256/<hex>`` and implements the primitives below; everything that interprets refs
    lives here, so both backends answer the same way.
    """

    url: str

    def __init__(self, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._clock = clock

    # -- primitives -----------------------------------------------------------------------
    @abstractmethod
    def _load_refs(self, name: str | None) -> list[StoredModel]:
        """Every complete ref document for ``name`` (all names if None), in any order."""

    @abstractmethod
    def _load_ref(self, name: str, hex_digest: str) -> StoredModel | None:
        """One ref, or None if it does not exist."""

    @abstractmethod
    def _remove_refs(self, models: list[StoredModel]) -> None:
        """Remove these refs, and then every blob that no remaining ref points to."""

    # -- shared logic ---------------------------------------------------------------------
    def _now(self) -> str:
        return format_time(self._clock())

    def resolve(self, ref_or_name: str) -> StoredModel:
        name, hex_digest = parse_ref(ref_or_name)
        if hex_digest is not None and len(hex_digest) == 64:
            found = self._load_ref(name, hex_digest)
            if found is None:
                raise RefNotFoundError(f"no model {ref_or_name} in store {self.url}; {self._hint(name)}")
            return found
        versions = newest_first(self._load_refs(name))
        if hex_digest is not None:
            versions = [m for m in versions if m.hex.startswith(hex_digest)]
            if len(versions) > 1:
                raise RefNotFoundError(
                    f"{ref_or_name} is ambiguous in store {self.url}: it matches "
                    f"{', '.join(m.ref for m in versions)}; give more digits"
                )
        if not versions:
            raise RefNotFoundError(f"no model {ref_or_name} in store {self.url}; {self._hint(name)}")
        return versions[0]

    def list(self, name: str | None = None) -> list[StoredModel]:
        if name is not None:
            validate_name(name, what="model name")
        return newest_first(self._load_refs(name))

    def delete(self, ref_or_name: str) -> None:
        name, hex_digest = parse_ref(ref_or_name)
        if hex_digest is None:
            doomed = self._load_refs(name)
            if not doomed:
                raise RefNotFoundError(f"no model named {name!r} in store {self.url}; {self._hint(None)}")
        else:
            doomed = [self.resolve(ref_or_name)]
        self._remove_refs(doomed)

    def _hint(self, name: str | None) -> str:
        arg = f" {name}" if name else ""
        return f"`servelab models ls{arg} --store {self.url}` lists what is there"
