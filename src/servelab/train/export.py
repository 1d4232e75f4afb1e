"""From a trained net to a served function: ONNX export, a parity check, the store, the platform.

This is the hand-off SINGA's group made with ONNX (``sonnx``) and Rafiki/SINGA-Auto's
predictor, here onto servelab's serverless platform:

1. :func:`export_onnx` exports the part of the net that computes one output (by default the
   scores the loss layer reads) with its batch axis dynamic (and the time axis, for sequence
   inputs), then runs ONNX Runtime — the same session class the platform's instances use — on
   held-out inputs and compares with PyTorch. The largest absolute difference is reported, and
   past ``tolerance`` the export fails with :class:`~servelab.errors.ModelError`.
2. :func:`push` stores the file in a model store (content-addressed, sha256-verified).
3. :func:`deploy` creates (or updates) a function that serves it on a running local platform,
   through the same HTTP API and request body as ``servelab deploy``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from servelab.errors import ConfigError, FunctionExistsError, ModelError

if TYPE_CHECKING:
    from servelab.platform.client import PlatformClient
    from servelab.train.job import JobConfig
    from servelab.train.net import Net

__all__ = ["DEFAULT_TOLERANCE", "ExportResult", "check_parity", "default_output", "deploy", "export_onnx",
           "held_out_inputs", "push", "push_to_platform"]

OPSET = 17
DEFAULT_TOLERANCE = 1e-4
PARITY_SAMPLES = 64


@dataclass(frozen=True)
class ExportResult:
    path: Path
    output: str
    input_names: list[str]
    max_abs_diff: float | None  # None when the check was skipped
    tolerance: float
    samples: int
    held_out: bool  # the check used the test split (False: no test split, train data)
    opset: int


def default_output(net: Net) -> str:
    """What to serve when no output is named: the scores the first loss layer reads."""
    sources = net.loss_sources
    if not sources:
        raise ConfigError("the net has no loss layer; name the layer to export with output=…")
    return sources[0]


def held_out_inputs(job: JobConfig, names: list[str], samples: int = PARITY_SAMPLES) -> tuple[dict[str, torch.Tensor],
                                                                                                bool]:
    """Up to ``samples`` inputs from the test split (or, without one, the train split), and
    whether they were held out."""
    from servelab.train.data import make_data

    held_out = job.data.has_test
    small = job.model_copy(update={"batch_size": min(samples, job.batch_size)})
    parts: list[dict[str, torch.Tensor]] = []
    got = 0
    for batch in make_data(small, "test" if held_out else "train"):
        parts.append(batch)
        got += next(iter(batch.values())).shape[0]
        if got >= samples:
            break
    missing = [n for n in names if n not in parts[0]]
    if missing:
        raise ConfigError(f"the data has no {missing} for the exported inputs; it has {sorted(parts[0])}")
    return {n: torch.cat([p[n] for p in parts])[:samples] for n in names}, held_out


def export_onnx(net: Net, job: JobConfig, out_path: Path, output: str | None = None, *, opset: int = OPSET,
                check: bool = True, tolerance: float = DEFAULT_TOLERANCE) -> ExportResult:
    """Export ``output`` (and the layers it needs) to ONNX, then check ONNX Runtime against PyTorch."""
    output = output or default_output(net)
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    net.eval()
    module = net.inference_module(output).cpu()  # export and check on CPU, where the platform serves
    try:
        return _export(net, module, job, Path(out_path), output, opset=opset, check=check, tolerance=tolerance)
    finally:
        net.to(device)


def _export(net: Net, module: Any, job: JobConfig, out_path: Path, output: str, *, opset: int, check: bool,
            tolerance: float) -> ExportResult:
    import onnx

    names = module.input_names
    examples = tuple(layer.example(2) for layer in module.input_layers)
    seq = set(net.sequence_inputs)
    dynamic: dict[str, dict[int, str]] = {n: ({0: "batch", 1: "time"} if n in seq else {0: "batch"}) for n in names}
    out_layer = net.layer(output.partition(":")[0])
    seq_lens = {layer.options.shape[0] for layer in module.input_layers if layer.source in seq}
    out_shape = out_layer.out_shapes[int(output.partition(":")[2] or 0)]
    dynamic[output] = {0: "batch", 1: "time"} if out_shape and out_shape[0] in seq_lens else {0: "batch"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    # The dynamo exporter needs onnxscript, which servelab does not require; the TorchScript exporter
    # covers every built-in layer. Its deprecation and tracer warnings are noise here.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            # torch annotates f as a path only, but the TorchScript exporter writes to any binary file object
            torch.onnx.export(module, examples, buf,  # type: ignore[arg-type]
                              dynamo=False, opset_version=opset, input_names=names,
                              output_names=[output], dynamic_axes=dynamic)
        except Exception as e:
            raise ModelError(f"ONNX export of output {output!r} failed: {type(e).__name__}: {e}") from None
    model = onnx.load_from_string(buf.getvalue())
    meta = {"servelab.job": job.name, "servelab.output": output, "servelab.producer": "servelab train"}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, out_path)
    diff, samples, held_out = None, 0, False
    if check:
        inputs, held_out = held_out_inputs(job, names)
        diff = check_parity(module, out_path, inputs, output, tolerance=tolerance)
        samples = next(iter(inputs.values())).shape[0]
    return ExportResult(out_path, output, names, diff, tolerance, samples, held_out, opset)


def check_parity(module: torch.nn.Module, onnx_path: Path, inputs: dict[str, torch.Tensor], output: str, *,
                 tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Largest |ONNX Runtime - PyTorch| over ``inputs``; :class:`ModelError` past ``tolerance``."""
    from servelab.runtimes.onnxruntime_rt import OnnxRuntimeSession

    module.eval()
    with torch.no_grad():
        expected = module(*inputs.values()).numpy()
    session = OnnxRuntimeSession(Path(onnx_path), threads=1)
    got = session.infer({k: v.numpy() for k, v in inputs.items()})[output]
    if got.shape != expected.shape:
        raise ModelError(f"ONNX Runtime's {output!r} has shape {got.shape}, PyTorch's {expected.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)))) if got.size else 0.0
    if not diff <= tolerance:
        raise ModelError(f"ONNX Runtime's {output!r} differs from PyTorch's by up to {diff:.3g} on "
                         f"{expected.shape[0]} samples (tolerance {tolerance:g}): the exported graph does not "
                         "compute what the net does; do not serve it")
    return diff


def push(onnx_path: Path, name: str, *, home: Path, store_url: str | None = None) -> str:
    """Put the model into a store (``store_url``, default ``home/store``); returns its ref."""
    from servelab.models.store import open_store

    return open_store(store_url, home=Path(home)).put(name, Path(onnx_path))


def push_to_platform(client: PlatformClient, onnx_path: Path, name: str) -> str:
    """Put the model into the store *the running platform reads* (it may differ from ours)."""
    from servelab.models.store import open_store

    info = client.info()
    return open_store(info.get("store_url"), home=Path(info["home"])).put(name, Path(onnx_path))


def deploy(client: PlatformClient, name: str, model_ref: str, *, memory_mb: int = 1024, timeout_s: float = 30.0,
           max_concurrency: int = 4, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Create the function ``name`` serving ``model_ref`` on the onnxruntime runtime, or update it
    if it exists (the body ``servelab deploy`` sends); returns the function configuration."""
    from servelab.config import validate_name

    validate_name(name, what="function name")
    env = {"SERVELAB_MODEL": model_ref, "SERVELAB_RUNTIME": "onnxruntime",
           "SERVELAB_MAX_CONCURRENCY": str(max_concurrency), **(extra_env or {})}
    body = {"FunctionName": name, "Role": "servelab", "MemorySize": memory_mb, "Timeout": timeout_s,
            "Handler": "servelab.model", "Environment": {"Variables": env}, "Code": {}}
    try:
        return client.create(body)
    except FunctionExistsError:
        return client.update(name, {k: v for k, v in body.items() if k not in ("Code", "Role", "FunctionName")})
