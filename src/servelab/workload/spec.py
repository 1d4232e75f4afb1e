"""Workload specs: what arrival process to generate, as frozen, validated pydantic models.

A spec is data only (constructing one reads no files, except that a trace spec without a
duration reads its CSV's header line to learn how long the trace is). ``generate`` in
``arrivals.py`` turns a spec into arrival times. Units: seconds for every time, requests per
second (rps) for every arrival rate, 1/s for Markov transition rates.

Specs come from three places, all through ``load_spec``: a preset name (``PRESETS``), a YAML or
JSON file, or an inline string such as ``poisson:rate=50`` or ``mmpp:rates=5,50;sojourn=10,2``.
"""

from __future__ import annotations

import json
import types
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

import numpy as np
import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    ValidationError,
    model_validator,
)

from servelab.errors import WorkloadError
from servelab.workload import mmpp

ArrivalKind = Literal["poisson", "constant", "mmpp", "step", "ramp", "onoff", "trace"]

DEFAULT_DURATION_S = 60.0


def _alias(name: str, short: str) -> Any:
    """Accept the unit-suffixed field name and a short form (``rate_rps`` or ``rate``)."""
    return AliasChoices(name, short)


class _Spec(BaseModel):
    """Fields and behaviour every arrival spec shares."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    kind: ArrivalKind
    duration_s: PositiveFloat = Field(DEFAULT_DURATION_S, validation_alias=_alias("duration_s", "duration"))

    # Library callers get WorkloadError (a ServelabError) with a message naming the key, not
    # pydantic's ValidationError. Specs embedded in other pydantic models still validate in the core.
    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise WorkloadError(_explain(e, type(self))) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as e:
            raise WorkloadError(_explain(e, cls)) from None

    @property
    def mean_rate_rps(self) -> float:
        """Expected arrivals per second: the long-run rate for stationary processes (Poisson,
        constant, MMPP, on-off), the average over ``duration_s`` for the others."""
        raise NotImplementedError

    @property
    def peak_rate_rps(self) -> float:
        """The highest instantaneous rate the process can reach (what capacity must absorb)."""
        raise NotImplementedError

    def _scaled_fields(self, factor: float) -> dict[str, Any]:
        raise NotImplementedError

    def scaled(self, factor: float) -> Self:
        """The same process with every arrival rate multiplied by ``factor`` (time structure —
        sojourns, steps, on/off periods, trace minutes — unchanged)."""
        if not (np.isfinite(factor) and factor > 0):
            raise WorkloadError(f"scale factor must be a finite number > 0; got {factor}")
        return type(self).model_validate({**self.model_dump(), **self._scaled_fields(float(factor))})

    def to_inline(self) -> str:
        """The inline form ``kind:key=value;…`` of this spec; ``load_spec`` reads it back to an
        equal spec. Fields at their defaults are left out, except the duration (step and trace
        specs derive theirs, so leaving it out would not round-trip)."""
        parts = []
        fields = {"duration_s": self.duration_s} | self.model_dump(exclude_defaults=True, exclude={"kind"})
        for name, value in fields.items():
            if isinstance(value, (list, tuple)):
                if value and isinstance(value[0], (list, tuple)):
                    value = "/".join(",".join(_fmt(x) for x in row) for row in value)
                else:
                    value = ",".join(_fmt(x) for x in value)
            else:
                value = _fmt(value)
            parts.append(f"{name}={value}")
        return self.kind + (":" + ";".join(parts) if parts else "")


def _fmt(x: Any) -> str:
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        return f"{x:g}" if float(f"{x:g}") == x else repr(x)
    return str(x)


class PoissonSpec(_Spec):
    """Homogeneous Poisson arrivals: exponential inter-arrival times with mean 1/rate."""

    kind: Literal["poisson"] = "poisson"
    rate_rps: PositiveFloat = Field(validation_alias=_alias("rate_rps", "rate"))

    @property
    def mean_rate_rps(self) -> float:
        return self.rate_rps

    @property
    def peak_rate_rps(self) -> float:
        return self.rate_rps

    def _scaled_fields(self, factor: float) -> dict[str, Any]:
        return {"rate_rps": self.rate_rps * factor}


class ConstantSpec(_Spec):
    """One arrival every 1/rate seconds, starting at t = 0 (the wrk2 / vegeta open loop)."""

    kind: Literal["constant"] = "constant"
    rate_rps: PositiveFloat = Field(validation_alias=_alias("rate_rps", "rate"))

    @property
    def mean_rate_rps(self) -> float:
        return self.rate_rps

    @property
    def peak_rate_rps(self) -> float:
        return self.rate_rps

    def _scaled_fields(self, factor: float) -> dict[str, Any]:
        return {"rate_rps": self.rate_rps * factor}


class MMPPSpec(_Spec):
    """Markov-modulated Poisson process: a hidden Markov chain picks the rate.

    Give the chain in one of three forms:

    - ``q_per_s``: a generator matrix (rows sum to 0), the continuous-time chain;
    - ``sojourn_s`` per state plus optional ``jump`` probabilities (default: uniform over the
      other states), also continuous-time;
    - ``transition`` (rows sum to 1) with ``step_s`` (default 1 s): the discrete form the study
      used, the chain moving by ``transition`` at the end of every slot of ``step_s`` seconds.

    The chain starts in its stationary distribution unless ``initial_state`` is set. ``requests``
    sizes the workload by count, as the study did: exactly that many arrivals, however long they
    take; ``duration_s`` is then only the expected length (default: requests / mean rate), used to
    plan runs.
    """

    kind: Literal["mmpp"] = "mmpp"
    rates_rps: tuple[NonNegativeFloat, ...] = Field(
        min_length=1, validation_alias=_alias("rates_rps", "rates")
    )
    sojourn_s: tuple[PositiveFloat, ...] | None = Field(None, validation_alias=_alias("sojourn_s", "sojourn"))
    jump: tuple[tuple[float, ...], ...] | None = None
    q_per_s: tuple[tuple[float, ...], ...] | None = Field(None, validation_alias=_alias("q_per_s", "q"))
    transition: tuple[tuple[float, ...], ...] | None = Field(None, validation_alias=_alias("transition", "p"))
    step_s: PositiveFloat | None = Field(None, validation_alias=_alias("step_s", "step"))
    requests: int | None = Field(None, ge=1, le=200_000_000)
    initial_state: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check_chain(self) -> Self:
        n = len(self.rates_rps)
        forms = [k for k in ("q_per_s", "sojourn_s", "transition") if getattr(self, k) is not None]
        if len(forms) != 1:
            got = "none" if not forms else " and ".join(forms)
            raise WorkloadError(
                "mmpp needs exactly one of q_per_s (generator matrix, 1/s), sojourn_s (mean times, s) or "
                f"transition (probabilities per step_s slot); got {got}"
            )
        if self.jump is not None and self.sojourn_s is None:
            raise WorkloadError(
                "jump probabilities go with sojourn_s; with q_per_s or transition the jumps are already in the matrix"
            )
        if self.step_s is not None and self.transition is None:
            raise WorkloadError("step_s is the slot length of a transition matrix; give transition too")
        if self.sojourn_s is not None and len(self.sojourn_s) != n:
            raise WorkloadError(
                f"sojourn_s has {len(self.sojourn_s)} entries but rates_rps has {n}; give one per state"
            )
        matrix = self.transition_matrix if self.transition is not None else self.generator  # validates
        if matrix.shape[0] != n:
            which = "transition" if self.transition is not None else "q_per_s"
            raise WorkloadError(f"{which} is {matrix.shape[0]} x {matrix.shape[0]} but rates_rps has {n} states")
        if self.initial_state is not None and self.initial_state >= n:
            raise WorkloadError(f"initial_state {self.initial_state} is out of range; states are 0..{n - 1}")
        if self.requests is not None:
            if self.mean_rate_rps <= 0:
                raise WorkloadError("requests needs a process with arrivals; every state the chain visits has rate 0")
            if "duration_s" not in self.model_fields_set:
                # frozen model: set the derived default once, here, before anyone reads it
                object.__setattr__(self, "duration_s", self.requests / self.mean_rate_rps)
        return self

    @property
    def slot_s(self) -> float:
        """The discrete form's slot length (``step_s``, default 1 s)."""
        return 1.0 if self.step_s is None else float(self.step_s)

    @property
    def transition_matrix(self) -> np.ndarray:
        """The discrete form's transition matrix P (validated); only when ``transition`` is given."""
        if self.transition is None:
            raise WorkloadError("this mmpp is continuous (q_per_s or sojourn_s): it has no transition matrix")
        return mmpp.validate_transition(self.transition)

    @property
    def n_states(self) -> int:
        return len(self.rates_rps)

    @property
    def generator(self) -> np.ndarray:
        """The generator matrix Q (1/s), built from sojourn times if that is how it was given.
        For the discrete form, the continuous chain with the same mean holding times and jumps
        (``(P - I) / step_s``): what the slotted chain approaches as slots get shorter."""
        if self.transition is not None:
            return (self.transition_matrix - np.eye(self.n_states)) / self.slot_s
        if self.q_per_s is not None:
            return mmpp.validate_generator(self.q_per_s)
        assert self.sojourn_s is not None
        return mmpp.generator_from_sojourn(self.sojourn_s, self.jump)

    @property
    def stationary(self) -> np.ndarray:
        """Long-run fraction of time in each state."""
        if self.transition is not None:
            return mmpp.stationary_distribution_discrete(self.transition_matrix)
        return mmpp.stationary_distribution(self.generator)

    @property
    def mean_rate_rps(self) -> float:
        return float(self.stationary @ np.asarray(self.rates_rps))

    @property
    def peak_rate_rps(self) -> float:
        return max(self.rates_rps)

    def _scaled_fields(self, factor: float) -> dict[str, Any]:
        fields: dict[str, Any] = {"rates_rps": tuple(r * factor for r in self.rates_rps)}
        if self.requests is not None:  # the same count arrives factor times sooner
            fields["duration_s"] = self.duration_s / factor
        return fields


class StepSpec(_Spec):
    """Piecewise-constant Poisson rates: ``rates_rps[i]`` for ``steps_s[i]`` seconds, in order.

    One ``steps_s`` value applies to every step. After the last step the last rate holds, or the
    pattern starts again with ``repeat: true``. ``duration_s`` defaults to one pass of the pattern.
    """

    kind: Literal["step"] = "step"
    rates_rps: tuple[NonNegativeFloat, ...] = Field(
        min_length=1, validation_alias=_alias("rates_rps", "rates")
    )
    steps_s: tuple[PositiveFloat, ...] = Field(min_length=1, validation_alias=_alias("steps_s", "steps"))
    repeat: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_duration(cls, data: Any) -> Any:
        if isinstance(data, dict) and not ({"duration_s", "duration"} & data.keys()):
            try:
                rates = data.get("rates_rps", data.get("rates"))
                steps = data.get("steps_s", data.get("steps"))
                data = {**data, "duration_s": _step_lengths(rates, steps).sum()}
            except (TypeError, ValueError, WorkloadError):
                pass  # field validation reports the real problem
        return data

    @model_validator(mode="after")
    def _check_lengths(self) -> Self:
        _step_lengths(self.rates_rps, self.steps_s)
        return self

    def segments(self, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(start times, rates) of the constant-rate pieces that cover ``[0, duration_s)``."""
        lengths = _step_lengths(self.rates_rps, self.steps_s)
        rates = np.asarray(self.rates_rps, dtype=np.float64)
        starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
        period = lengths.sum()
        if self.repeat and duration_s > period:
            cycles = int(np.ceil(duration_s / period))
            starts = (starts[None, :] + period * np.arange(cycles)[:, None]).ravel()
            rates = np.tile(rates, cycles)
        keep = starts < duration_s
        return starts[keep], rates[keep]

    @property
    def mean_rate_rps(self) -> float:
        starts, rates = self.segments(self.duration_s)
        lengths = np.diff(np.append(starts, self.duration_s))
        return float(rates @ lengths / self.duration_s)

    @property
    def peak_rate_rps(self) -> float:
        return float(self.segments(self.duration_s)[1].max())

    def _scaled_fields(self, factor: float) -> dict[str, Any]:
        return {"rates_rps": tuple(r * factor for r in self.rates_rps)}


def _step_lengths(rates: Any, steps: Any) -> np.ndarray:
    lengths = np.asarray(steps, dtype=np.float64)
    if lengths.size == 1:
        lengths = np.full(len(rates), lengths.item())
    if lengths.size != len(rates):
        raise WorkloadError(
            f"steps_s has {lengths.size} entries but rates_rps has {len(rates)}; give one length per "
            "rate, or a single length for all"
        )
    return lengths


class RampSpec(_Spec):
    """Poisson arrivals whose rate rises (or falls) linearly from ``start_rps`` to ``end_rps``
    over ``ramp_s`` seconds (default: the whole run), then holds ``end_rps``."""

    kind: Literal["ramp"] = "ramp"
    start_rps: NonNegativeFloat = Field(validation_alias=_alias("start_rps", "start"))
    end_rps: NonNegativeFloat = Field(validation_alias=_alias("end_rps", "end"))
    ramp_s: PositiveFloat | None = Field(None, validation_alias=_alias("ramp_s", "ramp"))

    @model_validator(mode="after")
    def _check_not_empty(self) -> Self:
        if self.start_rps == 0 and self.end_rps == 0:
            raise WorkloadError("a ramp from 0 to 0 rps has no arrivals; set start_rps or end_rps > 0")
        return self

    def expected_count(self, duration_s: float) -> float:
        """Integral of the rate over ``[0, duration_s)``."""
        ramp = self.ramp_s or duration_s
        t = min(duration_s, ramp)
        slope = (self.end_rps - self.start_rps) / ramp
        return self.start_rps * t + 0.5 * slope * t * t + self.end_rps * max(0.0, duration_s - ramp)

    @property
    def mean_rate_rps(self) -> float:
        return self.expected_count(self.duration_s) / self.duration_s

    @property
    def peak_rate_rps(self) -> float:
        return max(self.start_rps, self.end_rps)

    def _scaled_fields(self, factor: float) -> dict[str, Any]:
        return {"start_rps": self.start_rps * factor, "end_rps": self.end_rps * factor}


class OnOffSpec(_Spec):
    """Periodic bursts: Poisson at ``on_rate_rps`` for ``on_s`` seconds, then at ``off_rate_rps``
    (default 0: silence, so instances go idle) for ``off_s`` seconds, repeating from t = 0.
    For random burst lengths use a two-state ``mmpp`` instead."""

    kind: Literal["onoff"] = "onoff"
    on_rate_rps: PositiveFloat = Field(validation_alias=_alias("on_rate_rps", "on_rate"))
    off_rate_rps: NonNegativeFloat = Field(0.0, validation_alias=_alias("off_rate_rps", "off_rate"))
    on_s: PositiveFloat = Field(validation_alias=_alias("on_s", "on"))
    off_s: PositiveFloat = Field(validation_alias=_alias("off_s", "off"))

    def segments(self, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
        period = self.on_s + self.off_s
        cycles = int(np.ceil(duration_s / period))
        starts = (np.array([0.0, self.on_s])[None, :] + period * np.arange(cycles)[:, None]).ravel()
        rates = np.tile([self.on_rate_rps, self.off_rate_rps], cycles)
        keep = starts < duration_s
        return starts[keep], rates[keep]

    @property
    def mean_rate_rps(self) -> float:
        return (self.on_rate_rps * self.on_s + self.off_rate_rps * self.off_s) / (self.on_s + self.off_s)

    @property
    def peak_rate_rps(self) -> float:
        return max(self.on_rate_rps, self.off_rate_rps)

    def _scaled_fields(self, factor: float) -> dict[str, Any]:
        return {"on_rate_rps": self.on_rate_rps * factor, "off_rate_rps": self.off_rate_rps * factor}


class TraceSpec(_Spec):
    """Replay of an Azure Functions 2019 invocation-count CSV (per-minute counts per function).

    Pick the function by ``function`` (its HashFunction, or a unique prefix), by ``row`` (0-based
    data row), or sum the ``top`` N functions by total invocations (default: top 1). Each trace
    minute lasts ``minute_s`` seconds (60 = real time; 6 = ten times faster) and each count is
    multiplied by ``count_scale`` (fractions rounded up or down at random, keeping the mean).
    Arrivals are spread within their minute uniformly at random (``spread: uniform``) or evenly.
    """

    kind: Literal["trace"] = "trace"
    path: str
    function: str | None = None
    row: int | None = Field(None, ge=0)
    top: int | None = Field(None, ge=1)
    start_minute: int = Field(0, ge=0)
    minutes: int | None = Field(None, ge=1)
    minute_s: PositiveFloat = 60.0
    count_scale: PositiveFloat = Field(1.0, validation_alias=_alias("count_scale", "scale"))
    spread: Literal["uniform", "even"] = "uniform"

    @model_validator(mode="before")
    @classmethod
    def _default_duration(cls, data: Any) -> Any:
        if isinstance(data, dict) and not ({"duration_s", "duration"} & data.keys()) and "path" in data:
            from servelab.workload.trace import read_header

            try:
                minute_s = float(data.get("minute_s", 60.0))
                start = int(data.get("start_minute", 0))
                minutes = None if data.get("minutes") is None else int(data["minutes"])
            except (TypeError, ValueError):
                return data  # field validation names the bad key
            if minutes is None:
                minutes = read_header(Path(data["path"])) - start
            data = {**data, "duration_s": max(minutes, 1) * minute_s}
        return data

    @model_validator(mode="after")
    def _check_selection(self) -> Self:
        chosen = [k for k in ("function", "row", "top") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise WorkloadError(f"choose one of function, row or top; got {' and '.join(chosen)}")
        return self

    @cached_property
    def counts(self) -> np.ndarray:
        """Per-minute invocation counts of the selected function(s), before ``count_scale``,
        from ``start_minute`` for ``minutes`` minutes (reads the CSV once per spec)."""
        from servelab.workload.trace import select_counts

        sel = select_counts(Path(self.path), function=self.function, row=self.row, top=self.top)
        end = None if self.minutes is None else self.start_minute + self.minutes
        counts = sel.counts[self.start_minute : end]
        if counts.size == 0:
            raise WorkloadError(
                f"start_minute {self.start_minute} is past the end of the trace ({sel.counts.size} minutes)"
            )
        return counts

    def counts_for(self, duration_s: float) -> np.ndarray:
        """The per-minute counts (before ``count_scale``) of the minutes that start before ``duration_s``."""
        n = min(self.counts.size, int(np.ceil(duration_s / self.minute_s)))
        return self.counts[:n]

    @property
    def mean_rate_rps(self) -> float:
        per_minute = self.counts_for(self.duration_s)
        # A partial last minute contributes its share of the minute.
        covered = np.minimum(self.minute_s, self.duration_s - self.minute_s * np.arange(per_minute.size))
        return float((per_minute * covered / self.minute_s).sum() * self.count_scale / self.duration_s)

    @property
    def peak_rate_rps(self) -> float:
        return float(self.counts_for(self.duration_s).max() * self.count_scale / self.minute_s)

    def _scaled_fields(self, factor: float) -> dict[str, Any]:
        return {"count_scale": self.count_scale * factor}


WorkloadSpec = Annotated[
    Union[PoissonSpec, ConstantSpec, MMPPSpec, StepSpec, RampSpec, OnOffSpec, TraceSpec],  # noqa: UP007
    Field(discriminator="kind"),
]

ARRIVALS: dict[ArrivalKind, type[_Spec]] = {
    "poisson": PoissonSpec,
    "constant": ConstantSpec,
    "mmpp": MMPPSpec,
    "step": StepSpec,
    "ramp": RampSpec,
    "onoff": OnOffSpec,
    "trace": TraceSpec,
}

# The study's loads, scaled to this project's reference machine: 2 cores running the load
# generator, the gateway and the instances of tiny models together. docs/workload.md gives the
# measurements behind the numbers. Every preset is a 2-state MMPP (a quiet and a busy regime)
# except "bursty", whose third state is a short spike far above the mean.
PRESETS: dict[str, WorkloadSpec] = {
    # Mostly idle: long gaps at 0.5 rps let keep-alive expire, so cold starts show up.
    "low": MMPPSpec(rates_rps=(0.5, 5.0), sojourn_s=(30.0, 10.0), duration_s=300.0),
    # A steady service one instance handles, with a busier regime a third of the time.
    "medium": MMPPSpec(rates_rps=(20.0, 60.0), sojourn_s=(20.0, 10.0), duration_s=300.0),
    # Sustained load that needs several instances; peaks near half of the platform's capacity.
    "high": MMPPSpec(rates_rps=(100.0, 250.0), sojourn_s=(20.0, 10.0), duration_s=300.0),
    # Quiet, normal and spike regimes; spikes (8x the mean) last 3 s on average.
    "bursty": MMPPSpec(rates_rps=(5.0, 40.0, 300.0), sojourn_s=(30.0, 20.0, 3.0), duration_s=300.0),
}


def parse_spec(data: Any, *, source: str = "spec") -> WorkloadSpec:
    """Validate a mapping (from YAML, JSON or code) into a WorkloadSpec, or raise WorkloadError
    naming the bad key and what is allowed."""
    if not isinstance(data, dict):
        raise WorkloadError(
            f"{source}: a workload spec is a mapping with a 'kind' key; got {type(data).__name__}"
        )
    kind = data.get("kind")
    if kind not in ARRIVALS:
        what = "has no 'kind'" if kind is None else f"has unknown kind {kind!r}"
        raise WorkloadError(f"{source} {what}; allowed kinds: {', '.join(ARRIVALS)}")
    try:
        return ARRIVALS[kind].model_validate(data)  # type: ignore[return-value]
    except WorkloadError as e:
        raise WorkloadError(f"{source}: {e}") from None


def _explain(err: ValidationError, cls: type[_Spec]) -> str:
    kind = cls.model_fields["kind"].default
    msgs, key_problem = [], False
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"])
        if e["type"] in ("extra_forbidden", "missing"):
            msgs.append(f"{'unknown' if e['type'] == 'extra_forbidden' else 'missing'} key {key!r}")
            key_problem = True
        elif not key:  # a model-level check; the message already says what to fix
            msgs.append(str(e["msg"]).removeprefix("Value error, "))
        else:
            msgs.append(f"{key}: {e['msg']} (got {e['input']!r})")
    if key_problem:
        keys = ", ".join(_key_help(name, f) for name, f in cls.model_fields.items() if name != "kind")
        msgs.append(f"keys for kind {kind!r}: {keys}")
    return "; ".join(msgs)


def _key_help(name: str, field: Any) -> str:
    short = [a for a in getattr(field.validation_alias, "choices", []) if a != name]
    label = f"{name} (or {short[0]})" if short else name
    return label if field.is_required() else f"{label}={_fmt(field.default)}"


def load_spec(text: str) -> WorkloadSpec:
    """Turn a preset name, a YAML/JSON file path, or an inline ``kind:key=value;…`` string into
    a spec.

    Inline values: lists are comma-separated (``rates=5,50``) and matrix rows are separated by
    ``/`` (``q=-0.1,0.1/0.5,-0.5``). Relative trace paths inside a spec file are resolved against
    the file's directory.
    """
    text = text.strip()
    if text in PRESETS:
        return PRESETS[text]
    path = Path(text).expanduser()
    if path.suffix.lower() in {".yaml", ".yml", ".json"} or path.is_file():
        return _load_file(path)
    kind, _, rest = text.partition(":")
    kind = kind.strip()
    if kind not in ARRIVALS:
        raise WorkloadError(
            f"cannot read workload {text!r}: not a preset ({', '.join(PRESETS)}), not a spec file, and "
            f"{kind!r} is not a kind ({', '.join(ARRIVALS)}); inline form: kind:key=value;key=value"
        )
    cls = ARRIVALS[kind]
    data: dict[str, Any] = {"kind": kind}
    for item in filter(None, (p.strip() for p in rest.split(";"))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise WorkloadError(f"inline workload {text!r}: expected key=value, got {item!r}")
        data[key] = _split_value(cls, key, value.strip())
    return parse_spec(data, source=f"workload {text!r}")


def _load_file(path: Path) -> WorkloadSpec:
    if not path.is_file():
        raise WorkloadError(f"workload spec file {path} does not exist")
    raw = path.read_text()
    try:
        data = json.loads(raw) if path.suffix.lower() == ".json" else yaml.safe_load(raw)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise WorkloadError(
            f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {e}"
        ) from None
    if isinstance(data, dict) and data.get("kind") == "trace" and "path" in data:
        trace_path = Path(str(data["path"])).expanduser()
        if not trace_path.is_absolute():
            data = {**data, "path": str(path.parent / trace_path)}
    return parse_spec(data, source=str(path))


def _split_value(cls: type[_Spec], key: str, value: str) -> Any:
    """Split an inline value into the nesting its field expects (scalar, list, or matrix)."""
    field = next(
        (
            f
            for n, f in cls.model_fields.items()
            if key == n or key in getattr(f.validation_alias, "choices", [])
        ),
        None,
    )
    depth = _list_depth(field.annotation) if field is not None else 0
    if depth == 2:
        return [[x.strip() for x in row.split(",")] for row in value.split("/")]
    if depth == 1:
        return [x.strip() for x in value.split(",")]
    return value


def _list_depth(annotation: Any) -> int:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return max(_list_depth(a) for a in get_args(annotation) if a is not type(None))
    if origin in (tuple, list):
        return 1 + _list_depth(get_args(annotation)[0])
    return 0
