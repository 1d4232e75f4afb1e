"""A fork server: one process per platform that has already imported the runtime, and forks
function instances from itself on request (the SOCK / Zygote idea).

Forking skips interpreter start and the runtime's import (~hundreds of ms for onnxruntime);
the child still creates its own inference session *after* the fork, so it gets a fresh
intra-op thread pool (a session loaded before fork would leave the child single-threaded).

Protocol over a ``SOCK_SEQPACKET`` Unix socket (one JSON message per packet):
  platform → server: ``{"cmd": "fork", "token": T, "limits": {...}}`` + the instance socket fd
  server → platform: ``{"type": "forked", "token": T, "pid": P}``  or  ``{"type": "fork_error", ...}``
  server → platform: ``{"type": "exit", "pid": P, "code": C}`` when a child exits (negative C: signal)
The server reaps its children (they are its children, not the platform's) and reports exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import time

MAX_MSG = 65536


def _preload(runtimes: list[str]) -> None:
    import numpy  # noqa: F401

    from servelab import runtimes as rt
    from servelab import tensors  # noqa: F401
    from servelab.models import store  # noqa: F401
    from servelab.platform import limits, worker  # noqa: F401

    for name in runtimes:
        # A runtime that is not installed is reported when a function needs it.
        with contextlib.suppress(Exception):
            rt.import_runtime(name)  # type: ignore[arg-type]


def _child(ctrl: socket.socket, wakeup_r: int, wakeup_w: int, inst_fd: int, msg: dict) -> None:
    t_started = time.monotonic()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    ctrl.close()
    os.close(wakeup_r)
    os.close(wakeup_w)
    code = 0
    try:
        lim = msg.get("limits")
        if lim:
            from servelab.platform.limits import InstanceLimits

            InstanceLimits.from_dict(lim).enter()
        from servelab.platform.worker import serve

        sock = socket.socket(fileno=inst_fd)
        serve(sock, t_started=t_started)
    except BaseException:  # the child must never return into the server's loop
        code = 1
    finally:
        os._exit(code)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    fd = int(argv[argv.index("--fd") + 1])
    preload = argv[argv.index("--preload") + 1].split(",") if "--preload" in argv else ["onnxruntime"]
    ctrl = socket.socket(fileno=fd)
    _preload([p for p in preload if p])

    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd does the work
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the platform decides when we stop

    sel = selectors.DefaultSelector()
    sel.register(ctrl, selectors.EVENT_READ, "ctrl")
    sel.register(wakeup_r, selectors.EVENT_READ, "sig")
    ctrl.sendall(json.dumps({"type": "ready", "pid": os.getpid()}).encode())
    while True:
        for key, _ in sel.select():
            if key.data == "sig":
                with contextlib.suppress(BlockingIOError):
                    os.read(wakeup_r, 4096)
            elif key.data == "ctrl":
                data, fds, _, _ = socket.recv_fds(ctrl, MAX_MSG, 1)
                if not data:  # the platform is gone: so are we (children keep their sockets)
                    return
                msg = json.loads(data)
                if msg.get("cmd") != "fork" or not fds:
                    for f in fds:
                        os.close(f)
                    continue
                pid = os.fork()
                if pid == 0:
                    _child(ctrl, wakeup_r, wakeup_w, fds[0], msg)
                os.close(fds[0])
                ctrl.sendall(json.dumps({"type": "forked", "token": msg["token"], "pid": pid}).encode())
        # Reap every child that has exited, whichever event woke us.
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            code = os.waitstatus_to_exitcode(status)
            ctrl.sendall(json.dumps({"type": "exit", "pid": pid, "code": code}).encode())


if __name__ == "__main__":
    main()
