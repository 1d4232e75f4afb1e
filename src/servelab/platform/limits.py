"""Memory and CPU limits for function instances, sized the way AWS Lambda sizes them.

A function's memory size (128..10240 MB) fixes its CPU share: 1 vCPU at 1,769 MB, in
proportion below that, and linearly up to 6 vCPUs at 10,240 MB (:func:`cpus_for_memory`).
Each instance gets its own cgroup so that the kernel enforces both:

* ``cgroup2`` — one cgroup with ``memory.max``, ``memory.swap.max = 0``, ``memory.oom.group``
  and ``cpu.max``;
* ``cgroup1`` — one cgroup in each of the ``memory`` and ``cpu`` hierarchies (and in
  ``cpuacct`` when it is mounted on its own, only to count CPU time), with
  ``memory.limit_in_bytes`` (+ ``memory.memsw.limit_in_bytes`` so swap cannot stretch it)
  and ``cpu.cfs_quota_us``;
* ``rlimit`` — the fallback where no cgroup is writable: ``RLIMIT_AS`` turns a runaway
  allocation into a catchable ``MemoryError`` (onnxruntime raises instead of crashing), and
  :attr:`ResourceLimits.threads` bounds the CPU an instance asks for. Nothing is enforced on
  resident memory or CPU time in this mode.

Instance cgroups are named ``servelab/<instance_id>`` and are created *inside the cgroup the
platform runs in* (cgroup v1), or beside it (cgroup v2, whose no-internal-process rule forbids
enabling controllers below a cgroup that holds processes), so the platform's own container or
session limits still cover its instances. Units: sizes in MB (MiB, as Lambda means it),
CPU in vCPUs and seconds.

The parent creates the cgroup (:meth:`InstanceLimits.create`); the child moves itself in
before running any function code (:meth:`InstanceLimits.enter`, or
:meth:`InstanceLimits.preexec_fn` for ``subprocess.Popen``), so nothing it allocates escapes.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from servelab.config import validate_name
from servelab.core.resources import MAX_MEMORY_MB, MIN_MEMORY_MB, cpus_for_memory
from servelab.errors import ConfigError, LimitsError

LimitsMode = Literal["cgroup2", "cgroup1", "rlimit"]
LIMITS_MODES: tuple[LimitsMode, ...] = ("cgroup2", "cgroup1", "rlimit")  # detection order

MB = 1024 * 1024
GROUP = "servelab"
CFS_PERIOD_US = 100_000
MIN_CFS_QUOTA_US = 1_000  # the kernel refuses smaller quotas

# RLIMIT_AS caps *virtual* memory, which is far more than what a process touches: a fresh
# interpreter that imports numpy + onnxruntime + the worker maps ~330 MB before doing anything
# (measured on this repo's venv), and each extra thread maps an 8 MB stack plus, often, a 64 MB
# glibc malloc arena. The cap therefore adds those to the memory size, so that a function can
# start and use its memory size, and is stopped with MemoryError not far past it.
SPAWN_BASELINE_MB = 384
THREAD_ADDRESS_SPACE_MB = 72

_KILL_WAIT_S = 5.0


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # a container or taskset may give us fewer than cpu_count
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ResourceLimits:
    """What one instance may use. ``cpus`` is derived from ``memory_mb`` unless given."""

    memory_mb: int
    cpus: float | None = None  # always a float after construction

    def __post_init__(self) -> None:
        if isinstance(self.memory_mb, bool) or not isinstance(self.memory_mb, int):
            raise ConfigError(f"memory_mb must be an integer number of MB, got {self.memory_mb!r}")
        if not MIN_MEMORY_MB <= self.memory_mb <= MAX_MEMORY_MB:
            raise ConfigError(
                f"memory_mb must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB} (as on AWS Lambda), "
                f"got {self.memory_mb}"
            )
        if self.cpus is None:
            object.__setattr__(self, "cpus", cpus_for_memory(self.memory_mb))
        elif not (isinstance(self.cpus, int | float) and math.isfinite(self.cpus) and self.cpus > 0):
            raise ConfigError(f"cpus must be a positive number of vCPUs, got {self.cpus!r}")
        else:
            object.__setattr__(self, "cpus", float(self.cpus))

    @classmethod
    def for_memory(cls, memory_mb: int) -> ResourceLimits:
        """Limits for a Lambda-style memory size; raises ConfigError outside 128..10240 MB."""
        return cls(memory_mb)

    @property
    def threads(self) -> int:
        """Intra-op threads an instance should use: enough to use its CPU share, no more than we have.

        More threads than the quota only adds throttling and context switches; fewer would leave
        paid-for CPU idle. The 1e-9 keeps 1769 MB (exactly 1.0 vCPU) at one thread.
        """
        assert self.cpus is not None
        return max(1, min(math.ceil(self.cpus - 1e-9), _usable_cpus()))


@dataclass(frozen=True)
class LimitsInfo:
    """Which mechanism enforces limits here, where its cgroup tree is, and why it was chosen."""

    mode: LimitsMode
    root: str | None  # the cgroup mount root (v1: the dir holding memory/ and cpu/); None for rlimit
    reason: str


# --------------------------------------------------------------------------------- layout


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _own_cgroups(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> path; the v2 entry is under ``""``."""
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            own[""] = path
        for c in controllers.split(","):
            if c:
                own[c] = path
    return own


def _own_dir(mount: Path, own_path: str | None) -> Path:
    """The directory of this process's cgroup under ``mount``, or ``mount`` itself.

    Falls back to the mount when the path does not exist under it: a cgroup namespace or a
    bind-mounted sub-tree (containers) shows the process's own cgroup as the mount root.
    """
    if own_path and own_path != "/":
        d = mount / own_path.lstrip("/")
        if d.is_dir():
            return d
    return mount


def _words(path: Path) -> set[str]:
    return set(_read(path).split())


def _is_real_root(cgroup: Path) -> bool:
    """Only the root of the whole v2 hierarchy has no ``cgroup.type`` (a namespace root does)."""
    return not (cgroup / "cgroup.type").exists()


def _v2_parent(mount: Path, own_path: str | None) -> tuple[Path | None, str]:
    """Where ``servelab/`` goes in a v2 tree, or None and why not.

    Controllers can be enabled below a cgroup only while it holds no processes (the root is
    exempt), and the platform lives in its own cgroup, so the group goes *beside* it, in the
    parent that already hands memory and cpu down to the platform's cgroup.
    """
    d = _own_dir(mount, own_path)
    if _is_real_root(d) or {"memory", "cpu"} <= _words(d / "cgroup.subtree_control"):
        parent = d
    elif d != mount:
        parent = d.parent
    else:
        return None, (f"this process's cgroup {d} is the top of its cgroup namespace and holds processes, "
                      "so memory/cpu cannot be enabled below it (cgroup v2's no-internal-process rule)")
    missing = sorted({"memory", "cpu"} - _words(parent / "cgroup.controllers"))
    if missing:
        return None, f"{parent} has no {' or '.join(missing)} controller"
    if not os.access(parent, os.W_OK) or not os.access(parent / "cgroup.subtree_control", os.W_OK):
        return None, f"{parent} is not writable by uid {os.getuid()}"
    enabled = {"memory", "cpu"} <= _words(parent / "cgroup.subtree_control")
    if not enabled and not _is_real_root(parent) and _read(parent / "cgroup.procs").strip():
        return None, (f"{parent} holds processes, so memory/cpu cannot be enabled for its children "
                      "(cgroup v2's no-internal-process rule); run the platform in a delegated cgroup, "
                      "e.g. `systemd-run --scope -p Delegate=yes servelab ...`")
    return parent, f"memory+cpu writable at {parent}"


def _v2_mount(root: Path) -> Path | None:
    """A cgroup2 mount at ``root`` (pure v2) or ``root/unified`` (hybrid layout)."""
    for cand in (root, root / "unified"):
        if (cand / "cgroup.controllers").is_file():
            return cand
    return None


def _v1_parents(root: Path, own: dict[str, str]) -> tuple[dict[str, Path] | None, str]:
    """Per-controller dirs where ``servelab/`` goes in a v1 tree (memory, cpu, maybe cpuacct)."""
    need = {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us"}
    parents: dict[str, Path] = {}
    for ctrl, probe in need.items():
        mount = root / ctrl
        if not (mount / probe).is_file():
            return None, f"no cgroup v1 {ctrl} hierarchy at {mount}"
        d = _own_dir(mount, own.get(ctrl))
        if not os.access(d, os.W_OK):
            return None, f"cgroup v1 {ctrl} hierarchy at {d} is not writable by uid {os.getuid()}"
        parents[ctrl] = d
    # CPU time is counted by cpuacct: in the cpu cgroup when co-mounted ("cpu,cpuacct"), else
    # in a cgroup of its own hierarchy; without either, cpu_usage_s() answers None.
    if not (parents["cpu"] / "cpuacct.usage").is_file():
        acct = root / "cpuacct"
        if (acct / "cpuacct.usage").is_file():
            d = _own_dir(acct, own.get("cpuacct"))
            if os.access(d, os.W_OK):
                parents["cpuacct"] = d
    where = ", ".join(str(p) for p in parents.values())
    return parents, f"cgroup v1 memory+cpu writable (instances under {GROUP}/ in {where})"


def _parents(mode: LimitsMode, root: Path, own: dict[str, str]) -> tuple[dict[str, Path] | None, str]:
    if mode == "cgroup2":
        parent, why = _v2_parent(root, own.get(""))
        return ({"unified": parent} if parent else None), why
    if mode == "cgroup1":
        return _v1_parents(root, own)
    return {}, "rlimit needs no cgroup"


def detect(
    root: Path = Path("/sys/fs/cgroup"),
    *,
    prefer: LimitsMode | None = None,
    self_cgroup: Path = Path("/proc/self/cgroup"),
) -> LimitsInfo:
    """Pick the strongest mechanism this machine allows: cgroup v2, then v1, then rlimits.

    Only reads the layout (no cgroup is created). ``prefer`` asks for one mode and raises
    :class:`LimitsError` if it is not usable here, rather than quietly enforcing less.
    ``self_cgroup`` is where this process's cgroup membership is read (a file for tests).
    """
    if prefer is not None and prefer not in LIMITS_MODES:
        raise ConfigError(f"limits mode must be one of {LIMITS_MODES}, got {prefer!r}")
    own = _own_cgroups(_read(self_cgroup))
    rejected: list[str] = []
    for mode in LIMITS_MODES:
        if prefer is not None and mode != prefer:
            continue
        if mode == "rlimit":
            why = "rlimit mode asked for" if prefer == "rlimit" else (
                f"no writable cgroup with memory and cpu controllers ({'; '.join(rejected)})")
            return LimitsInfo("rlimit", None, f"{why}: RLIMIT_AS caps address space, threads cap CPU")
        mount = _v2_mount(root) if mode == "cgroup2" else root
        if mount is None:
            rejected.append(f"cgroup v2: no cgroup2 mount at {root} or {root / 'unified'}")
            continue
        parents, why = _parents(mode, mount, own)
        if parents is None:
            rejected.append(f"{'cgroup v2' if mode == 'cgroup2' else 'cgroup v1'}: {why}")
            continue
        if mode == "cgroup2":
            why = f"cgroup v2 {why}"
        if rejected:
            why += f" (not chosen: {'; '.join(rejected)})"
        return LimitsInfo(mode, str(mount), why)
    raise LimitsError(f"limits mode {prefer!r} is not usable here: {'; '.join(rejected)}; "
                      "leave the mode unset to use the strongest one available")


# ------------------------------------------------------------------------------ file I/O


def _write(path: Path, value: str) -> None:
    """One write(2), as cgroup files want; errors say which file and what was written."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise LimitsError(f"could not write {value!r} to {path}: {exc.strerror or exc}") from exc


def _keyed(path: Path, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed cgroup file (``memory.events``, ``cpu.stat``...)."""
    for line in _read(path).splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            with contextlib.suppress(ValueError):
                return int(v)
    return None


def _int_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _enable_controllers(cgroup: Path) -> None:
    """Hand memory and cpu down to ``cgroup``'s children (v2), unless it already does."""
    if not {"memory", "cpu"} <= _words(cgroup / "cgroup.subtree_control"):
        _write(cgroup / "cgroup.subtree_control", "+memory +cpu")


def _pids(cgroup: Path) -> list[int]:
    return [int(p) for p in _read(cgroup / "cgroup.procs").split()]


def _kill_and_remove(dirs: list[Path]) -> None:
    """SIGKILL every process in ``dirs`` and rmdir them, until gone; FileNotFound is success."""
    deadline = time.monotonic() + _KILL_WAIT_S
    while True:
        left = [d for d in dirs if d.is_dir()]
        if not left:
            return
        for d in left:
            if (d / "cgroup.kill").exists():  # v2, kernel >= 5.14: atomic, no fork race
                with contextlib.suppress(LimitsError):
                    _write(d / "cgroup.kill", "1")
            for pid in _pids(d):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise LimitsError(
                        f"could not remove cgroup {d}: {exc.strerror} (processes left: {_pids(d)}); "
                        "a process stuck in the kernel (state D) cannot be killed until its I/O ends"
                    ) from exc
        if any(d.is_dir() for d in dirs):
            time.sleep(0.005)  # the kernel needs a moment to take SIGKILLed tasks out


# -------------------------------------------------------------------------------- instance


class InstanceLimits:
    """One instance's limits: a cgroup (v1: one in each of memory and cpu) named
    servelab/<instance_id>, or rlimits.

    Constructing it does no I/O, so the fork server can rebuild one from a few fields in the
    child. The cgroup directories are found from the mode's root and the cgroup the calling
    process is in; the platform, its fork server and its children are all in the same one.
    """

    def __init__(self, instance_id: str, limits: ResourceLimits, info: LimitsInfo) -> None:
        self.instance_id = validate_name(instance_id, what="instance id")
        self.limits = limits
        self.info = info
        self._dirs: dict[str, Path] | None = None

    def to_dict(self) -> dict:
        """Plain JSON-able fields, for handing the limits to a fork server."""
        return {"instance_id": self.instance_id, "memory_mb": self.limits.memory_mb,
                "cpus": self.limits.cpus, "mode": self.info.mode, "root": self.info.root,
                "reason": self.info.reason}

    @classmethod
    def from_dict(cls, d: dict) -> InstanceLimits:
        return cls(d["instance_id"], ResourceLimits(d["memory_mb"], d["cpus"]),
                   LimitsInfo(d["mode"], d.get("root"), d.get("reason", "")))

    @property
    def paths(self) -> dict[str, Path]:
        """The instance's cgroup directories by controller (``unified`` for v2; empty for rlimit)."""
        if self._dirs is None:
            if self.info.mode == "rlimit":
                self._dirs = {}
            else:
                if self.info.root is None:
                    raise LimitsError(f"limits mode {self.info.mode} needs a cgroup root; use detect()")
                own = _own_cgroups(_read(Path("/proc/self/cgroup")))
                parents, why = _parents(self.info.mode, Path(self.info.root), own)
                if parents is None:
                    raise LimitsError(f"cannot place instance {self.instance_id}'s cgroup: {why}")
                self._dirs = {c: p / GROUP / self.instance_id for c, p in parents.items()}
        return self._dirs

    # -- parent side -------------------------------------------------------------------

    def create(self) -> None:
        """Make the cgroup(s) and write the limits, swap included so the limit really bites.

        Reuses an existing empty cgroup of the same name; refuses one with processes in it,
        since that belongs to a live instance (or a crashed platform's: see cleanup_stale).
        """
        if self.info.mode == "rlimit":
            return
        for d in self.paths.values():
            if d.is_dir() and _pids(d):
                raise LimitsError(f"cgroup {d} already has processes {_pids(d)}: instance id "
                                  f"{self.instance_id!r} is in use, or left by a crashed platform "
                                  "(call cleanup_stale() at start-up)")
        try:
            if self.info.mode == "cgroup2":
                self._create_v2(self.paths["unified"])
            else:
                self._create_v1()
        except LimitsError:
            self.destroy()
            raise

    def _mkdir(self, d: Path) -> None:
        try:
            d.mkdir(exist_ok=True)
        except OSError as exc:
            raise LimitsError(f"could not create cgroup {d}: {exc.strerror or exc}") from exc

    def _create_v2(self, d: Path) -> None:
        group = d.parent
        _enable_controllers(group.parent)
        self._mkdir(group)
        _enable_controllers(group)
        self._mkdir(d)
        limit = str(self.limits.memory_mb * MB)
        _write(d / "memory.max", limit)
        if (d / "memory.swap.max").exists():  # absent when swap accounting is off: no swap to use
            _write(d / "memory.swap.max", "0")
        if (d / "memory.oom.group").exists():  # an OOM kills the whole instance, not one thread of it
            _write(d / "memory.oom.group", "1")
        _write(d / "cpu.max", f"{self._quota_us()} {CFS_PERIOD_US}")

    def _create_v1(self) -> None:
        paths = self.paths
        for d in paths.values():
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LimitsError(f"could not create cgroup {d}: {exc.strerror or exc}") from exc
        mem, cpu = paths["memory"], paths["cpu"]
        limit = str(self.limits.memory_mb * MB)
        _write(mem / "memory.limit_in_bytes", limit)  # before memsw: memsw may never be below it
        if (mem / "memory.memsw.limit_in_bytes").exists():  # memory+swap = memory: no swapping out
            _write(mem / "memory.memsw.limit_in_bytes", limit)
        _write(mem / "memory.oom_control", "0")  # a new memcg inherits oom_kill_disable; we want kills
        _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(self._quota_us()))

    def _quota_us(self) -> int:
        assert self.limits.cpus is not None
        return max(MIN_CFS_QUOTA_US, round(self.limits.cpus * CFS_PERIOD_US))

    # -- child side --------------------------------------------------------------------

    def enter(self) -> None:
        """Move this process into the instance's cgroup(s), or cap its address space.

        Call it first thing after fork, before the function's code allocates anything: memory
        already charged elsewhere stays there. In rlimit mode the cap is what this process has
        mapped now (a forked child inherits the fork server's imports) plus the memory size
        plus room for its threads.
        """
        if self.info.mode == "rlimit":
            self._set_rlimit(_vm_size_mb())
            return
        pid = str(os.getpid())
        for d in self.paths.values():
            _write(d / "cgroup.procs", pid)

    def preexec_fn(self) -> Callable[[], None]:
        """For ``subprocess.Popen(preexec_fn=...)``: enters the limits between fork and exec.

        Paths are resolved here, in the parent, so the child only writes a pid (or sets an
        rlimit). Its address-space cap cannot be measured before exec, so it assumes
        SPAWN_BASELINE_MB for the interpreter and runtime it is about to load.
        """
        if self.info.mode == "rlimit":
            return lambda: self._set_rlimit(SPAWN_BASELINE_MB)
        dirs = list(self.paths.values())

        def _enter() -> None:
            pid = str(os.getpid()).encode()
            for d in dirs:
                try:
                    fd = os.open(d / "cgroup.procs", os.O_WRONLY)
                    try:
                        os.write(fd, pid)
                    finally:
                        os.close(fd)
                except OSError as exc:  # Popen only says "Exception occurred in preexec_fn"
                    os.write(2, f"servelab: cannot enter cgroup {d}: {exc}\n".encode())
                    raise

        return _enter

    def _set_rlimit(self, baseline_mb: float) -> None:
        cap_mb = baseline_mb + self.limits.memory_mb + self.limits.threads * THREAD_ADDRESS_SPACE_MB
        cap = int(cap_mb * MB)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        # soft = hard: the function's code cannot lift its own cap
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    # -- measurements (parent side) --------------------------------------------------------

    def _mem_dir(self) -> Path | None:
        p = self.paths
        return p.get("unified") or p.get("memory")

    def memory_peak_mb(self) -> float | None:
        """Highest memory charged to the instance (page cache included), or None if unknown."""
        d = self._mem_dir()
        if d is None:
            return None
        v = _int_file(d / ("memory.peak" if self.info.mode == "cgroup2" else "memory.max_usage_in_bytes"))
        return None if v is None else v / MB

    def memory_current_mb(self) -> float | None:
        d = self._mem_dir()
        if d is None:
            return None
        v = _int_file(d / ("memory.current" if self.info.mode == "cgroup2" else "memory.usage_in_bytes"))
        return None if v is None else v / MB

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this instance.

        v1 kernels before 4.13 have no ``oom_kill`` counter; there a hit limit (``failcnt``) is
        the best evidence, though reclaim alone can raise it. rlimit mode never kills: False.
        """
        d = self._mem_dir()
        if d is None:
            return False
        if self.info.mode == "cgroup2":
            return (_keyed(d / "memory.events", "oom_kill") or 0) > 0
        kills = _keyed(d / "memory.oom_control", "oom_kill")
        if kills is not None:
            return kills > 0
        return (_int_file(d / "memory.failcnt") or 0) > 0

    def cpu_usage_s(self) -> float | None:
        """CPU seconds used by the instance's processes, living and exited, or None if not counted."""
        p = self.paths
        if self.info.mode == "cgroup2":
            usec = _keyed(p["unified"] / "cpu.stat", "usage_usec")
            return None if usec is None else usec / 1e6
        if self.info.mode == "cgroup1":
            acct = p.get("cpuacct", p["cpu"])
            ns = _int_file(acct / "cpuacct.usage")
            return None if ns is None else ns / 1e9
        return None

    def destroy(self) -> None:
        """Kill whatever is left in the cgroup(s) and remove them. Idempotent."""
        if self.info.mode == "rlimit":
            return
        _kill_and_remove(list(self.paths.values()))

    def __repr__(self) -> str:
        return (f"InstanceLimits({self.instance_id!r}, memory_mb={self.limits.memory_mb}, "
                f"cpus={self.limits.cpus:.3f}, mode={self.info.mode!r})")


def _vm_size_mb() -> float:
    for line in _read(Path("/proc/self/status")).splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cleanup_stale(info: LimitsInfo) -> int:
    """Kill and remove every ``servelab/*`` cgroup left by a crashed platform; returns how many.

    Call it when a platform starts, before it creates instances. Instances are found in the
    memory hierarchy (the one v2 tree, or v1's ``memory``), which is nested in the platform's
    own cgroup; their v1 cpu/cpuacct twins go with them. Driving it from there means that on a
    machine where several sessions share the v1 ``cpu`` root, one platform never kills
    another's instances.
    """
    if info.mode == "rlimit":
        return 0
    probe = InstanceLimits("probe", ResourceLimits(MIN_MEMORY_MB), info)
    mem = probe._mem_dir()
    assert mem is not None
    group = mem.parent
    names = sorted(p.name for p in group.iterdir() if p.is_dir()) if group.is_dir() else []
    for name in names:
        _kill_and_remove([p.parent / name for p in probe.paths.values()])
    return len(names)


if __name__ == "__main__":  # `python -m servelab.platform.limits`: what this machine enforces
    found = detect()
    print(f"mode:   {found.mode}\nroot:   {found.root}\nreason: {found.reason}\n")
    print(f"{'memory_mb':>9}  {'vCPUs':>6}  {'threads':>7}")
    for m in (128, 512, 1024, 1769, 3008, 10240):
        r = ResourceLimits.for_memory(m)
        print(f"{m:>9}  {r.cpus:>6.3f}  {r.threads:>7}")
