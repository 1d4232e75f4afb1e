"""A production-shaped multi-function workload, calibrated to the Azure Functions 2019 trace.

The trace itself (Shahrad et al., "Serverless in the Wild", USENIX ATC'20) cannot be downloaded
on this machine, so this generator draws functions from the distributions the paper publishes,
and writes them in the trace's own per-minute format (readable by :mod:`servelab.workload.trace`).
What comes from the paper, as we read it, and what is ours:

* **Invocation frequency** (paper, Fig. 5a and section 3.2): daily invocations per function span
  about 8 orders of magnitude; 45% of applications are invoked once per hour or less on average
  and 81% once per minute or less. We fit a log-normal to those two points:
  ``log10(daily invocations) ~ Normal(mu=1.60, sigma=1.77)`` (P[<= 24/day] = 0.45,
  P[<= 1440/day] = 0.81), and clip at ``max_rate_per_s`` (ours, 1/s by default) so 100
  functions x 2 hours simulate in seconds — the clipped head is always warm under every policy.
* **Inter-arrival variability** (paper, Fig. 6 and Table 2 of triggers): timer-triggered
  functions (16% of functions in the paper's trigger breakdown) are periodic (CV 0); the rest
  are bursty: a Gamma renewal process with CV drawn log-uniformly in [0.5, 4] (ours: the paper
  shows a wide CV spread, many above 1, without a fit we could cite).
* **Diurnal pattern** (paper, Fig. 4: clear daily periodicity): the rate is modulated by
  ``1 + a * sin(2 pi (t - 6 h) / 24 h)`` (a = 0.5 ours; peak at noon), by thinning.
* **Execution time** (paper, Fig. 7): the average execution time per function fits a log-normal
  with mu = -0.38, sigma = 2.36 (of ln seconds); clipped to [1 ms, 30 s] (our function timeout).
  Each invocation varies around its function's mean: log-normal, sigma 0.3 (ours).
* **Memory** (paper, Fig. 8): allocated memory per application fits a Burr XII distribution with
  c = 11.652, k = 0.221, lambda = 107.083 (MB); clipped to [128, 3008] MB.
* **Cold start** (not in the Azure 2019 trace): init time log-normal, median 1 s, sigma 0.8
  (ours), split into runtime (process + imports) and model-load parts with the load share of
  servelab's measured MobileNetV2 profile (fetch + load = 0.251 of init,
  ``sim/profiles/study-mobilenetv2.yaml``); one of three runtimes at random (ours) — the layered
  policy shares a runtime's warm template between its functions.

Everything is drawn from one seeded generator: the same seed gives the same workload.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from servelab.errors import WorkloadError

DAY_S = 86400.0
LOG10_DAILY_MU = 1.60
LOG10_DAILY_SIGMA = 1.77
TIMER_SHARE = 0.16
DURATION_LN_MU = -0.38
DURATION_LN_SIGMA = 2.36
BURR_C, BURR_K, BURR_LAMBDA = 11.652, 0.221, 107.083
RUNTIMES = ("onnxruntime", "torch", "sklearn")
LOAD_SHARE = 0.251  # fetch + load share of init in study-mobilenetv2.yaml


@dataclass(frozen=True)
class SynthFunction:
    """One generated function: its trigger, rate, burstiness, duration, memory and cold start."""

    name: str
    trigger: str  # "timer" (periodic) or "http" (bursty)
    daily_invocations: float
    iat_cv: float
    mean_duration_ms: float
    memory_mb: int
    init_ms: float
    load_share: float
    runtime: str
    phase_s: float  # a timer's offset within its period; a bursty function's first-arrival offset

    @property
    def rate_per_s(self) -> float:
        return self.daily_invocations / DAY_S


def burr12_quantile(u: np.ndarray, c: float = BURR_C, k: float = BURR_K, lam: float = BURR_LAMBDA) -> np.ndarray:
    """Inverse CDF of Burr XII: F(x) = 1 - (1 + (x/lam)^c)^-k."""
    u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0 - 1e-12)
    return np.asarray(lam * ((1.0 - u) ** (-1.0 / k) - 1.0) ** (1.0 / c))


def synth_functions(n: int, rng: np.random.Generator, *, max_rate_per_s: float = 1.0) -> list[SynthFunction]:
    """``n`` functions drawn from the calibrated distributions (see the module docstring)."""
    if n < 1:
        raise WorkloadError(f"need at least 1 function, got {n}")
    if not max_rate_per_s > 0:
        raise WorkloadError(f"max_rate_per_s must be > 0, got {max_rate_per_s}")
    daily = 10.0 ** rng.normal(LOG10_DAILY_MU, LOG10_DAILY_SIGMA, n)
    daily = np.clip(daily, 1.0, max_rate_per_s * DAY_S)  # at least once a day: it is in the trace
    timer = rng.random(n) < TIMER_SHARE
    cv = np.exp(rng.uniform(math.log(0.5), math.log(4.0), n))
    dur_ms = np.clip(np.exp(rng.normal(DURATION_LN_MU, DURATION_LN_SIGMA, n)) * 1000.0, 1.0, 30_000.0)
    mem = np.clip(burr12_quantile(rng.random(n)), 128, 3008)
    init_ms = np.exp(rng.normal(math.log(1000.0), 0.8, n))
    runtime = rng.integers(0, len(RUNTIMES), n)
    phase = rng.random(n)
    out = []
    for i in range(n):
        period = DAY_S / daily[i]
        out.append(SynthFunction(
            name=f"f{i:03d}", trigger="timer" if timer[i] else "http", daily_invocations=float(daily[i]),
            iat_cv=0.0 if timer[i] else float(cv[i]), mean_duration_ms=float(dur_ms[i]),
            memory_mb=int(np.rint(mem[i])), init_ms=float(init_ms[i]), load_share=LOAD_SHARE,
            runtime=RUNTIMES[int(runtime[i])], phase_s=float(phase[i] * period)))
    return out


def diurnal_factor(t_s: np.ndarray, amplitude: float) -> np.ndarray:
    """Rate multiplier at ``t_s`` seconds after midnight: peak ``1 + amplitude`` at noon."""
    return 1.0 + amplitude * np.sin(2 * np.pi * (np.asarray(t_s) - 6 * 3600.0) / DAY_S)


def arrivals(fn: SynthFunction, duration_s: float, rng: np.random.Generator, *, start_s_of_day: float = 9 * 3600.0,
             diurnal_amplitude: float = 0.5) -> np.ndarray:
    """Sorted arrival times in ``[0, duration_s)`` for one function.

    Timers fire every ``1 / rate`` seconds from their phase (no diurnal change: a cron does not
    follow the sun). Bursty functions: Gamma inter-arrivals with the function's CV at the peak
    rate, thinned by the diurnal factor.
    """
    rate = fn.rate_per_s
    if fn.trigger == "timer":
        period = 1.0 / rate
        first = fn.phase_s % period
        return np.arange(first, duration_s, period, dtype=np.float64)
    peak = rate * (1.0 + diurnal_amplitude)
    shape = 1.0 / (fn.iat_cv ** 2)
    scale = 1.0 / (peak * shape)
    expected = peak * duration_s
    chunks: list[np.ndarray] = []
    t = -rng.random() / peak  # a random start within the process: no arrival pinned at 0
    while t < duration_s:
        gaps = rng.gamma(shape, scale, max(16, int(expected * 1.2) + 16))
        times = t + np.cumsum(gaps)
        chunks.append(times)
        t = float(times[-1])
    times = np.concatenate(chunks) if chunks else np.zeros(0)
    times = times[(times >= 0) & (times < duration_s)]
    keep = rng.random(len(times)) * (1.0 + diurnal_amplitude) < diurnal_factor(times + start_s_of_day,
                                                                               diurnal_amplitude)
    return times[keep]


def durations_ms(fn: SynthFunction, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-invocation execution times around the function's mean (log-normal, sigma 0.3)."""
    sigma = 0.3
    median = fn.mean_duration_ms / math.exp(sigma * sigma / 2)
    return np.clip(median * np.exp(rng.normal(0.0, sigma, n)), 0.5, 30_000.0)


def write_azure_csv(functions: list[SynthFunction], times: list[np.ndarray], path: Path) -> None:
    """Per-minute counts in the Azure Functions 2019 invocation format (one day: 1,440 columns),
    so :func:`servelab.workload.trace.select_counts` reads them like the real trace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["HashOwner", "HashApp", "HashFunction", "Trigger", *[str(m) for m in range(1, 1441)]])
        for fn, t in zip(functions, times, strict=True):
            counts = np.bincount(np.minimum((t // 60).astype(np.int64), 1439), minlength=1440)
            w.writerow(["synth", f"app-{fn.name}", fn.name, fn.trigger, *counts.tolist()])


def write_functions_csv(functions: list[SynthFunction], path: Path) -> None:
    """The generated functions' parameters, one row each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [asdict(f) for f in functions]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
