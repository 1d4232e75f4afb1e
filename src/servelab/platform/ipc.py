"""Frames between the platform and an instance process over a Unix socket.

A frame is ``!II`` (header length, body length), a JSON header, and raw body bytes. The body
is the invocation payload exactly as it came over HTTP, so the gateway never parses it.
The instance side is blocking (one request at a time); the platform side uses asyncio streams.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

_PREFIX = struct.Struct("!II")
MAX_FRAME_BYTES = 256 * 1024 * 1024


class ConnectionClosed(EOFError):
    """The other end closed the socket (for an instance: it exited or was killed)."""


def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    return _PREFIX.pack(len(h), len(body)) + h + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionClosed("peer closed the connection")
        got += k
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    hlen, blen = _PREFIX.unpack(_recv_exact(sock, _PREFIX.size))
    if hlen + blen > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {hlen + blen} bytes is over {MAX_FRAME_BYTES}")
    header = json.loads(_recv_exact(sock, hlen))
    body = _recv_exact(sock, blen) if blen else b""
    return header, body


def send_frame(sock: socket.socket, header: dict[str, Any], body: bytes = b"") -> None:
    sock.sendall(encode_frame(header, body))


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    try:
        prefix = await reader.readexactly(_PREFIX.size)
        hlen, blen = _PREFIX.unpack(prefix)
        header = json.loads(await reader.readexactly(hlen))
        body = await reader.readexactly(blen) if blen else b""
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as e:
        raise ConnectionClosed(str(e) or "peer closed the connection") from None
    return header, body
