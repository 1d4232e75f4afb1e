"""When a request's bytes were handed to the socket: the send time the records keep.

Stamping a request when its task starts would leave out what happens before the bytes leave:
taking a pooled connection, building headers and, in aiohttp, a separate task that writes the
body one event-loop turn later. That time is the generator's, not the target's, and hiding it
would flatter ``send_lag_ms``. So the send is stamped by an aiohttp trace hook on the body chunk
being written: aiohttp awaits ``on_request_chunk_sent`` and then, without yielding to the event
loop, writes the buffered headers and the chunk to the transport (``transport.write`` sends at
once when its buffer is empty). A request without a body is stamped when its headers are
buffered, the closest point aiohttp exposes.

The stamp travels in a :class:`contextvars.ContextVar`: the request's task sets a one-slot box,
and aiohttp's writer task, created inside it, inherits the context and so fills the same box.
Targets that never touch a socket (the null target) leave the box empty; the caller then keeps
its own stamp.
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar
from typing import Any

import aiohttp

_BOX: ContextVar[list[float] | None] = ContextVar("servelab_send_stamp", default=None)


def begin() -> list[float]:
    """In the request's own task, before invoking the target: the box its send time goes into."""
    box = [math.nan, math.nan]  # [body chunk written, headers buffered]
    _BOX.set(box)
    return box


def sent_at(box: list[float], fallback: float) -> float:
    """The monotonic send time: the body write, else the headers, else ``fallback``."""
    for t in box:
        if t == t:  # not NaN
            return t
    return fallback


async def _on_chunk(session: Any, ctx: Any, params: Any) -> None:
    box = _BOX.get()
    if box is not None and box[0] != box[0]:
        box[0] = time.monotonic()


async def _on_headers(session: Any, ctx: Any, params: Any) -> None:
    box = _BOX.get()
    if box is not None and box[1] != box[1]:
        box[1] = time.monotonic()


def trace_config() -> aiohttp.TraceConfig:
    """The hook to give every ``ClientSession`` the generator uses."""
    tc = aiohttp.TraceConfig()
    tc.on_request_chunk_sent.append(_on_chunk)
    tc.on_request_headers_sent.append(_on_headers)
    return tc
