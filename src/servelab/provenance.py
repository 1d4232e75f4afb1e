"""Where a result came from: the versions that shape the numbers, written into every run."""

from __future__ import annotations

import os
import platform


def versions() -> dict[str, str]:
    """servelab, Python, the libraries on the measuring path, the OS and the CPU count."""
    import aiohttp
    import numpy as np
    import pyarrow

    from servelab import __version__

    return {"servelab": __version__, "python": platform.python_version(),
            "aiohttp": aiohttp.__version__, "numpy": np.__version__, "pyarrow": pyarrow.__version__,
            "platform": platform.platform(), "cpus": str(os.cpu_count())}
