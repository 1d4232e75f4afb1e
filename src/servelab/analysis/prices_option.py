"""The price catalog as the command line gives it: the shipped catalog, then the files named in
``$SERVELAB_PRICES`` (``os.pathsep``-separated), then each ``--prices FILE``. Library code never
reads the environment (servelab.billing.catalog); the commands that price things read it here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PRICES_ENV = "SERVELAB_PRICES"
PRICES_HELP = f"Extra price YAML file laid over the shipped catalog (repeatable; after ${PRICES_ENV})."


def extra_price_files(prices: list[Path] | None) -> list[str | Path]:
    return [*(p for p in os.environ.get(PRICES_ENV, "").split(os.pathsep) if p), *(prices or [])]


def load_cli_catalog(prices: list[Path] | None) -> Any:
    """The catalog with ``$SERVELAB_PRICES`` and ``--prices`` laid over it."""
    from servelab.billing.catalog import load_catalog

    return load_catalog(*extra_price_files(prices))
