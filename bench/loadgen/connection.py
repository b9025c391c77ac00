"""One keep-alive HTTP/1.1 client connection over asyncio streams, with an incremental chunked decoder."""
from __future__ import annotations

import asyncio
import socket
import time

READ_SIZE = 1 << 16
MAX_HEAD = 1 << 16


class ProtocolError(Exception):
    pass


class ChunkedDecoder:
    """Incremental Transfer-Encoding: chunked decoder over a byte buffer (one await per read, not per chunk)."""
    __slots__ = ("buf", "remaining", "crlf", "trailer", "done")

    def __init__(self):
        self.buf = b""
        self.remaining = 0
        self.crlf = False
        self.trailer = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self.buf + data if self.buf else data
        pos = 0
        out = []
        n = len(buf)
        while pos < n:
            if self.remaining:
                take = min(self.remaining, n - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.crlf = True
                continue
            if self.crlf:
                if n - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pos += 2
                self.crlf = False
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                if n - pos > 4096:
                    raise ProtocolError("chunk size line too long")
                break
            line = buf[pos:nl]
            pos = nl + 2
            if self.trailer:
                if not line:
                    self.done = True
                    break
                continue
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                self.trailer = True
            else:
                self.remaining = size
        self.buf = buf[pos:]
        return b"".join(out) if len(out) != 1 else out[0]


class Connection:
    """One keep-alive HTTP/1.1 connection (asyncio streams), reopened after errors or Connection: close."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def open(self) -> bool:
        return self.writer is not None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=READ_SIZE)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.transport.abort()
            except Exception:
                pass
        self.reader = self.writer = None

    async def request(self, raw: bytes, handler) -> int:
        """Send one request and read the whole response, feeding the body to ``handler``; return the status."""
        if self.writer is None:
            await self.connect()
        reader, writer = self.reader, self.writer
        writer.write(raw)
        if writer.transport.get_write_buffer_size() > READ_SIZE:
            await writer.drain()
        buf = b""
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise ConnectionResetError("connection closed before the response head")
            buf += data
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEAD:
                raise ProtocolError("response head too large")
        now = time.perf_counter()
        head = buf[:end].decode("latin-1").split("\r\n")
        rest = buf[end + 4:]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"bad status line {head[0][:60]!r}")
        status = int(parts[1])
        length = None
        chunked = False
        close = parts[0] == "HTTP/1.0"
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                value = value.strip().lower()
                close = "close" in value or (close and "keep-alive" not in value)
        feed = handler.feed
        if chunked:
            decoder = ChunkedDecoder()
            data = rest
            while True:
                if data:
                    piece = decoder.feed(data)
                    if piece:
                        feed(piece, now)
                    if decoder.done:
                        break
                data = await reader.read(READ_SIZE)
                if not data:
                    raise ConnectionResetError("connection closed inside a chunked body")
                now = time.perf_counter()
        elif length is not None:
            got = len(rest)
            if rest:
                feed(rest, now)
            while got < length:
                data = await reader.read(min(READ_SIZE, length - got))
                if not data:
                    raise ConnectionResetError("connection closed inside the body")
                got += len(data)
                feed(data, time.perf_counter())
        else:  # body until EOF
            close = True
            if rest:
                feed(rest, now)
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                feed(data, time.perf_counter())
        if close:
            self.close()
        return status
