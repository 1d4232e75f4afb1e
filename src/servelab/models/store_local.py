"""The model store in a local directory (the default backend).

Layout under the root::

    blobs/sha256/<hex>            the model's bytes, read-only (0444), named by their sha256
    refs/<name>/<hex>.json        one small JSON document per name and version
    .lock                         serialises puts and deletes across processes (flock)

Every file appears whole or not at all: it is written to a dot-named temp file in its final
directory, fsynced and then ``os.replace``d into place, so a crash mid-upload leaves at most a
``.tmp-*`` file that nothing lists or serves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from servelab.config import validate_name
from servelab.errors import IntegrityError, StoreError
from servelab.models.store_base import BaseStore, StoredModel, copy_hashing, sha256_file, utc_now

REF_FILE_RE = re.compile(r"^(?P<hex>[0-9a-f]{64})\.json$")
TMP_PREFIX = ".tmp-"


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(BaseStore):
    """A content-addressed model store in the directory ``root`` (created on the first put)."""

    def __init__(self, root: Path, *, clock: Callable[[], datetime] = utc_now) -> None:
        super().__init__(clock=clock)
        self.root = Path(root).absolute()
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # -- paths ----------------------------------------------------------------------------
    def blob_path(self, hex_digest: str) -> Path:
        return self.root / "blobs" / "sha256" / hex_digest

    def _ref_dir(self, name: str) -> Path:
        return self.root / "refs" / name

    # -- put / get ------------------------------------------------------------------------
    def put(self, name: str, file: Path, *, validate: bool = True) -> str:
        validate_name(name, what="model name")
        file = Path(file)
        if not file.is_file():
            raise StoreError(f"cannot store {file}: no such file")
        if validate:
            from servelab.models.onnx_info import inspect_model

            inspect_model(file)  # raises InvalidModelError saying why it is not ONNX
        blob_dir = self.blob_path("0").parent
        blob_dir.mkdir(parents=True, exist_ok=True)
        # Copy first, hash while copying: the digest is the digest of exactly the bytes we keep.
        with open(file, "rb") as src, self._temp_in(blob_dir) as (dst, tmp):
            hex_digest, size = copy_hashing(src, dst)
            os.fchmod(dst.fileno(), 0o444)  # callers get this path; make stray writes fail
            _sync(dst)
            with self._locked():
                # Replace even when the blob exists: same bytes, and it repairs a corrupted one.
                os.replace(tmp, self.blob_path(hex_digest))
                _fsync_dir(blob_dir)
                model = self._load_ref(name, hex_digest)
                if model is None:  # same name and content again: keep the first ref (idempotent)
                    model = StoredModel.make(name, hex_digest, size, self._now())
                    self._write_ref(model)
        return model.ref

    def get(self, ref_or_name: str) -> Path:
        model = self.resolve(ref_or_name)
        path = self.blob_path(model.hex)
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise IntegrityError(
                f"{model.ref}: its blob {path} is missing from store {self.url}; push the model again"
            ) from None
        if actual != model.hex:
            raise IntegrityError(
                f"{model.ref}: blob {path} is corrupted (its sha256 is {actual}); it was not served. "
                "Push the original model file again to repair it."
            )
        return path

    # -- primitives for BaseStore ---------------------------------------------------------
    def _load_refs(self, name: str | None) -> list[StoredModel]:
        refs_root = self.root / "refs"
        if name is not None:
            names = [name]
        elif refs_root.is_dir():
            names = [p.name for p in refs_root.iterdir() if _is_name(p.name) and p.is_dir()]
        else:
            names = []
        found = []
        for n in names:
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self._ref_dir(n)):
                    m = REF_FILE_RE.fullmatch(entry.name)  # skips .tmp-* left by a crash
                    if m:
                        loaded = self._load_ref(n, m["hex"])
                        if loaded is not None:  # deleted between scandir and read
                            found.append(loaded)
        return found

    def _load_ref(self, name: str, hex_digest: str) -> StoredModel | None:
        path = self._ref_dir(name) / f"{hex_digest}.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        return StoredModel.from_json(raw, name=name, hex_digest=hex_digest, where=str(path))

    def _remove_refs(self, models: list[StoredModel]) -> None:
        with self._locked():
            for m in models:
                with contextlib.suppress(FileNotFoundError):
                    (self._ref_dir(m.name) / f"{m.hex}.json").unlink()
                with contextlib.suppress(OSError):  # not empty: other versions, or a temp file
                    self._ref_dir(m.name).rmdir()
            still_used = {m.hex for m in self._load_refs(None)}
            for hex_digest in {m.hex for m in models} - still_used:
                with contextlib.suppress(FileNotFoundError):
                    self.blob_path(hex_digest).unlink()

    # -- helpers --------------------------------------------------------------------------
    def _write_ref(self, model: StoredModel) -> None:
        ref_dir = self._ref_dir(model.name)
        ref_dir.mkdir(parents=True, exist_ok=True)
        with self._temp_in(ref_dir) as (f, tmp):
            f.write(model.to_json())
            _sync(f)
            os.replace(tmp, ref_dir / f"{model.hex}.json")
        _fsync_dir(ref_dir)

    @contextlib.contextmanager
    def _temp_in(self, directory: Path) -> Iterator[tuple[BinaryIO, str]]:
        """An open temp file in ``directory``; removed on exit unless the caller replaced it."""
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f, tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the store for the short commit step of a put or a delete.

        Without it a delete could decide a blob is unreferenced while a concurrent put of the
        same bytes under another name is adding a ref to it.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _is_name(s: str) -> bool:
    try:
        validate_name(s)
    except ValueError:
        return False
    return True
