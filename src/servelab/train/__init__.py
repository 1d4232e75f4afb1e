"""Training, the SINGA half of servelab: layer-abstraction nets, BP/BPTT training, export to serving.

- :mod:`servelab.train.layers`: the ``Layer`` base class, built-in types and ``register_layer``;
- :mod:`servelab.train.net`: ``NetConfig`` (YAML) and ``build_net`` -> ``Net`` (a validated DAG);
- :mod:`servelab.train.job`: ``JobConfig``/``load_job``, updaters and learning-rate schedules, data;
- :mod:`servelab.train.trainer`: ``train_local`` (one process) and ``train_one_batch`` (BP, BPTT);
- :mod:`servelab.train.export`: ONNX export with a parity check, push to the store, deploy;
- :mod:`servelab.train.cluster` and :mod:`servelab.train.distributed`: the cluster frameworks.

This package's ``__init__`` imports nothing heavy, so ``servelab --help`` stays fast; the names
below load their module (and torch) on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Layer": "layers", "LayerOptions": "layers", "LAYERS": "layers", "register_layer": "layers",
    "make_layer": "layers",
    "Net": "net", "NetConfig": "net", "build_net": "net",
    "JobConfig": "job", "load_job": "job", "make_data": "job", "make_optimizer": "job", "make_scheduler": "job",
    "TrainResult": "trainer", "train_local": "trainer", "train_one_batch": "trainer", "evaluate": "trainer",
    "export_onnx": "export", "push": "export", "deploy": "export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"servelab.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
