"""The instance process: load a function's model (and handler), then serve invocations forever.

Started by the platform either as a fresh interpreter (``python -m servelab.platform.worker
--fd N``, the *spawn* mode) or forked from a fork server that has already imported the
runtime (*fork* mode, see ``forkserver.py``). Both end up in :func:`serve`.

Only the standard library is imported at module level, so the cold-start timings below
separate honestly: process start (until :func:`serve` runs), imports (runtime, numpy,
handler), model fetch (from the store, sha256-verified), model load (runtime session).
All timestamps are ``time.monotonic()``, which on Linux is one clock for every process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import socket
import sys
import time
import traceback
from typing import Any

from servelab.platform.ipc import ConnectionClosed, recv_frame, send_frame

BUILTIN_MODEL_HANDLER = "servelab.model"
LOG_TAIL_BYTES = 4096


class LambdaContext:
    """What an AWS Lambda handler gets as ``context``, plus ``model`` (the loaded session)."""

    def __init__(self, function_name: str, memory_mb: int, request_id: str, deadline: float,
                 model: Any) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self.model = model
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _error_payload(exc: BaseException) -> bytes:
    """Lambda's shape for an unhandled error: errorMessage, errorType, stackTrace."""
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__,
                       "stackTrace": [line.rstrip() for line in tb[-6:]]}).encode()


class ModelHandler:
    """The built-in handler: an Open Inference Protocol request in, its response out.

    Requests in one batch are concatenated along axis 0, run in one inference, and split
    back, so each caller gets exactly its own rows; a request with bad input fails alone.
    """

    def __init__(self, session: Any, function_name: str) -> None:
        from servelab import tensors

        self.session = session
        self.function_name = function_name
        self.tensors = tensors

    def run_batch(self, bodies: list[bytes]) -> tuple[list[tuple[bool, bytes]], float]:
        import numpy as np

        t = self.tensors
        parsed: list[tuple[dict, dict[str, Any], bool, set[str] | bool] | BaseException] = []
        for body in bodies:
            try:
                framed = t.unframe_binary(body)  # the binary tensor extension: JSON header + raw bytes
                if framed is not None:
                    payload, header_length = framed
                    event, raw = json.loads(bytes(payload[:header_length])), payload[header_length:]
                else:
                    event, raw = json.loads(body), None
                if not isinstance(event, dict) or "inputs" not in event:
                    raise t.InputValidationError(
                        "the event must be an Open Inference Protocol request: "
                        '{"inputs": [{"name", "shape", "datatype", "data" | "b64"}]}')
                arrays = t.validate_inputs(self.session.inputs, t.decode_tensors(event["inputs"], raw),
                                            exact_dtype=True)
                b64 = any("b64" in obj for obj in event["inputs"])
                parsed.append((event, arrays, b64, t.wants_binary_outputs(event)))
            except json.JSONDecodeError as e:
                parsed.append(t.InputValidationError(f"the payload is not JSON: {e}"))
            except Exception as e:  # validation errors are answers, not crashes
                parsed.append(e)
        good = [p for p in parsed if not isinstance(p, BaseException)]
        outputs: dict[str, Any] = {}
        inference_ms = 0.0
        if good:
            names = [s.name for s in self.session.inputs]
            joined = {n: np.concatenate([g[1][n] for g in good], axis=0) for n in names}
            t0 = time.perf_counter()
            try:
                outputs = self.session.infer(joined)
            except Exception as e:  # the runtime failed the whole batch: every caller gets the error
                parsed = [p if isinstance(p, BaseException) else e for p in parsed]
            inference_ms = (time.perf_counter() - t0) * 1000.0
        results: list[tuple[bool, bytes]] = []
        row = 0
        for p in parsed:
            if isinstance(p, BaseException):
                results.append((False, _error_payload(p)))
                continue
            event, arrays, b64, binary_out = p
            n = next(iter(arrays.values())).shape[0]
            mine = {name: arr[row:row + n] for name, arr in outputs.items()}
            row += n
            resp: dict[str, Any] = {"model_name": self.function_name}
            if "id" in event:
                resp["id"] = event["id"]
            if binary_out:
                results.append((True, t.frame_binary(*t.encode_binary_response(resp, mine, binary_out))))
                continue
            resp["outputs"] = [t.encode_tensor(name, arr, binary=b64) for name, arr in mine.items()]
            results.append((True, json.dumps(resp).encode()))
        return results, inference_ms


class UserHandler:
    """A user's ``handler(event, context)`` from the function's code directory."""

    def __init__(self, spec: str, code_dir: str, session: Any, function_name: str, memory_mb: int) -> None:
        import importlib

        module_name, _, func_name = spec.rpartition(".")
        if not module_name or not func_name:
            raise ValueError(f"handler {spec!r} must look like 'module.function'")
        if code_dir and code_dir not in sys.path:
            sys.path.insert(0, code_dir)
        self.func = getattr(importlib.import_module(module_name), func_name)
        self.session = session
        self.function_name = function_name
        self.memory_mb = memory_mb

    def run_one(self, body: bytes, request_id: str, deadline: float) -> tuple[bool, bytes, str]:
        log = io.StringIO()
        ctx = LambdaContext(self.function_name, self.memory_mb, request_id, deadline, self.session)
        try:
            event = json.loads(body) if body else {}
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                result = self.func(event, ctx)
            return True, json.dumps(result).encode(), log.getvalue()
        except Exception as e:
            log.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
            return False, _error_payload(e), log.getvalue()


def _init(init: dict[str, Any], t_started: float, sock: socket.socket) -> tuple[Any, dict[str, float]]:
    """Import, fetch, load. Returns the handler and the monotonic timestamps of each step."""
    os.environ.update(init.get("env") or {})
    if init.get("runtime") == "torch":
        # torch's OpenMP workers spin while waiting; on shared cores that costs 4-10x latency
        # (benchmarks/README.md). Must be set before torch is imported.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from servelab import runtimes

    runtime = init.get("runtime", "onnxruntime")
    model_ref = init.get("model_ref")
    if model_ref:
        runtimes.import_runtime(runtime)
        import numpy  # noqa: F401

        from servelab import tensors  # noqa: F401
    handler_spec = init.get("handler") or BUILTIN_MODEL_HANDLER
    t_imports = time.monotonic()

    path = None
    if model_ref:
        from pathlib import Path

        from servelab.models.store import open_store

        store = open_store(init.get("store_url"), home=Path(init["home"]))
        path = store.get(model_ref)
    t_fetch = time.monotonic()

    session = None
    if path is not None:
        session = runtimes.load(path, runtime=runtime, threads=int(init.get("threads", 1)),
                                device=init.get("device", "cpu"))
    if init.get("isolation"):  # before any of the function's own code is imported
        from servelab.platform.isolation import IsolationSpec, apply

        apply(IsolationSpec(**init["isolation"]))
    if handler_spec == BUILTIN_MODEL_HANDLER:
        if session is None:
            raise ValueError("the built-in model handler needs a model")
        handler: Any = ModelHandler(session, init["function"])
    else:
        handler = UserHandler(handler_spec, init.get("code_dir", ""), session, init["function"],
                              int(init.get("memory_mb", 128)))
    t_load = time.monotonic()
    return handler, {"started": t_started, "imports_done": t_imports, "fetch_done": t_fetch,
                     "load_done": t_load}


def serve(sock: socket.socket, *, t_started: float) -> None:
    """Run an instance on ``sock`` until the platform closes it."""
    try:
        init, _ = recv_frame(sock)
    except ConnectionClosed:
        return
    try:
        handler, marks = _init(init, t_started, sock)
    except Exception as e:
        send_frame(sock, {"type": "init_error", "errorType": type(e).__name__, "error": str(e),
                          "trace": traceback.format_exc()[-2000:]})
        return
    send_frame(sock, {"type": "ready", "marks": marks, "pid": os.getpid(), "max_rss_mb": _max_rss_mb()})
    while True:
        try:
            header, body = recv_frame(sock)
        except ConnectionClosed:
            return
        if header.get("type") == "stop":
            return
        sizes: list[int] = header["sizes"]
        request_ids: list[str] = header["request_ids"]
        bodies, off = [], 0
        for n in sizes:
            bodies.append(body[off:off + n])
            off += n
        deadline = time.monotonic() + float(header.get("timeout_s", 3.0))
        t0 = time.perf_counter()
        results: list[dict[str, Any]] = []
        payloads: list[bytes] = []
        if isinstance(handler, ModelHandler):
            outs, inference_ms = handler.run_batch(bodies)
            for ok, payload in outs:
                results.append({"ok": ok, "size": len(payload), "log": ""})
                payloads.append(payload)
        else:
            inference_ms = None
            for b, rid in zip(bodies, request_ids, strict=True):
                ok, payload, log = handler.run_one(b, rid, deadline)
                results.append({"ok": ok, "size": len(payload), "log": log[-LOG_TAIL_BYTES:]})
                payloads.append(payload)
        duration_ms = (time.perf_counter() - t0) * 1000.0
        send_frame(sock, {"type": "result", "results": results, "duration_ms": duration_ms,
                          "inference_ms": inference_ms, "max_rss_mb": _max_rss_mb()},
                   b"".join(payloads))


def main(argv: list[str] | None = None) -> None:
    t_started = time.monotonic()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "--fd":
        raise SystemExit("usage: python -m servelab.platform.worker --fd N")
    sock = socket.socket(fileno=int(argv[1]))
    try:
        serve(sock, t_started=t_started)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
