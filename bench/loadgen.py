"""A small asyncio HTTP/1.1 load generator for loopback benchmarks.

Why not httpx or locust: on a 2-core machine the client shares the CPUs with the server it measures, so every
microsecond the client spends parsing is noise in the server's numbers. This client keeps one kept-alive
connection per simulated user, writes pre-encoded requests and parses only the status line, ``content-length``
and chunked framing. It speaks to our own servers only (no TLS, no redirects, no compression).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    #: Seconds from writing the request to the first body bytes, and to the end of the response.
    first_byte_s: float
    total_s: float
    #: For chunked (streamed) responses: seconds from the request to the first chunk that carries content.
    first_content_s: float | None = None


class ConnectionClosedError(ConnectionError):
    pass


class Connection:
    """One kept-alive HTTP/1.1 connection (``connect`` before use, ``close`` after)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    def encode(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"host: {self.host}:{self.port}", f"content-length: {len(body)}"]
        if body:
            lines.append("content-type: application/json")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def send(self, raw: bytes, content_marker: bytes | None = None) -> Response:
        """Write a pre-encoded request and read the whole response.

        ``content_marker``: for chunked responses, the first chunk containing it stamps ``first_content_s``.
        """
        if self.reader is None or self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        reader = self.reader
        started = time.perf_counter()
        self.writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        first_byte = time.perf_counter() - started
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        first_content = None
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                chunk = (await reader.readexactly(size + 2))[:-2]
                if first_content is None and content_marker is not None and content_marker in chunk:
                    first_content = time.perf_counter() - started
                parts.append(chunk)
            body = b"".join(parts)
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        total = time.perf_counter() - started
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, body, first_byte, total, first_content)

    async def request(self, method: str, path: str, payload: Any = None,
                      headers: dict[str, str] | None = None) -> Response:
        body = b"" if payload is None else json.dumps(payload).encode()
        return await self.send(self.encode(method, path, body, headers))


@dataclass
class LoadResult:
    """Latencies (seconds) of the requests that completed inside the measured window, and what came back."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    window_s: float = 0.0
    #: Requests the schedule wanted sent but no free user could take (open loop only).
    dropped: int = 0
    #: Every request sent, warm-up and stragglers included (what the server worked on).
    sent: int = 0

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.completed / self.window_s if self.window_s else 0.0

    def percentile_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between order statistics; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def run_load(host: str, port: int, requests: Sequence[Callable[[Connection], bytes]], *,
                   duration_s: float, warmup_s: float = 0.5, rate_per_s: float | None = None,
                   seed: int = 0, on_response: Callable[[Response], None] | None = None) -> LoadResult:
    """Drive ``len(requests)`` users, each on its own connection, for ``warmup_s + duration_s``.

    Each element of ``requests`` builds the next raw request of one user (so each user can carry its own
    session). Closed loop (``rate_per_s=None``): every user sends its next request as soon as the previous
    answer arrives, which measures capacity. Open loop: requests arrive as a Poisson process of ``rate_per_s``
    in total, each taken by an idle user (none idle: counted as dropped), which measures latency at a fixed
    offered load whatever the server's speed. Only requests that start after the warm-up and finish inside the
    window count (and are passed to ``on_response``).
    """
    users = len(requests)
    conns = [Connection(host, port) for _ in range(users)]
    await asyncio.gather(*(c.connect() for c in conns))
    result = LoadResult()
    begin = time.perf_counter()
    measure_from = begin + warmup_s
    end = measure_from + duration_s

    async def one(index: int) -> None:
        result.sent += 1
        started = time.perf_counter()
        response = await conns[index].send(requests[index](conns[index]))
        finished = time.perf_counter()
        if started >= measure_from and finished <= end:
            result.latencies.append(response.total_s)
            result.statuses[response.status] = result.statuses.get(response.status, 0) + 1
            if on_response is not None:
                on_response(response)

    try:
        if rate_per_s is None:
            async def user(index: int) -> None:
                while time.perf_counter() < end:
                    await one(index)

            await asyncio.gather(*(user(i) for i in range(users)))
        else:
            rng = random.Random(seed)
            idle = list(range(users))
            pending: set[asyncio.Task[None]] = set()

            async def dispatch(index: int) -> None:
                try:
                    await one(index)
                finally:
                    idle.append(index)

            next_at = begin
            while True:
                next_at += rng.expovariate(rate_per_s)
                if next_at >= end:
                    break
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not idle:
                    if next_at >= measure_from:
                        result.dropped += 1
                    continue
                task = asyncio.create_task(dispatch(idle.pop(rng.randrange(len(idle)))))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending)
    finally:
        for conn in conns:
            conn.close()
    result.window_s = duration_s
    return result
