"""The dated price catalog: what each cloud charges, as data, with where each figure comes from.

Prices change; code should not. The shipped catalogs live in ``servelab/billing/prices/`` as
dated YAML files (``2026-11.yaml`` …); :func:`load_catalog` reads the newest one and lays any
user files over it, entry by entry (same ``id`` → the user's entry replaces the shipped one).
Library code never reads the environment: the CLI turns ``$SERVELAB_PRICES`` into paths.

Units are in the field names (``*_usd``, ``*_ms``, ``*_s``, ``*_mb``, ``*_gib``). A "GB" in a
GB-second is ``memory_mb / 1024`` — how AWS and GCP both count it.

Pricing models (a ``Literal`` plus a registry, like every enumeration in servelab):

- ``serverless``: a fee per request plus billed duration × (GB × $/GB-s [+ GHz × $/GHz-s]
  [+ vCPU × $/vCPU-s]); durations round up to ``rounding_ms`` with a ``min_billed_ms`` floor.
  Memory/CPU ``tiers`` (GCF gen1: 256 MB ⇒ 400 MHz) fix the allowed sizes and the CPU that
  comes with each. An optional ``provisioned`` block is the provisioned-concurrency add-on
  (per GB-s provisioned, and a reduced duration price for requests served by it).
- ``instance_hour``: a price per instance-hour, billed in ``billing_granularity_s`` steps with
  a ``minimum_billed_s`` floor (EC2/GCE: per second, 60 s minimum).
"""

from __future__ import annotations

import datetime as dt
import difflib
import importlib.resources
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from servelab.errors import ConfigError

PricingModel = Literal["serverless", "instance_hour"]

_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
_SHIPPED_PACKAGE = "servelab.billing"
_SHIPPED_DIR = "prices"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tier(_Frozen):
    """One allowed memory size and the CPU it brings (GHz for GCF gen1, vCPU for gen2)."""

    memory_mb: int = Field(gt=0)
    ghz: float | None = Field(default=None, ge=0)
    vcpu: float | None = Field(default=None, ge=0)


class Provisioned(_Frozen):
    """Provisioned-concurrency add-on (AWS Lambda): warm capacity billed whether used or not."""

    per_gb_second_usd: float = Field(ge=0)  # per GB-s of provisioned capacity, busy or idle
    duration_per_gb_second_usd: float = Field(ge=0)  # duration price of requests it serves
    billing_granularity_s: float = Field(default=300, gt=0)  # AWS rounds up to 5 minutes


class _EntryBase(_Frozen):
    id: str = Field(pattern=_ID_PATTERN)
    provider: str = Field(min_length=1)
    service: str = Field(min_length=1)
    region: str = Field(min_length=1)
    source: str = Field(min_length=1)
    confirmed: bool


class ServerlessEntry(_EntryBase):
    model: Literal["serverless"]
    per_million_requests_usd: float = Field(ge=0)
    per_gb_second_usd: float = Field(ge=0)
    per_ghz_second_usd: float = Field(default=0.0, ge=0)
    per_vcpu_second_usd: float = Field(default=0.0, ge=0)
    rounding_ms: float = Field(gt=0)
    min_billed_ms: float = Field(default=0.0, ge=0)
    min_memory_mb: int | None = Field(default=None, gt=0)
    max_memory_mb: int | None = Field(default=None, gt=0)
    tiers: tuple[Tier, ...] = ()
    provisioned: Provisioned | None = None
    # From this date the INIT phase of environments started on demand is billed as duration
    # (servelab.billing.rules.init_billed); None: init is never billed.
    init_billed_from: dt.date | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ServerlessEntry:
        mems = [t.memory_mb for t in self.tiers]
        if mems != sorted(set(mems)):
            raise ValueError("tiers: memory_mb must be strictly increasing")
        if self.per_ghz_second_usd > 0 and any(t.ghz is None for t in self.tiers):
            raise ValueError("tiers: every tier needs 'ghz' when per_ghz_second_usd > 0")
        if self.per_ghz_second_usd > 0 and not self.tiers:
            raise ValueError("tiers: per_ghz_second_usd needs tiers that say each size's ghz")
        if self.per_vcpu_second_usd > 0 and (not self.tiers or any(t.vcpu is None for t in self.tiers)):
            raise ValueError("tiers: every tier needs 'vcpu' when per_vcpu_second_usd > 0")
        lo, hi = self.min_memory_mb, self.max_memory_mb
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_memory_mb ({lo}) is above max_memory_mb ({hi})")
        return self


class InstanceHourEntry(_EntryBase):
    model: Literal["instance_hour"]
    instance_type: str = Field(min_length=1)
    hourly_usd: float = Field(ge=0)  # per instance-hour, GPUs included
    billing_granularity_s: float = Field(default=1.0, gt=0)
    minimum_billed_s: float = Field(default=0.0, ge=0)
    vcpus: float | None = Field(default=None, gt=0)
    memory_gib: float | None = Field(default=None, gt=0)
    gpu_type: str | None = None
    gpu_count: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _gpu(self) -> InstanceHourEntry:
        if self.gpu_count > 0 and not self.gpu_type:
            raise ValueError("gpu_type is required when gpu_count > 0")
        return self


PriceEntry = ServerlessEntry | InstanceHourEntry
PRICING_MODELS: dict[PricingModel, type[PriceEntry]] = {
    "serverless": ServerlessEntry,
    "instance_hour": InstanceHourEntry,
}
_ENTRY = TypeAdapter(Annotated[PriceEntry, Field(discriminator="model")])


class _Header(_Frozen):
    catalog_version: int = Field(ge=1)
    date: dt.date
    currency: Literal["USD"]
    entries: list[dict[str, Any]]


@dataclass(frozen=True)
class CatalogFile:
    """Where a set of entries came from: every cost figure names its entry and this date."""

    path: str
    catalog_version: int
    date: str  # ISO date of the catalog file


@dataclass(frozen=True)
class Catalog:
    """Entries by id, each remembering the file (and so the date) it came from."""

    entries: Mapping[str, PriceEntry]
    origins: Mapping[str, CatalogFile]
    files: tuple[CatalogFile, ...]

    def get(self, entry_id: str) -> PriceEntry:
        try:
            return self.entries[entry_id]
        except KeyError:
            close = difflib.get_close_matches(entry_id, list(self.entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"no price entry {entry_id!r}{hint} (`servelab cost catalog` lists the ids)"
            ) from None

    def origin(self, entry_id: str) -> CatalogFile:
        self.get(entry_id)
        return self.origins[entry_id]

    def select(self, *, provider: str | None = None, model: PricingModel | None = None) -> list[PriceEntry]:
        return [e for e in self.entries.values()
                if (provider is None or e.provider == provider) and (model is None or e.model == model)]

    def __iter__(self) -> Iterator[PriceEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self.entries


def shipped_catalogs() -> list[str]:
    """Names of the catalogs shipped with servelab, oldest first (``["2026-11"]``)."""
    root = importlib.resources.files(_SHIPPED_PACKAGE).joinpath(_SHIPPED_DIR)
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def load_catalog(*extra_paths: str | os.PathLike[str], shipped: str | None = None) -> Catalog:
    """The newest shipped catalog (or the one named ``shipped``), with ``extra_paths`` laid over it.

    Later files win: an entry whose ``id`` is already present replaces it whole; a new id is
    added. Every file must carry ``catalog_version``, ``date`` and ``currency: USD``.
    """
    names = shipped_catalogs()
    if not names:
        raise ConfigError("servelab ships no price catalog (the package is incomplete; reinstall it)")
    name = shipped or names[-1]
    if name not in names:
        raise ConfigError(f"no shipped catalog {name!r}; shipped: {', '.join(names)}")
    ref = importlib.resources.files(_SHIPPED_PACKAGE).joinpath(_SHIPPED_DIR, f"{name}.yaml")
    layers = [(f"servelab/billing/prices/{name}.yaml", ref.read_text(encoding="utf-8"))]
    for p in extra_paths:
        path = Path(p).expanduser()
        try:
            layers.append((str(path), path.read_text(encoding="utf-8")))
        except OSError as e:
            raise ConfigError(f"cannot read price file {str(path)!r}: {e.strerror or e}") from None

    entries: dict[str, PriceEntry] = {}
    origins: dict[str, CatalogFile] = {}
    files = []
    for label, text in layers:
        cat_file, file_entries = _parse_file(label, text)
        files.append(cat_file)
        for entry in file_entries:
            entries[entry.id] = entry
            origins[entry.id] = cat_file
    return Catalog(MappingProxyType(entries), MappingProxyType(origins), tuple(files))


def parse_entry(data: Mapping[str, Any], *, where: str = "<entry>") -> PriceEntry:
    """Validate one entry mapping; a bad one raises ConfigError naming ``where``, the id and field."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: an entry must be a mapping, got {type(data).__name__}")
    entry_id = data.get("id", "<no id>")
    model = data.get("model")
    if model not in PRICING_MODELS:
        raise ConfigError(f"{where}: entry {entry_id!r}, field 'model': {model!r} is not one of "
                          f"{', '.join(PRICING_MODELS)}")
    try:
        return _ENTRY.validate_python(dict(data))
    except ValidationError as e:
        raise ConfigError(f"{where}: entry {entry_id!r}: {_explain(e, skip=1)}") from None


def _parse_file(label: str, text: str) -> tuple[CatalogFile, list[PriceEntry]]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: a price file is a mapping with catalog_version, date, currency "
                          "and entries")
    try:
        header = _Header.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{label}: {_explain(e)}") from None
    cat_file = CatalogFile(label, header.catalog_version, header.date.isoformat())
    seen: set[str] = set()
    out = []
    for i, data in enumerate(header.entries):
        entry = parse_entry(data, where=f"{label} (entries[{i}])")
        if entry.id in seen:
            raise ConfigError(f"{label}: entry id {entry.id!r} appears twice; ids must be unique")
        seen.add(entry.id)
        out.append(entry)
    return cat_file, out


def _explain(err: ValidationError, *, skip: int = 0) -> str:
    """Pydantic's errors as 'field 'a.b': message', dropping the union tag from the location."""
    parts = []
    for item in err.errors():
        loc = ".".join(str(x) for x in item["loc"][skip:]) or "(entry)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; docs/cost.md lists the fields)"
        parts.append(f"field {loc!r}: {msg}")
    return "; ".join(parts)
