"""``servelab workload`` sub-commands: show (summary and plot of a generated workload), presets.

numpy, pydantic and matplotlib are imported inside the commands so ``servelab --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from servelab.tables import CSV_OPT, JSON_OPT, output_format, print_table

if TYPE_CHECKING:
    import numpy as np

    from servelab.workload import Arrivals, WorkloadSpec

app = typer.Typer(
    help="Arrival processes (Poisson, MMPP, step, ramp, on-off, Azure trace replay): inspect and plot them.",
    no_args_is_help=True,
)

SPEC_HELP = (
    "A preset name (see 'servelab workload presets'), a YAML/JSON spec file, or inline "
    "KIND:key=value;… e.g. 'poisson:rate=50' or 'mmpp:rates=5,50;sojourn=10,2'. "
    "Kinds: poisson, constant, mmpp, step, ramp, onoff, trace."
)


@app.command()
def show(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    duration: float = typer.Option(
        None, "--duration", help="Seconds to generate (default: the spec's duration_s)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same arrivals."),
    scale: float = typer.Option(1.0, "--scale", help="Multiply every arrival rate by this factor."),
    plot: Path = typer.Option(None, "--plot", help="Save a PNG of the arrival rate over time to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of a table."),
) -> None:
    """Generate a workload and summarise it: count, mean and peak rate, inter-arrival CV, MMPP states."""
    from servelab.workload import generate, load_spec

    wl = load_spec(spec)
    if scale != 1.0:
        wl = wl.scaled(scale)
    if duration is not None:
        wl = type(wl).model_validate({**wl.model_dump(), "duration_s": duration})
    arrivals = generate(wl, seed=seed)
    summary = summarize(wl, arrivals)
    if plot is not None:
        plot_rate(wl, arrivals, plot)
        summary["plot"] = str(plot)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)


@app.command()
def presets(as_json: bool = JSON_OPT, as_csv: bool = CSV_OPT) -> None:
    """List the built-in workloads (the study's low / medium / high / bursty MMPP loads)."""
    from rich.console import Console
    from rich.table import Table

    from servelab.workload import PRESETS

    table = Table(title="workload presets (rates in requests/s, times in s)")
    for col in ("name", "kind", "state rates", "mean sojourn", "mean rate", "peak rate", "duration"):
        table.add_column(col, justify="left" if col in ("name", "kind") else "right")
    for name, p in PRESETS.items():
        rates = getattr(p, "rates_rps", None)
        sojourn = getattr(p, "sojourn_s", None)
        table.add_row(
            name,
            p.kind,
            ", ".join(f"{r:g}" for r in rates) if rates else "",
            ", ".join(f"{s:g}" for s in sojourn) if sojourn else "",
            f"{p.mean_rate_rps:.1f}",
            f"{p.peak_rate_rps:g}",
            f"{p.duration_s:g}",
        )
    print_table(table, output_format(as_json, as_csv), console=Console())


def summarize(spec: WorkloadSpec, arrivals: Arrivals) -> dict[str, Any]:
    """The facts ``show`` prints, as plain JSON-able values."""
    import numpy as np

    times = arrivals.times_s
    gaps = np.diff(times)
    _, per_second = arrivals.rate_series(1.0)
    out: dict[str, Any] = {
        "spec": spec.to_inline(),
        "seed": arrivals.seed,
        "duration_s": arrivals.duration_s,
        "count": len(arrivals),
        "mean_rate_rps": len(arrivals) / arrivals.duration_s,
        "expected_mean_rate_rps": spec.mean_rate_rps,
        "peak_rate_rps": float(per_second.max()) if per_second.size else 0.0,
        "interarrival_cv": float(gaps.std() / gaps.mean()) if gaps.size > 1 and gaps.mean() > 0 else None,
    }
    if arrivals.state_path is not None and arrivals.states is not None:
        n = spec.n_states  # type: ignore[union-attr]
        in_state_s = arrivals.time_in_state_s(n)
        counts = np.bincount(arrivals.states, minlength=n)
        out["states"] = [
            {
                "state": i,
                "rate_rps": spec.rates_rps[i],  # type: ignore[union-attr]
                "time_share": float(in_state_s[i] / arrivals.duration_s),
                "stationary_share": float(spec.stationary[i]),  # type: ignore[union-attr]
                "observed_rate_rps": float(counts[i] / in_state_s[i]) if in_state_s[i] > 0 else None,
                "visits": int(np.sum(arrivals.state_path[1] == i)),
            }
            for i in range(n)
        ]
    return out


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cv = "n/a" if s["interarrival_cv"] is None else f"{s['interarrival_cv']:.3f}"
    console.print(f"[bold]{s['spec']}[/]  seed={s['seed']}  duration={s['duration_s']:g} s")
    console.print(f"arrivals {s['count']:,}   inter-arrival CV {cv}")
    console.print(
        f"mean {s['mean_rate_rps']:.2f} rps (expected {s['expected_mean_rate_rps']:.2f})   "
        f"peak {s['peak_rate_rps']:.0f} rps (1 s bins)"
    )
    if "states" in s:
        table = Table(title="hidden states")
        for col in ("state", "rate (rps)", "time share", "stationary", "observed rate (rps)", "visits"):
            table.add_column(col, justify="right")
        for st in s["states"]:
            obs = "–" if st["observed_rate_rps"] is None else f"{st['observed_rate_rps']:.2f}"
            table.add_row(
                str(st["state"]),
                f"{st['rate_rps']:g}",
                f"{st['time_share']:.3f}",
                f"{st['stationary_share']:.3f}",
                obs,
                str(st["visits"]),
            )
        console.print(table)
    if "plot" in s:
        console.print(f"plot saved to {s['plot']}")


def _expected_rate(spec: WorkloadSpec, arrivals: Arrivals) -> tuple[np.ndarray, np.ndarray]:
    """The configured rate λ(t) as a step curve (x, y) over the run, for the plot's overlay."""
    import numpy as np

    from servelab.workload import MMPPSpec, OnOffSpec, RampSpec, StepSpec, TraceSpec

    end = arrivals.duration_s
    if isinstance(spec, MMPPSpec):
        assert arrivals.state_path is not None
        starts, states = arrivals.state_path
        rates = np.asarray(spec.rates_rps)[states]
    elif isinstance(spec, (StepSpec, OnOffSpec)):
        starts, rates = spec.segments(end)
    elif isinstance(spec, RampSpec):  # fine steps draw the line
        starts = np.linspace(0.0, end, 401)[:-1]
        ramp = spec.ramp_s or end
        rates = spec.start_rps + (spec.end_rps - spec.start_rps) * np.minimum(starts / ramp, 1.0)
    elif isinstance(spec, TraceSpec):
        counts = spec.counts_for(end)
        starts, rates = np.arange(counts.size) * spec.minute_s, counts * spec.count_scale / spec.minute_s
    else:
        starts, rates = np.zeros(1), np.array([spec.mean_rate_rps])
    return np.append(starts, end), np.append(rates, rates[-1])


def plot_rate(spec: WorkloadSpec, arrivals: Arrivals, path: Path) -> None:
    """Save a PNG: observed arrivals per second over time, the configured rate as a dashed line,
    and for an MMPP the hidden state as background shading."""
    try:
        import matplotlib
    except ImportError:
        from servelab.errors import RuntimeNotAvailableError

        raise RuntimeNotAvailableError("--plot needs matplotlib: pip install 'servelab[plot]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    bin_s = max(1.0, float(np.ceil(arrivals.duration_s / 600)))  # at most ~600 bars
    starts, rates = arrivals.rate_series(bin_s)
    fig, ax = plt.subplots(figsize=(10, 4), dpi=120)
    if arrivals.state_path is not None:
        switch_s, states = arrivals.state_path
        ends = np.append(switch_s[1:], arrivals.duration_s)
        cmap = plt.get_cmap("Set2")
        for i, r in enumerate(spec.rates_rps):  # type: ignore[union-attr]
            mask = states == i
            spans = list(zip(switch_s[mask], (ends - switch_s)[mask], strict=True))
            ax.broken_barh(
                spans,
                (0, 1),
                transform=ax.get_xaxis_transform(),
                facecolors=cmap(i),
                alpha=0.35,
                label=f"state {i}: {r:g} rps",
            )
    ax.step(
        np.append(starts, arrivals.duration_s),
        np.append(rates, rates[-1:]),
        where="post",
        color="#1f3b73",
        lw=0.9,
        label=f"observed ({bin_s:g} s bins)",
    )
    x, y = _expected_rate(spec, arrivals)
    ax.step(x, y, where="post", color="#c0392b", lw=1.2, ls="--", label="configured rate")
    ax.set_xlim(0, arrivals.duration_s)
    ax.set_ylim(0, max(float(rates.max(initial=0)), float(y.max())) * 1.08 + 1e-9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("arrivals per second")
    ax.set_title(f"{spec.to_inline()}  (seed {arrivals.seed}, {len(arrivals):,} arrivals)", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=5, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
