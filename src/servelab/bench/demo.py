"""The small experiment ``servelab demo`` runs: shipped inside the package, so it works from an
installed wheel as well as from a checkout.

    from servelab.bench import demo_experiment, load_experiment, make_plan, Executor
    from servelab.analysis.report import write_report

    plan = make_plan(load_experiment(demo_experiment()))
    Executor(plan, out_dir).run()
    files = write_report(out_dir)        # files.html, files.markdown, files.summary_md
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from servelab.errors import ConfigError

DEMO_FILE = "demo.yaml"


def demo_experiment() -> Path:
    """The path of the demo experiment YAML (serverless vs a CPU server, bursty MMPP load,
    MobileNetV2; about 2-3 minutes on a 2-core machine, model build included)."""
    path = Path(str(files("servelab.bench") / "examples" / DEMO_FILE))
    if not path.is_file():  # only if the package was installed without its data files
        raise ConfigError(f"the demo experiment {path} is missing from the installed package; reinstall servelab")
    return path
