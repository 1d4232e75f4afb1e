"""The ``servelab`` command. Each sub-package owns its sub-commands in its own ``cli.py``;
this module only mounts them and turns library errors into a message and an exit code.

Keep module-level imports in every ``cli.py`` cheap (no torch, no onnxruntime): ``--help``
must answer in a fraction of a second.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from servelab import __version__
from servelab.analysis.cli import app as analyze_app
from servelab.analysis.cost_cli import app as cost_app
from servelab.analysis.report_cli import register as register_report
from servelab.bench.cli import PLATFORM_OPT, PORT_OPT
from servelab.bench.cli import register as register_bench
from servelab.cloud.cli import register as register_cloud
from servelab.errors import ServelabError
from servelab.extras import missing_extra_message
from servelab.loadgen.cli import app as loadgen_app
from servelab.models.cli import app as models_app
from servelab.platform.cli import register as register_platform
from servelab.sim.cli import register as register_sim
from servelab.train.cli import register as register_train
from servelab.workload.cli import app as workload_app

app = typer.Typer(
    name="servelab",
    help="Serve a model as a serverless function on this machine, and measure how to serve it.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
app.add_typer(workload_app, name="workload")
app.add_typer(loadgen_app, name="loadgen")
app.add_typer(analyze_app, name="analyze")
app.add_typer(cost_app, name="cost")
register_platform(app)  # platform up/info, deploy, invoke, functions …
register_bench(app)  # plan, run
register_report(app)  # report
register_sim(app)  # simulate, recommend, …
register_cloud(app)  # cloud deploy/invoke/cleanup on AWS Lambda, SageMaker, GCP
register_train(app)  # train, …


@app.command()
def version() -> None:
    """Print servelab's version."""
    typer.echo(__version__)


@app.command()
def demo(
    out: Path = typer.Option(None, "--out", "-o", help="Where the runs and the report go "
                             "(default: runs/demo-<date>-<time> here)."),
    platform: str = PLATFORM_OPT,
    port: int = PORT_OPT,
) -> None:
    """Serverless vs an always-on CPU server, MobileNetV2 under bursty MMPP load (~2 min): run,
    analyze, price, and write the HTML report. The experiment is servelab/bench/examples/demo.yaml."""
    from servelab.demo import run_demo

    run_demo(out, platform_url=platform, platform_port=port)


def main() -> None:
    err = Console(stderr=True, soft_wrap=True)  # one error, one line, however narrow the terminal
    try:
        app()
    except ServelabError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)  # messages hold paths, [brackets]
        sys.exit(2)
    except ModuleNotFoundError as e:
        hint = missing_extra_message(e)
        if hint is None:
            raise
        err.print(f"[bold red]error:[/] {escape(hint)}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
