"""Function isolation: what a function's code may see and touch, with the tools Linux already has.

A serverless platform runs other people's code next to its own state. When the platform runs as
root, every instance — spawned or forked, before any of the function's code is imported —
enters its own view of the machine (docs/isolation.md):

* **identity**: a function-specific uid/gid (allocated once from ``UID_RANGE`` and recorded in
  the home's ``uids.json``), supplementary groups cleared, ``no_new_privs`` set. Another uid
  cannot signal the platform or other functions' instances, nor read their ``/proc/PID/environ``;
* **files** (a mount namespace): the platform's home (database, records, store, other functions'
  code) and unreadable directories such as ``/root`` are covered by empty tmpfs; what the
  instance needs is put back, read-only: the Python installation and the function's own code.
  ``/tmp`` is a private, size-limited tmpfs that disappears with the instance;
* **network**: ``host`` (default: loopback and the machine's network) or ``none`` (an empty
  network namespace: no route even to the platform);
* **limits**: ``RLIMIT_NPROC`` and ``RLIMIT_NOFILE``;
* **environment**: instance processes start from a minimal environment (:func:`instance_env`),
  so nothing of the platform's (tokens, cloud credentials) reaches a function unless its own
  configuration sets it.

The management API refuses callers whose loopback connection belongs to a function's uid
(:func:`peer_uid`), so a handler cannot delete or reconfigure functions even with no token set.

When the platform is not root none of this is possible: :func:`mode` says ``none`` and
``servelab platform info`` says so (the weaker, documented mode: instances run as the platform's
user, with the minimal environment only).

Linux only; the system calls go through ctypes (``os.unshare`` is Python 3.12+).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from servelab.errors import ConfigError

InstanceNetwork = Literal["host", "none"]
INSTANCE_NETWORKS: tuple[InstanceNetwork, ...] = ("host", "none")
UID_RANGE = (200_000, 265_535)  # far above any login user's uid
UIDS_FILE = "uids.json"
TMP_MB_DEFAULT = 512  # Lambda's default /tmp
NPROC = 256
NOFILE = 1024
# What an instance's environment keeps of the platform's: where Python and its libraries are, the
# locale, and the knobs that make numeric libraries run correctly on this machine.
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
             "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")

_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_MOVE = 8192
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2
_PR_SET_NO_NEW_PRIVS = 38


def mode() -> Literal["root", "none"]:
    """``root``: instances get their own uid, mount and (optionally) network namespace.
    ``none``: the platform is not root; instances run as its user with a minimal environment."""
    return "root" if sys.platform.startswith("linux") and os.geteuid() == 0 else "none"


def instance_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment an instance process starts with: the few variables in ``_ENV_KEEP``."""
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP or k.startswith("LC_")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = "/tmp"
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class IsolationSpec:
    """What one instance's worker applies before the function's code runs (sent in its init)."""

    uid: int
    gid: int
    home: str  # the platform's home: hidden
    code_dir: str | None  # the function's code: visible, read-only
    tmp_mb: int = TMP_MB_DEFAULT
    network: InstanceNetwork = "host"
    nproc: int = NPROC
    nofile: int = NOFILE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UidMap:
    """Function name → uid, allocated once from ``UID_RANGE`` and kept in ``home/uids.json`` so a
    function keeps its identity across restarts (files it wrote to its own /tmp never outlive an
    instance, but logs and audits read better with a stable uid)."""

    def __init__(self, home: Path, uid_range: tuple[int, int] = UID_RANGE) -> None:
        self.path = Path(home) / UIDS_FILE
        self.lo, self.hi = uid_range
        try:
            self._map: dict[str, int] = {str(k): int(v) for k, v in json.loads(self.path.read_text()).items()}
        except FileNotFoundError:
            self._map = {}
        except (ValueError, AttributeError):
            raise ConfigError(f"{self.path} is not a JSON object of function name -> uid; remove it to "
                              "allocate uids afresh") from None

    def uid(self, function: str) -> int:
        if function not in self._map:
            used = set(self._map.values())
            uid = next((u for u in range(self.lo, self.hi + 1) if u not in used), None)
            if uid is None:
                raise ConfigError(f"no free uid left in {self.lo}-{self.hi} for function {function!r}")
            self._map[function] = uid
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._map, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        return self._map[function]

    def is_function_uid(self, uid: int) -> bool:
        return self.lo <= uid <= self.hi


def plan(*, home: Path, function: str, code_dir: Path | None, uids: UidMap,
         network: InstanceNetwork = "host", tmp_mb: int = TMP_MB_DEFAULT) -> IsolationSpec | None:
    """The isolation of one function's instances, or None when the platform cannot isolate."""
    if network not in INSTANCE_NETWORKS:
        raise ConfigError(f"instance network must be one of {', '.join(INSTANCE_NETWORKS)}, got {network!r}")
    if mode() != "root":
        return None
    uid = uids.uid(function)
    return IsolationSpec(uid=uid, gid=uid, home=str(Path(home).resolve()),
                         code_dir=str(Path(code_dir).resolve()) if code_dir else None, tmp_mb=tmp_mb, network=network)


# ---------------------------------------------------------------------------- in the instance


class IsolationError(OSError):
    """An isolation step failed: the instance must not run the function's code."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise IsolationError(err, f"{what}: {os.strerror(err)}")


def _mount(libc: ctypes.CDLL, source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                      data.encode() if data else None), f"mount {source} on {target}")


def _traversable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & 0o001)
    except OSError:
        return False


def _needed_paths(spec: IsolationSpec) -> list[Path]:
    """What the instance must still see: Python, its libraries, servelab, the function's code."""
    import servelab

    paths = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.exec_prefix), Path(servelab.__file__).parents[1]}
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            paths.add(Path(entry))
    if spec.code_dir:
        paths.add(Path(spec.code_dir))
    return sorted({p.resolve() for p in paths if p.exists()})


def _hidden_dirs(spec: IsolationSpec, needed: list[Path]) -> list[Path]:
    """The home, and every directory that others may not enter on the way to a needed path
    (``/root`` 0700 with the interpreter below it, say)."""
    hidden = {Path(spec.home)}
    for p in needed:
        for parent in reversed(p.parents):
            if parent != Path("/") and not _traversable_by_others(parent):
                hidden.add(parent)
                break
    # an inner hidden dir under an outer one is covered by the outer one
    return sorted(h for h in hidden if not any(o != h and o in h.parents for o in hidden))


def apply(spec: IsolationSpec) -> None:
    """Enter the instance's own view of the machine and drop to its uid. Irreversible; raises
    :class:`IsolationError` when a step fails (the caller must then not run the function's code)."""
    libc = _libc()
    needed = _needed_paths(spec)
    hidden = _hidden_dirs(spec, needed)
    tmp = Path("/tmp")
    _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(libc, "none", "/", None, _MS_REC | _MS_PRIVATE, None)
    # needed paths below a directory about to be covered are first bound to a staging place
    covers = [*hidden, tmp]
    staged = [p for p in needed if any(h == p or h in p.parents for h in covers)]
    stage = Path("/dev/shm") / f"servelab-stage-{os.getpid()}"
    stage.mkdir(mode=0o700)
    try:
        for i, p in enumerate(staged):
            (stage / str(i)).mkdir()
            _mount(libc, str(p), str(stage / str(i)), None, _MS_BIND | _MS_REC, None)
        _mount(libc, "tmpfs", str(tmp), "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={spec.tmp_mb}m,mode=1777")
        for h in hidden:
            if h.is_dir():  # a home below /tmp is already gone with the old /tmp
                _mount(libc, "tmpfs", str(h), "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
        for i, p in enumerate(staged):
            p.mkdir(parents=True, exist_ok=True)
            _mount(libc, str(stage / str(i)), str(p), None, _MS_MOVE, None)
            _mount(libc, "none", str(p), None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_REC, None)
    finally:
        with contextlib.suppress(OSError):
            libc.umount2(str(stage).encode(), _MNT_DETACH)
            stage.rmdir()
    if spec.network == "none":
        _check(libc.unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    resource.setrlimit(resource.RLIMIT_NPROC, (spec.nproc, spec.nproc))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(spec.nofile, hard), min(spec.nofile, hard)))
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    os.setgroups([])
    os.setgid(spec.gid)
    os.setuid(spec.uid)
    os.chdir("/tmp")
    os.environ["HOME"] = "/tmp"


# ---------------------------------------------------------------------------- the control plane


def peer_uid(remote_host: str, remote_port: int) -> int | None:
    """The uid that owns the client end of a loopback TCP connection from ``remote_host:remote_port``
    (read from ``/proc/net/tcp`` and ``tcp6``, as identd does), or None when it is not found."""
    import ipaddress

    try:
        addr = ipaddress.ip_address(remote_host)
    except ValueError:
        return None
    v4 = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped else addr
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 8:
                continue
            local_hex, port_hex = cols[1].split(":")
            if int(port_hex, 16) != remote_port:
                continue
            if _hex_addr(local_hex) in (v4, addr):
                return int(cols[7])
    return None


def _hex_addr(h: str) -> Any:
    import ipaddress

    raw = bytes.fromhex(h)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    v6 = ipaddress.IPv6Address(words)
    return v6.ipv4_mapped or v6
