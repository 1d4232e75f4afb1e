"""Model profiles: the service times the simulator draws from, as data (YAML).

A profile says, for one model and runtime, how long things take on one platform:

* ``cold_start`` — the init time of a fresh instance (a distribution), its parts (process
  start, imports, model fetch, model load) as shares, and the extra time of an instance's
  first inference;
* ``inference`` — the function's execution time (``duration_ms``, what is billed) per device,
  memory size and batch size, each a distribution;
* ``dispatch_overhead_ms`` — time an instance stays held beyond ``duration_ms`` (IPC, decode:
  the platform's own time per batch) and ``client_overhead_ms`` — time outside the platform
  (HTTP, the client), which adds to latency but not to the instance's occupancy.

Profiles are measured by ``servelab profile`` (:mod:`servelab.calibrate.measure`) or written by hand
(``profiles/study-aws-gcp.yaml`` ships with servelab). Every figure may carry a source in
``sources`` (the field path → where the number comes from, or "assumed: why").

A distribution is a number (a constant) or ``{quantiles: {p: value}}`` with ``p`` in [0, 1];
it is sampled by linear interpolation of the inverse CDF between the given quantiles (flat
beyond the first and last). Units: milliseconds (``*_ms``), MB (``*_mb``).

Looking up a size that was not measured (see :meth:`Profile.service`):

* batch size — quantiles are interpolated linearly between the nearest measured batch sizes
  and extrapolated linearly (never decreasing) from the last two: execution time is close to
  affine in batch size for CNNs on CPU;
* memory size — the nearest measured size below (else above) is scaled by the ratio of usable
  vCPUs (:func:`servelab.core.resources.cpus_for_memory`, Lambda's rule: 1 vCPU at 1,769 MB).
  Usable means at most 1 unless ``threads_scale`` (a multi-threaded runtime). Assumed: time
  inversely proportional to the usable CPU share; init time scales the same way.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servelab.core.resources import cpus_for_memory
from servelab.errors import ConfigError

PROFILE_VERSION = 1
Device = Literal["cpu", "gpu"]
PROFILES_DIR = Path(__file__).parent / "profiles"
INIT_PARTS = ("process", "import", "fetch", "load")


@dataclass(frozen=True)
class Dist:
    """An empirical distribution given by quantiles; ``sample`` is vectorised."""

    probs: tuple[float, ...]
    values: tuple[float, ...]

    @classmethod
    def constant(cls, value: float) -> Dist:
        return cls((0.0, 1.0), (float(value), float(value)))

    @classmethod
    def parse(cls, raw: Any, *, where: str) -> Dist:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            if raw < 0 or not math.isfinite(raw):
                raise ConfigError(f"{where}: a time must be a finite number >= 0, got {raw!r}")
            return cls.constant(raw)
        if isinstance(raw, Mapping) and set(raw) == {"quantiles"} and isinstance(raw["quantiles"], Mapping):
            items = sorted((float(p), float(v)) for p, v in raw["quantiles"].items())
            if not items:
                raise ConfigError(f"{where}: 'quantiles' is empty")
            probs, values = zip(*items, strict=True)
            if probs[0] < 0 or probs[-1] > 1:
                raise ConfigError(f"{where}: quantile probabilities must be in [0, 1], got {list(probs)}")
            if any(b < a for a, b in itertools.pairwise(values)) or values[0] < 0:
                raise ConfigError(f"{where}: quantile values must be >= 0 and non-decreasing, got {list(values)}")
            if len(probs) == 1:
                return cls.constant(values[0])
            return cls(tuple(probs), tuple(values))
        raise ConfigError(f"{where}: a distribution is a number (ms) or {{quantiles: {{0.5: ms, 0.95: ms, ...}}}}, "
                          f"got {raw!r}")

    @classmethod
    def from_samples(cls, samples: Any, probs: tuple[float, ...] = (0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95,
                                                                  0.99, 1)) -> Dist:
        x = np.asarray(samples, dtype=np.float64)
        if x.size == 0:
            raise ConfigError("cannot build a distribution from no samples")
        return cls(tuple(float(p) for p in probs), tuple(float(v) for v in np.quantile(x, probs)))

    def to_yaml(self) -> Any:
        if self.values[0] == self.values[-1]:
            return round(self.values[0], 4)
        return {"quantiles": {round(p, 4): round(v, 4) for p, v in zip(self.probs, self.values, strict=True)}}

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.values[0] == self.values[-1]:
            return np.full(n, self.values[0])
        return np.interp(rng.random(n), self.probs, self.values)

    def quantile(self, p: float) -> float:
        return float(np.interp(p, self.probs, self.values))

    @property
    def median(self) -> float:
        return self.quantile(0.5)

    @property
    def mean(self) -> float:
        """Mean of the piecewise-linear inverse CDF (flat tails beyond the given quantiles)."""
        p = np.array((0.0, *self.probs, 1.0))
        v = np.array((self.values[0], *self.values, self.values[-1]))
        return float(np.sum(np.diff(p) * (v[1:] + v[:-1]) / 2))

    def scaled(self, factor: float) -> Dist:
        return Dist(self.probs, tuple(v * factor for v in self.values))

    def shifted(self, ms: float) -> Dist:
        return Dist(self.probs, tuple(max(0.0, v + ms) for v in self.values))


def _interp_dists(a: Dist, b: Dist, w: float) -> Dist:
    """(1 - w)·a + w·b, quantile by quantile, on the union of their probabilities."""
    probs = tuple(sorted(set(a.probs) | set(b.probs)))
    va = np.interp(probs, a.probs, a.values)
    vb = np.interp(probs, b.probs, b.values)
    return Dist(probs, tuple(float(max(0.0, x)) for x in (1 - w) * va + w * vb))


# ---------------------------------------------------------------------------------------- schema


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


def _dist(v: Any, where: str) -> Dist:
    return v if isinstance(v, Dist) else Dist.parse(v, where=where)


class ColdStart(_Model):
    init_ms: Dist
    parts: dict[str, float] = Field(default_factory=dict)  # share of init_ms per part, sums to <= 1
    first_inference_extra_ms: Dist = Dist.constant(0.0)

    @field_validator("init_ms", "first_inference_extra_ms", mode="before")
    @classmethod
    def _d(cls, v: Any, info: Any) -> Dist:
        return _dist(v, f"cold_start.{info.field_name}")

    @field_validator("parts")
    @classmethod
    def _parts(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(INIT_PARTS))
        if unknown:
            raise ValueError(f"unknown init part(s) {unknown}; allowed: {', '.join(INIT_PARTS)}")
        if any(x < 0 for x in v.values()) or sum(v.values()) > 1.0 + 1e-6:
            raise ValueError(f"init part shares must be >= 0 and sum to at most 1, got {v}")
        return v


class InferenceEntry(_Model):
    """Execution time per batch size, on one device and memory size."""

    device: Device = "cpu"
    memory_mb: int | None = None  # None: any (a GPU server, or a CPU server of fixed size)
    batches: dict[int, Dist]

    @field_validator("batches", mode="before")
    @classmethod
    def _b(cls, v: Any) -> dict[int, Dist]:
        if not isinstance(v, Mapping) or not v:
            raise ValueError("batches maps batch size -> distribution (ms), with at least one entry")
        out = {}
        for k, d in v.items():
            if int(k) < 1:
                raise ValueError(f"batch sizes must be >= 1, got {k}")
            out[int(k)] = _dist(d, f"inference.batches[{k}]")
        return dict(sorted(out.items()))


class Profile(_Model):
    """Service times of one model on one platform. See the module docstring."""

    profile_version: int = PROFILE_VERSION
    model: str
    runtime: str = "onnxruntime"
    platform: str = "local"
    description: str = ""
    cold_start: ColdStart
    inference: tuple[InferenceEntry, ...]
    dispatch_overhead_ms: Dist = Dist.constant(0.0)
    client_overhead_ms: Dist = Dist.constant(0.0)
    threads_scale: bool = False  # more vCPUs above 1 speed up inference (multi-threaded runtime)
    measured: dict[str, Any] = Field(default_factory=dict)  # machine, date, settings of a measurement
    sources: dict[str, str] = Field(default_factory=dict)  # field path -> citation or "assumed: why"

    @field_validator("dispatch_overhead_ms", "client_overhead_ms", mode="before")
    @classmethod
    def _d(cls, v: Any, info: Any) -> Dist:
        return _dist(v, info.field_name)

    @model_validator(mode="after")
    def _check(self) -> Profile:
        if self.profile_version != PROFILE_VERSION:
            raise ValueError(f"profile_version {self.profile_version} is not supported (this servelab reads "
                             f"{PROFILE_VERSION})")
        if not self.inference:
            raise ValueError("a profile needs at least one inference entry")
        return self

    # ---- lookups ---------------------------------------------------------------------------
    def entries(self, device: Device) -> list[InferenceEntry]:
        found = [e for e in self.inference if e.device == device]
        if not found:
            have = sorted({e.device for e in self.inference})
            raise ConfigError(f"profile {self.model!r} has no {device} inference times (it has: {', '.join(have)})")
        return found

    def service(self, *, batch: int, memory_mb: int | None = None, device: Device = "cpu") -> Dist:
        """The execution-time distribution (ms) of a batch of ``batch`` at ``memory_mb`` on ``device``."""
        if batch < 1:
            raise ConfigError(f"batch must be >= 1, got {batch}")
        entry, factor = self._entry_for(memory_mb, device)
        return _by_batch(entry.batches, batch).scaled(factor)

    def init(self, *, memory_mb: int | None = None, device: Device = "cpu") -> Dist:
        """Init-time distribution (ms); scaled with the CPU share like inference (assumed)."""
        _, factor = self._entry_for(memory_mb, device)
        return self.cold_start.init_ms.scaled(factor)

    def memory_sizes(self, device: Device = "cpu") -> list[int]:
        return sorted(e.memory_mb for e in self.entries(device) if e.memory_mb is not None)

    def _entry_for(self, memory_mb: int | None, device: Device) -> tuple[InferenceEntry, float]:
        entries = self.entries(device)
        if memory_mb is None or device == "gpu":
            return entries[0], 1.0
        exact = [e for e in entries if e.memory_mb == memory_mb]
        if exact:
            return exact[0], 1.0
        sized = sorted((e for e in entries if e.memory_mb is not None), key=lambda e: e.memory_mb or 0)
        if not sized:
            return entries[0], 1.0
        below = [e for e in sized if (e.memory_mb or 0) < memory_mb]
        ref = below[-1] if below else sized[0]
        return ref, self._cpu_factor(ref.memory_mb or memory_mb, memory_mb)

    def _cpu_factor(self, ref_mb: int, memory_mb: int) -> float:
        """Time at ``memory_mb`` / time at ``ref_mb``: inverse CPU share, flat above 1 vCPU
        unless ``threads_scale``."""
        def usable(m: int) -> float:
            c = cpus_for_memory(m)
            return c if self.threads_scale else min(c, 1.0)
        return usable(ref_mb) / usable(memory_mb)

    # ---- files ----------------------------------------------------------------------------
    def to_yaml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "profile_version": self.profile_version, "model": self.model, "runtime": self.runtime,
            "platform": self.platform, "description": self.description,
            "cold_start": {"init_ms": self.cold_start.init_ms.to_yaml(), "parts": dict(self.cold_start.parts),
                           "first_inference_extra_ms": self.cold_start.first_inference_extra_ms.to_yaml()},
            "inference": [{"device": e.device, "memory_mb": e.memory_mb,
                           "batches": {b: d.to_yaml() for b, d in e.batches.items()}} for e in self.inference],
            "dispatch_overhead_ms": self.dispatch_overhead_ms.to_yaml(),
            "client_overhead_ms": self.client_overhead_ms.to_yaml(),
            "threads_scale": self.threads_scale,
            "measured": self.measured, "sources": self.sources,
        }
        return out

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_yaml_dict(), sort_keys=False))
        tmp.replace(p)
        return p


def _by_batch(batches: dict[int, Dist], batch: int) -> Dist:
    if batch in batches:
        return batches[batch]
    sizes = list(batches)
    if len(sizes) == 1:
        # one measured size: assume time proportional to the batch (no batching gain): pessimistic
        return batches[sizes[0]].scaled(batch / sizes[0])
    i = bisect.bisect_left(sizes, batch)
    if i == 0:
        lo, hi = sizes[0], sizes[1]
    elif i == len(sizes):
        lo, hi = sizes[-2], sizes[-1]
    else:
        lo, hi = sizes[i - 1], sizes[i]
    w = (batch - lo) / (hi - lo)
    d = _interp_dists(batches[lo], batches[hi], w)
    if batch > sizes[-1]:  # never faster than the largest measured batch
        top = batches[sizes[-1]]
        d = Dist(d.probs, tuple(max(v, top.quantile(p)) for p, v in zip(d.probs, d.values, strict=True)))
    return d


def parse_profile(data: Any, *, source: str = "profile") -> Profile:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a profile is a mapping, got {type(data).__name__}")
    try:
        return Profile.model_validate(dict(data))
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'profile'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{source}: invalid profile: {msgs}") from None


def shipped_profiles() -> dict[str, Path]:
    """Profiles that ship with servelab, by name (file stem)."""
    return {p.stem: p for p in sorted(PROFILES_DIR.glob("*.yaml"))}


def load_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name (``study-aws-gcp``) or a YAML file."""
    shipped = shipped_profiles()
    key = str(name_or_path)
    path = shipped[key] if key in shipped else Path(name_or_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"no profile {key!r}: not a file, and not a shipped profile "
                          f"({', '.join(shipped) or 'none'}); measure one with 'servelab profile MODEL'")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_profile(data, source=str(path))
