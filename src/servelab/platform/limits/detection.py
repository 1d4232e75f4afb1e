"""Which limits mode this machine allows (cgroup v2, then v1, then rlimits), and where."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from servelab.errors import ConfigError, LimitsError
from servelab.platform.limits import cgroup_v1, cgroup_v2
from servelab.platform.limits.cgroupfs import own_cgroups, read

if TYPE_CHECKING:
    from servelab.platform.limits.stale import InstanceLedger

LimitsMode = Literal["cgroup2", "cgroup1", "rlimit"]
LIMITS_MODES: tuple[LimitsMode, ...] = ("cgroup2", "cgroup1", "rlimit")  # detection order


@dataclass(frozen=True)
class LimitsInfo:
    """Which mechanism enforces limits here, where its cgroup tree is, and why it was chosen.

    ``ledger``, when set, is where the platform that owns these limits writes down each cgroup
    it creates, so that its next start cleans up only its own (see :mod:`.stale`).
    """

    mode: LimitsMode
    root: str | None  # the cgroup mount root (v1: the dir holding memory/ and cpu/); None for rlimit
    reason: str
    ledger: InstanceLedger | None = field(default=None, compare=False, repr=False)


def parents(mode: LimitsMode, root: Path, own: dict[str, str]) -> tuple[dict[str, Path] | None, str]:
    """The directories (by controller; ``unified`` for v2) where ``servelab/`` goes, or None and why."""
    if mode == "cgroup2":
        where, why = cgroup_v2.parent(root, own.get(""))
        return ({"unified": where} if where else None), why
    if mode == "cgroup1":
        return cgroup_v1.parents(root, own)
    return {}, "rlimit needs no cgroup"


def own_cgroup_map(self_cgroup: Path = Path("/proc/self/cgroup")) -> dict[str, str]:
    return own_cgroups(read(self_cgroup))


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
    own = own_cgroup_map(self_cgroup)
    rejected: list[str] = []
    for mode in LIMITS_MODES:
        if prefer is not None and mode != prefer:
            continue
        if mode == "rlimit":
            why = "rlimit mode asked for" if prefer == "rlimit" else (
                f"no writable cgroup with memory and cpu controllers ({'; '.join(rejected)})")
            return LimitsInfo("rlimit", None, f"{why}: RLIMIT_AS caps address space, threads cap CPU")
        mount = cgroup_v2.mount(root) if mode == "cgroup2" else root
        if mount is None:
            rejected.append(f"cgroup v2: no cgroup2 mount at {root} or {root / 'unified'}")
            continue
        found, why = parents(mode, mount, own)
        if found is None:
            rejected.append(f"{'cgroup v2' if mode == 'cgroup2' else 'cgroup v1'}: {why}")
            continue
        if mode == "cgroup2":
            why = f"cgroup v2 {why}"
        if rejected:
            why += f" (not chosen: {'; '.join(rejected)})"
        return LimitsInfo(mode, str(mount), why)
    raise LimitsError(f"limits mode {prefer!r} is not usable here: {'; '.join(rejected)}; "
                      "leave the mode unset to use the strongest one available")
