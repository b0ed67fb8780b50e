"""Hostile webhook receivers on 127.0.0.1, written on raw sockets so they can misbehave in ways
an HTTP server library would not: hold the connection without answering, trickle the status
line one byte at a time, or answer an endless chunked body. Each records, per connection, when
it was accepted, when the sender hung up, and how many bytes were sent back."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["hold", "trickle", "endless"]
LIFETIME_S = 60.0
"""No connection is served longer than this (bounds every test using a receiver)."""


@dataclass
class Connection:
    accepted_at: float
    """``time.monotonic()`` when accepted."""
    accepted_wall: float
    """``time.time()`` when accepted."""
    request: bytes = b""
    hung_up_at: float | None = None
    """``time.monotonic()`` when the sender closed the connection (None: not yet seen)."""
    bytes_sent: int = 0
    done: threading.Event = field(default_factory=threading.Event)


def _hung_up(conn: socket.socket, wait_s: float) -> bool:
    """Whether the other end closed the connection, waiting up to ``wait_s`` for a sign."""
    conn.settimeout(wait_s)
    try:
        return conn.recv(1024) == b""
    except TimeoutError:
        return False


class HostileReceiver:
    """``mode``: ``hold`` (reads the POST, never answers), ``trickle`` (answers
    ``HTTP/1.1 200 OK`` one byte per ``trickle_s``), ``endless`` (answers 200 with a chunked body
    that never ends, 64 KiB chunks)."""

    def __init__(self, mode: Mode, trickle_s: float = 0.2) -> None:
        self.mode, self.trickle_s = mode, trickle_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/{mode}"
        self.connections: list[Connection] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def open_count(self) -> int:
        """Connections the sender holds open now."""
        return sum(1 for c in self.connections if c.hung_up_at is None)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            record = Connection(time.monotonic(), time.time())
            self.connections.append(record)
            threading.Thread(target=self._serve, args=(conn, record), daemon=True).start()

    def _serve(self, conn: socket.socket, record: Connection) -> None:
        deadline = record.accepted_at + LIFETIME_S
        conn.settimeout(0.1)
        try:
            record.request = self._read_request(conn, deadline)
            if self.mode == "hold":
                while time.monotonic() < deadline and not self._stop.is_set() and not _hung_up(conn, 0.1):
                    pass
            else:
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                if self.mode == "trickle":
                    head = head * 1000  # never reaches the end of its headers
                chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
                i = 0
                while time.monotonic() < deadline and not self._stop.is_set():
                    if self.mode == "trickle":
                        piece, i = head[i:i + 1], i + 1
                        if _hung_up(conn, self.trickle_s):
                            break
                    else:
                        piece, head = (head, b"") if head else (chunk, b"")
                    conn.settimeout(1.0)
                    try:
                        conn.sendall(piece)
                    except TimeoutError:
                        continue  # the sender reads nothing: its buffers are full
                    record.bytes_sent += len(piece)
        except OSError:
            pass  # reset or broken pipe: the sender hung up
        finally:
            record.hung_up_at = time.monotonic()
            conn.close()
            record.done.set()

    def _read_request(self, conn: socket.socket, deadline: float) -> bytes:
        data = self._recv_until(conn, b"", lambda got: b"\r\n\r\n" in got, deadline)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        body = self._recv_until(conn, body, lambda got: len(got) >= length, deadline)
        return head + b"\r\n\r\n" + body

    @staticmethod
    def _recv_until(conn: socket.socket, data: bytes, enough: Callable[[bytes], bool], deadline: float) -> bytes:
        """``data`` and what ``conn`` sends after it, until ``enough`` of it or ``deadline``."""
        while not enough(data) and time.monotonic() < deadline:
            try:
                more = conn.recv(65536)
            except TimeoutError:
                continue
            if not more:
                raise ConnectionError("closed before the request ended")
            data += more
        return data

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        for c in self.connections:
            c.done.wait(5)
