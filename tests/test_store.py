"""The model store, both backends: a local directory and S3 (a real S3-protocol server, moto,
on loopback). Every behaviour test runs against both through the parametrized ``store`` fixture."""

from __future__ import annotations

import hashlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from servelab.errors import (
    ConfigError,
    IntegrityError,
    InvalidModelError,
    InvalidNameError,
    RefNotFoundError,
    RuntimeNotAvailableError,
    StoreError,
)
from servelab.models.store import ModelStore, StoredModel, open_store, parse_ref
from servelab.models.store_local import LocalStore
from servelab.models.store_s3 import S3Store

REF_RE = r"^[a-z0-9-]+@sha256:[0-9a-f]{64}$"


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """One moto S3 server for the module, on a free loopback port, with dummy credentials."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)  # never read the developer's ~/.aws
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()  # returns once the server accepts connections
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh bucket per test: moto keeps its state for the whole process."""
    name = f"models-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


class TickingClock:
    """A clock that moves one second per reading, so 'newest' never depends on timer resolution."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ModelStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store", clock=TickingClock())
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("bucket")
    return S3Store(f"s3://{bucket}/team/models", cache_dir=tmp_path / "cache", endpoint_url=endpoint,
                   clock=TickingClock())


def blob_names(store: ModelStore) -> list[str]:
    """The blobs a store holds, read from the backend itself rather than through the store API."""
    if isinstance(store, LocalStore):
        blob_dir = store.root / "blobs" / "sha256"
        return sorted(p.name for p in blob_dir.iterdir()) if blob_dir.is_dir() else []
    assert isinstance(store, S3Store)
    listed = store._client.list_objects_v2(Bucket=store.bucket, Prefix=f"{store.prefix}blobs/sha256/")
    return sorted(o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", []))


def corrupt_blob(store: ModelStore, hex_digest: str) -> None:
    """Flip the stored bytes of a blob behind the store's back (bit rot, a bad disk, a bad upload)."""
    if isinstance(store, LocalStore):
        path = store.blob_path(hex_digest)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.chmod(0o644)
        path.write_bytes(bytes(data))
    else:
        assert isinstance(store, S3Store)
        key = store.blob_key(hex_digest)
        data = bytearray(store._client.get_object(Bucket=store.bucket, Key=key)["Body"].read())
        data[len(data) // 2] ^= 0xFF
        store._client.put_object(Bucket=store.bucket, Key=key, Body=bytes(data))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- behaviour, both backends -------------------------------------------------------------
def test_put_returns_a_digest_ref_and_get_serves_the_same_bytes(
    store: ModelStore, tiny_models: dict[str, Path]
) -> None:
    src = tiny_models["tiny-mlp"]
    ref = store.put("tiny-mlp", src)
    assert ref == f"tiny-mlp@sha256:{sha256(src)}"
    for handle in (ref, "tiny-mlp", ref[: len("tiny-mlp@sha256:") + 12]):
        got = store.get(handle)
        assert got.read_bytes() == src.read_bytes()
    m = store.resolve(ref)
    assert m == StoredModel("tiny-mlp", f"sha256:{sha256(src)}", ref, src.stat().st_size, m.created_at)
    assert datetime.fromisoformat(m.created_at).tzinfo is not None


def test_bare_name_resolves_to_the_newest_version(store: ModelStore, tiny_models: dict[str, Path]) -> None:
    old = store.put("clf", tiny_models["tiny-mlp"])
    new = store.put("clf", tiny_models["tiny-cnn"])
    assert old != new
    assert store.resolve("clf").ref == new
    assert store.get("clf").read_bytes() == tiny_models["tiny-cnn"].read_bytes()
    assert store.get(old).read_bytes() == tiny_models["tiny-mlp"].read_bytes()  # old stays reachable
    assert [m.ref for m in store.list("clf")] == [new, old]


def test_list_is_by_name_then_newest_first(store: ModelStore, tiny_models: dict[str, Path]) -> None:
    assert store.list() == []
    b1 = store.put("b", tiny_models["noop"])
    a1 = store.put("a", tiny_models["tiny-mlp"])
    b2 = store.put("b", tiny_models["tiny-cnn"])
    assert [m.ref for m in store.list()] == [a1, b2, b1]
    assert [m.ref for m in store.list("a")] == [a1]
    assert store.list("nothing-here") == []
    sizes = {m.ref: m.size_bytes for m in store.list()}
    assert sizes[a1] == tiny_models["tiny-mlp"].stat().st_size


def test_same_content_put_twice_stores_one_blob_and_one_ref(
    store: ModelStore, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    first = store.put("m", tiny_models["noop"])
    created = store.resolve(first).created_at
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(tiny_models["noop"].read_bytes())
    assert store.put("m", copy) == first
    assert store.resolve(first).created_at == created  # a re-put changes nothing
    assert store.put("alias", copy) == first.replace("m@", "alias@")
    assert len(store.list()) == 2
    assert blob_names(store) == [first.rsplit(":", 1)[1]]


def test_delete_one_version_keeps_the_others(store: ModelStore, tiny_models: dict[str, Path]) -> None:
    old = store.put("m", tiny_models["tiny-mlp"])
    new = store.put("m", tiny_models["tiny-cnn"])
    store.delete(new)
    assert [m.ref for m in store.list()] == [old]
    assert store.resolve("m").ref == old
    assert blob_names(store) == [old.rsplit(":", 1)[1]]  # the unreferenced blob went too
    with pytest.raises(RefNotFoundError, match="no model"):
        store.get(new)


def test_delete_bare_name_deletes_every_version_but_not_shared_blobs(
    store: ModelStore, tiny_models: dict[str, Path]
) -> None:
    store.put("m", tiny_models["tiny-mlp"])
    store.put("m", tiny_models["tiny-cnn"])
    keep = store.put("other", tiny_models["tiny-mlp"])  # shares a blob with m
    store.delete("m")
    assert [m.ref for m in store.list()] == [keep]
    assert blob_names(store) == [keep.rsplit(":", 1)[1]]
    assert store.get(keep).read_bytes() == tiny_models["tiny-mlp"].read_bytes()
    with pytest.raises(RefNotFoundError):
        store.delete("m")


def test_unknown_names_and_refs_are_ref_not_found(store: ModelStore, tiny_models: dict[str, Path]) -> None:
    ref = store.put("m", tiny_models["noop"])
    wrong = "m@sha256:" + "0" * 64
    for call in (store.get, store.resolve, store.delete):
        with pytest.raises(RefNotFoundError, match="servelab models ls"):
            call("absent")
        with pytest.raises(RefNotFoundError):
            call(wrong)
    assert store.resolve(ref).ref == ref


def test_corrupted_blob_raises_integrity_error_and_is_never_returned(
    store: ModelStore, tiny_models: dict[str, Path]
) -> None:
    ref = store.put("m", tiny_models["tiny-cnn"])
    hex_digest = ref.rsplit(":", 1)[1]
    corrupt_blob(store, hex_digest)
    with pytest.raises(IntegrityError, match="corrupted"):
        store.get(ref)
    with pytest.raises(IntegrityError):
        store.get("m")
    if isinstance(store, S3Store):
        assert not store.cache_path(hex_digest).exists()
        assert not [p for p in store.cache_path(hex_digest).parent.iterdir()]  # no temp left either


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/b", "..", ".", "", "x" * 65, "a\\b", "-x", "a b"])
def test_names_that_could_escape_the_store_are_rejected(
    store: ModelStore, tiny_models: dict[str, Path], bad: str
) -> None:
    with pytest.raises(InvalidNameError, match="invalid model name"):
        store.put(bad, tiny_models["noop"])
    for call in (store.get, store.resolve, store.delete, store.list):
        with pytest.raises(InvalidNameError):
            call(bad)
    assert store.list() == []


@pytest.mark.parametrize(
    "bad_ref",
    [
        "m@sha256:" + "A" * 64,  # upper case
        "m@sha256:abc",  # too short to be unambiguous
        "m@sha256:" + "0" * 65,
        "m@md5:" + "0" * 32,
        "../m@sha256:" + "0" * 64,
        "m@sha256:" + "0" * 63 + "/",
        "@sha256:" + "0" * 64,
    ],
)
def test_malformed_refs_are_rejected(store: ModelStore, bad_ref: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid model ref"):
        store.get(bad_ref)


def test_non_onnx_files_are_rejected_unless_validation_is_off(store: ModelStore, tmp_path: Path) -> None:
    bad = tmp_path / "weights.pkl"
    bad.write_bytes(b"\x80\x04\x95 a pickle, never to be loaded")
    with pytest.raises(InvalidModelError, match=r"weights\.pkl: not an ONNX model"):
        store.put("m", bad)
    assert store.list() == [] and blob_names(store) == []
    ref = store.put("m", bad, validate=False)  # opaque bytes are still stored verbatim
    assert store.get(ref).read_bytes() == bad.read_bytes()


def test_missing_source_file_is_a_store_error(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such file"):
        store.put("m", tmp_path / "absent.onnx", validate=False)


# -- atomicity ----------------------------------------------------------------------------
def test_local_leftovers_of_a_crash_are_invisible(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    store = LocalStore(tmp_path / "store")
    ref = store.put("m", tiny_models["noop"])
    hex_digest = ref.rsplit(":", 1)[1]
    # What a process killed mid-put leaves: half a blob and half a ref, both under temp names.
    half = tiny_models["tiny-cnn"].read_bytes()[:100]
    (store.root / "blobs" / "sha256" / ".tmp-crash1").write_bytes(half)
    (store.root / "refs" / "m" / ".tmp-crash2").write_bytes(b'{"name": "m", "dig')
    (store.root / "refs" / "crashed").mkdir()
    (store.root / "refs" / "crashed" / ".tmp-crash3").write_bytes(b'{"na')
    assert [m.ref for m in store.list()] == [ref]
    assert store.list("crashed") == []
    with pytest.raises(RefNotFoundError):
        store.resolve("crashed")
    assert store.get("m") == store.blob_path(hex_digest)
    # and the store keeps working around them
    ref2 = store.put("m", tiny_models["tiny-cnn"])
    assert store.resolve("m").ref == ref2


def test_local_put_leaves_no_temp_files_and_read_only_blobs(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    store = LocalStore(tmp_path / "store")
    ref = store.put("m", tiny_models["tiny-mlp"])
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(InvalidModelError):
        store.put("m", tmp_path / "bad.onnx")
    names = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*"))
    hex_digest = ref.rsplit(":", 1)[1]
    assert names == [".lock", "blobs", "blobs/sha256", f"blobs/sha256/{hex_digest}", "refs", "refs/m",
                     f"refs/m/{hex_digest}.json"]
    path = store.get(ref)
    assert path.stat().st_mode & 0o777 == 0o444
    if os.geteuid() != 0:  # root ignores file modes; the mode itself was checked above
        with pytest.raises(PermissionError):
            path.open("r+b")


def test_s3_unfinished_upload_and_orphan_blob_are_invisible(
    s3_endpoint: str, bucket: str, s3: Any, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    store = S3Store(f"s3://{bucket}", cache_dir=tmp_path / "cache", endpoint_url=s3_endpoint)
    hex_digest = sha256(tiny_models["tiny-cnn"])
    # A crash mid multipart upload: parts sent, never completed.
    up = s3.create_multipart_upload(Bucket=bucket, Key=store.blob_key(hex_digest))
    s3.upload_part(Bucket=bucket, Key=store.blob_key(hex_digest), UploadId=up["UploadId"], PartNumber=1,
                   Body=b"x" * 1024)
    # A crash between the blob upload and the ref write: a blob nobody names.
    s3.put_object(Bucket=bucket, Key=store.blob_key(sha256(tiny_models["noop"])),
                  Body=tiny_models["noop"].read_bytes())
    assert store.list() == []
    with pytest.raises(RefNotFoundError):
        store.get(f"tiny-cnn@sha256:{hex_digest}")
    ref = store.put("tiny-cnn", tiny_models["tiny-cnn"])  # the real upload goes through
    assert store.get(ref).read_bytes() == tiny_models["tiny-cnn"].read_bytes()


# -- local only ---------------------------------------------------------------------------
def test_local_corrupted_blob_is_repaired_by_pushing_the_file_again(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    store = LocalStore(tmp_path / "store")
    ref = store.put("m", tiny_models["tiny-mlp"])
    corrupt_blob(store, ref.rsplit(":", 1)[1])
    with pytest.raises(IntegrityError):
        store.get(ref)
    assert store.put("m", tiny_models["tiny-mlp"]) == ref
    assert store.get(ref).read_bytes() == tiny_models["tiny-mlp"].read_bytes()


def test_local_ref_that_disagrees_with_its_path_is_refused(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    store = LocalStore(tmp_path / "store")
    ref = store.put("m", tiny_models["noop"])
    ref_file = store.root / "refs" / "m" / f"{ref.rsplit(':', 1)[1]}.json"
    ref_file.write_text('{"name": "evil", "digest": "sha256:00", "size_bytes": 1, "created_at": "x"}')
    with pytest.raises(StoreError, match="malformed ref"):
        store.resolve("m")


def test_local_missing_blob_is_an_integrity_error(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    store = LocalStore(tmp_path / "store")
    ref = store.put("m", tiny_models["noop"])
    store.blob_path(ref.rsplit(":", 1)[1]).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        store.get(ref)


# -- S3 only ------------------------------------------------------------------------------
def test_s3_get_serves_from_a_verified_cache_and_refetches_a_bad_cache_copy(
    s3_endpoint: str, bucket: str, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    store = S3Store(f"s3://{bucket}/p", cache_dir=tmp_path / "cache", endpoint_url=s3_endpoint)
    ref = store.put("m", tiny_models["tiny-cnn"])
    hex_digest = ref.rsplit(":", 1)[1]
    path = store.get(ref)
    assert path == tmp_path / "cache" / "sha256" / hex_digest
    path.chmod(0o644)
    path.write_bytes(b"rotten")  # the cache copy goes bad; the bucket's copy is fine
    again = store.get(ref)
    assert again == path and again.read_bytes() == tiny_models["tiny-cnn"].read_bytes()


def test_s3_big_files_go_up_in_parts(
    s3_endpoint: str, bucket: str, s3: Any, tmp_path: Path
) -> None:
    store = S3Store(f"s3://{bucket}", cache_dir=tmp_path / "cache", endpoint_url=s3_endpoint,
                    part_size_bytes=5 * 2**20)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 2**20))
    ref = store.put("big", big, validate=False)
    head = s3.head_object(Bucket=bucket, Key=store.blob_key(ref.rsplit(":", 1)[1]))
    assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a 3-part multipart upload
    assert head["Metadata"] == {"sha256": ref.rsplit(":", 1)[1]}
    assert store.get(ref).read_bytes() == big.read_bytes()


def test_s3_missing_bucket_says_so(s3_endpoint: str, tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    store = S3Store("s3://no-such-bucket-here", cache_dir=tmp_path, endpoint_url=s3_endpoint)
    for call in (lambda: store.put("m", tiny_models["noop"]), store.list, lambda: store.get("m")):
        with pytest.raises(StoreError, match="bucket 'no-such-bucket-here' does not exist"):
            call()


def test_s3_honours_aws_endpoint_url(
    s3_endpoint: str,
    bucket: str,
    tmp_path: Path,
    tiny_models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    store = open_store(f"s3://{bucket}/x", home=tmp_path)
    ref = store.put("m", tiny_models["noop"])
    assert store.get(ref).read_bytes() == tiny_models["noop"].read_bytes()


def test_s3_without_boto3_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # what `import boto3` sees when it is absent
    with pytest.raises(RuntimeNotAvailableError, match=r"pip install 'servelab\[s3\]'"):
        open_store("s3://bucket/prefix", home=tmp_path)


# -- open_store and refs ------------------------------------------------------------------
def test_open_store_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    default = open_store(None, home=tmp_path)
    assert isinstance(default, LocalStore) and default.root == tmp_path / "store"
    assert isinstance(open_store(tmp_path / "d", home=tmp_path), LocalStore)
    by_path = open_store(str(tmp_path / "d"), home=tmp_path)
    by_url = open_store((tmp_path / "d").as_uri(), home=tmp_path)
    assert isinstance(by_url, LocalStore) and by_url.root == by_path.root == tmp_path / "d"
    assert by_url.url == (tmp_path / "d").as_uri()
    s3_store = open_store("s3://my-bucket/a/b/", home=tmp_path)
    assert isinstance(s3_store, S3Store)
    assert (s3_store.bucket, s3_store.prefix, s3_store.url) == ("my-bucket", "a/b/", "s3://my-bucket/a/b")
    assert s3_store.cache_dir == tmp_path / "cache"
    assert not (tmp_path / "store").exists()  # opening creates nothing


@pytest.mark.parametrize("url", ["gs://bucket/x", "s3://Bad_Bucket/x", "s3://b", "s3://bucket/a/../b",
                                 "file://otherhost/x", "s3://bucket/a//b"])
def test_open_store_refuses_urls_it_cannot_serve(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="store URL"):
        open_store(url, home=tmp_path)


def test_parse_ref_splits_names_and_digests() -> None:
    assert parse_ref("m") == ("m", None)
    assert parse_ref("m.v2@sha256:" + "ab" * 32) == ("m.v2", "ab" * 32)
    assert parse_ref("m@sha256:0123456789ab") == ("m", "0123456789ab")


def test_short_digest_prefix_names_one_version(store: ModelStore, tiny_models: dict[str, Path]) -> None:
    old = store.put("m", tiny_models["tiny-mlp"])
    store.put("m", tiny_models["tiny-cnn"])
    short = old[: len("m@sha256:") + 12]
    assert store.resolve(short).ref == old
    store.delete(short)
    assert old not in [m.ref for m in store.list()]


def test_the_protocol_is_what_both_backends_offer(tmp_path: Path) -> None:
    backends: list[Callable[[], Any]] = [
        lambda: LocalStore(tmp_path),
        lambda: S3Store("s3://bucket", cache_dir=tmp_path),
    ]
    for make in backends:
        assert isinstance(make(), ModelStore)
