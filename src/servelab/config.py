"""Where servelab keeps its files, and the one place that reads environment variables for it.

Library code takes paths as arguments; only the CLI calls :func:`default_home` to fill in
an argument the user left out.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from servelab.errors import ConfigError, InvalidNameError

T = TypeVar("T", bound=BaseModel)

HOME_ENV = "SERVELAB_HOME"

# Names of models and functions: what AWS Lambda allows for function names, minus ':'.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_home() -> Path:
    """``$SERVELAB_HOME`` if set, else ``~/.servelab``."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path.home() / ".servelab"


def validate_name(name: str, *, what: str = "name") -> str:
    """Return ``name`` if it is a safe identifier, else raise :class:`InvalidNameError`.

    Safe means: 1-64 characters of letters, digits, ``_ . -``, starting with a letter or digit,
    and not ``.``/``..``-like, so it can never escape a directory when used as a file name.
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or set(name) <= {"."}:
        raise InvalidNameError(
            f"invalid {what} {name!r}: use 1-64 characters of letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def validated(model_cls: type[T], what: str, **fields: Any) -> T:
    """``model_cls(**fields)``, with pydantic's errors turned into one :class:`ConfigError` that
    names every bad field: ``invalid {what}: memory_mb: Input should be ...; region: ...``."""
    try:
        return model_cls(**fields)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"])
            parts.append((f"{where}: " if where else "") + err["msg"].removeprefix("Value error, "))
        msgs = "; ".join(parts)
        raise ConfigError(f"invalid {what}: {msgs}") from None
