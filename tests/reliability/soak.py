"""Soak: a bounded run of mixed traffic against one ``clawdbot serve``, then a walk of its store.

Traffic, from ``workers`` threads (one kept-alive connection each), picked at random with fixed weights: turns in
the worker's own sessions (plain, streamed, and retried with the same ``Idempotency-Key``), turns without a
session, sessions created, read whole, paged two entries at a time and deleted, feedback on a turn or a whole
conversation, and bad requests (unknown model, no messages, broken JSON, unknown session, out-of-range values, a
body over the limit, a method the path does not serve), each with the exact status it must get.

What it records: every request's outcome, the turns each session should hold in order (a worker owns its sessions,
so it knows), and the server's resident memory once a second. ``SoakResult`` says what went wrong: a valid request
that failed, a bad request answered with another status, memory that kept growing after warm-up. The caller then
walks the store (``clawdbot.reliability.consistency``) and compares it with ``expected_turns``.

Used by ``tests/reliability/test_reliability_soak.py`` (short) and ``python -m bench.reliability`` (up to 2 min).
"""

from __future__ import annotations

import functools
import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable

#: Relative weights of the actions a worker picks from.
WEIGHTS: dict[str, int] = {
    "chat": 24, "chat_stream": 14, "chat_retry": 4, "chat_stateless": 4, "create": 5, "read": 10, "page": 5,
    "feedback": 8, "delete": 3, "bad": 16,
}
#: Share of the run (from its start) before the memory baseline is taken: the model's arenas, SQLite's page
#: cache and Python's allocator reach their working size first (about 10 s on 2 cores: 142 -> 234 MiB, then
#: +6 MiB over the next 50 s).
WARMUP_SHARE = 0.5
#: Keep at most this many failure descriptions (the counts are exact).
KEEP_FAILURES = 20


@dataclass
class SoakResult:
    seconds: float = 0.0
    workers: int = 0
    #: Requests per action (``bad:<case>`` for each kind of bad request).
    requests: Counter[str] = field(default_factory=Counter)
    valid_requests: int = 0
    #: Valid requests that did not succeed: "action: status body".
    valid_failures: list[str] = field(default_factory=list)
    valid_failure_count: int = 0
    bad_requests: int = 0
    #: Bad requests answered with another status than the one they must get.
    bad_mismatches: list[str] = field(default_factory=list)
    bad_mismatch_count: int = 0
    turns_attempted: int = 0
    turns_answered: int = 0
    sessions_created: int = 0
    sessions_deleted: int = 0
    #: Turn ids each live session must hold, in order.
    expected_turns: dict[str, list[str]] = field(default_factory=dict)
    #: (seconds since start, resident set size in bytes) of the server, once a second.
    rss: list[tuple[float, int]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())

    @property
    def error_rate(self) -> float:
        """Failed valid requests over valid requests."""
        return self.valid_failure_count / self.valid_requests if self.valid_requests else 0.0

    def rss_baseline(self) -> int:
        """Resident memory once warm: the first sample past ``WARMUP_SHARE`` of the run."""
        warm = [rss for at, rss in self.rss if at >= self.seconds * WARMUP_SHARE]
        return warm[0] if warm else self.rss[0][1]

    def rss_growth(self) -> int:
        """Bytes the server grew from the warm baseline to the end of the run."""
        return self.rss[-1][1] - self.rss_baseline() if self.rss else 0

    def figures(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else 0.0

        return {
            "soak_seconds": round(self.seconds, 1), "soak_workers": self.workers,
            "soak_requests": self.requests_total, "soak_requests_per_s": round(self.requests_total / self.seconds, 1),
            "soak_valid_requests": self.valid_requests, "soak_valid_failures": self.valid_failure_count,
            "soak_error_rate": self.error_rate, "soak_bad_requests": self.bad_requests,
            "soak_bad_mismatches": self.bad_mismatch_count, "soak_turns_attempted": self.turns_attempted,
            "soak_turns_answered": self.turns_answered, "soak_sessions_created": self.sessions_created,
            "soak_sessions_deleted": self.sessions_deleted,
            "soak_rss_start_mib": round(self.rss[0][1] / 2**20, 1) if self.rss else None,
            "soak_rss_warm_mib": round(self.rss_baseline() / 2**20, 1) if self.rss else None,
            "soak_rss_end_mib": round(self.rss[-1][1] / 2**20, 1) if self.rss else None,
            "soak_rss_growth_mib": round(self.rss_growth() / 2**20, 1),
            "soak_rss_mib_every_5s": [round(rss / 2**20, 1) for at, rss in self.rss if round(at) % 5 == 0],
            "soak_latency_p50_ms": pct(0.5), "soak_latency_p99_ms": pct(0.99),
        }


def resident_bytes(pid: int) -> int:
    """VmRSS of a process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class _Worker:
    """One simulated client: its own connection and sessions, a seeded random choice of actions."""

    def __init__(self, index: int, base_url: str, model: str, result: SoakResult, lock: threading.Lock,
                 max_body_bytes: int, seed: int) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=120)
        self.model = model
        self.result = result
        self.lock = lock
        self.max_body_bytes = max_body_bytes
        self.random = random.Random(seed * 1000 + index)
        self.tag = f"w{index}"
        #: session id -> completion ids answered in it, in order (this worker's sessions only).
        self.sessions: dict[str, list[str]] = {}

    # ---------------------------------------------------------------------------------------- bookkeeping
    def _timed(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        started = time.perf_counter()
        response = send()
        with self.lock:
            self.result.latencies_ms.append((time.perf_counter() - started) * 1000)
        return response

    def _valid(self, action: str, ok: bool, detail: str) -> None:
        with self.lock:
            self.result.requests[action] += 1
            self.result.valid_requests += 1
            if not ok:
                self.result.valid_failure_count += 1
                if len(self.result.valid_failures) < KEEP_FAILURES:
                    self.result.valid_failures.append(f"{action}: {detail[:300]}")

    def _bad(self, case: str, expected: int, response: httpx.Response) -> None:
        ok = response.status_code == expected and "error" in response.json()
        with self.lock:
            self.result.requests[f"bad:{case}"] += 1
            self.result.bad_requests += 1
            if not ok:
                self.result.bad_mismatch_count += 1
                if len(self.result.bad_mismatches) < KEEP_FAILURES:
                    self.result.bad_mismatches.append(
                        f"{case}: expected {expected}, got {response.status_code} {response.text[:200]}")

    def _turn(self, answered: bool) -> None:
        with self.lock:
            self.result.turns_attempted += 1
            self.result.turns_answered += answered

    def _body(self, stream: bool = False) -> dict[str, Any]:
        question = f"{self.tag} asks {self.random.choice(['hi', 'how are you', 'tell me a joke', 'what is up'])}?"
        return {"model": self.model, "max_tokens": self.random.randint(1, 8), "stream": stream,
                "messages": [{"role": "user", "content": question}]}

    def _session(self) -> str:
        if not self.sessions:
            self.create()
        return self.random.choice(list(self.sessions))

    # ---------------------------------------------------------------------------------------- actions
    def create(self) -> None:
        body: dict[str, Any] = {"metadata": {"worker": self.tag}}
        if self.random.random() < 0.5:
            body["system_prompt"] = "You are terse."
        response = self._timed(lambda: self.http.post("/v1/sessions", json=body))
        ok = response.status_code == 201
        self._valid("create", ok, f"{response.status_code} {response.text}")
        if ok:
            self.sessions[response.json()["id"]] = []
            with self.lock:
                self.result.sessions_created += 1

    def chat(self) -> None:
        session = self._session()
        response = self._timed(lambda: self.http.post("/v1/chat/completions", json=self._body(),
                                                      headers={"x-session-id": session}))
        ok = response.status_code == 200 and response.json()["choices"][0]["message"]["role"] == "assistant"
        self._valid("chat", ok, f"{response.status_code} {response.text}")
        self._turn(ok)
        if ok:
            self.sessions[session].append(response.json()["id"])

    def chat_stream(self) -> None:
        session = self._session()

        def send() -> httpx.Response:
            with self.http.stream("POST", "/v1/chat/completions", json=self._body(stream=True),
                                  headers={"x-session-id": session}) as response:
                response.read()
            return response

        response = self._timed(send)
        events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
        ok = (response.status_code == 200 and bool(events) and events[-1] == "[DONE]"
              and not any('"error"' in e for e in events))
        self._valid("chat_stream", ok, f"{response.status_code} {response.text}")
        self._turn(ok)
        if ok:
            self.sessions[session].append(json.loads(events[0])["id"])

    def chat_retry(self) -> None:
        """A client that lost the answer retries with the same key: the same turn, stored once."""
        session = self._session()
        body, key = self._body(), f"{self.tag}-{uuid.uuid4().hex}"
        headers = {"x-session-id": session, "idempotency-key": key}
        first = self._timed(lambda: self.http.post("/v1/chat/completions", json=body, headers=headers))
        again = self._timed(lambda: self.http.post("/v1/chat/completions", json=body, headers=headers))
        ok = first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]
        self._valid("chat_retry", ok, f"{first.status_code}/{again.status_code} {first.text} {again.text}")
        self._turn(ok)
        if ok:
            self.sessions[session].append(first.json()["id"])

    def chat_stateless(self) -> None:
        response = self._timed(lambda: self.http.post("/v1/chat/completions", json=self._body()))
        ok = response.status_code == 200
        self._valid("chat_stateless", ok, f"{response.status_code} {response.text}")
        self._turn(ok)

    def read(self) -> None:
        session = self._session()
        response = self._timed(lambda: self.http.get(f"/v1/sessions/{session}", params={"limit": 500}))
        ok = response.status_code == 200 and len(response.json()["messages"]["data"]) == 2 * len(
            self.sessions[session])
        self._valid("read", ok, f"{response.status_code} {response.text}")

    def page(self) -> None:
        """Walk a transcript two entries at a time with the cursor the API hands back."""
        session = self._session()
        seen: list[int] = []
        after: int | None = None
        detail = ""
        while True:
            params: dict[str, Any] = {"limit": 2} if after is None else {"limit": 2, "after": after}
            response = self._timed(functools.partial(self.http.get, f"/v1/sessions/{session}", params=params))
            if response.status_code != 200:
                detail = f"{response.status_code} {response.text}"
                break
            page = response.json()["messages"]
            seen += [entry["seq"] for entry in page["data"]]
            after = page["next_after"]
            if after is None:
                break
        ok = not detail and seen == list(range(2 * len(self.sessions[session])))
        self._valid("page", ok, detail or f"sequence {seen}")

    def feedback(self) -> None:
        session = self._session()
        turns = self.sessions[session]
        body: dict[str, Any] = {"score": self.random.randint(1, 5), "comment": "soak"}
        if turns and self.random.random() < 0.7:
            body["turn_id"] = self.random.choice(turns)
        response = self._timed(lambda: self.http.post(f"/v1/sessions/{session}/feedback", json=body))
        self._valid("feedback", response.status_code == 201, f"{response.status_code} {response.text}")

    def delete(self) -> None:
        if len(self.sessions) < 2:
            self.create()
            return
        session = self.random.choice(list(self.sessions))
        response = self._timed(lambda: self.http.delete(f"/v1/sessions/{session}"))
        ok = response.status_code == 200 and response.json()["deleted"] is True
        self._valid("delete", ok, f"{response.status_code} {response.text}")
        if ok:
            del self.sessions[session]
            with self.lock:
                self.result.sessions_deleted += 1

    def bad(self) -> None:
        unknown = f"sess_{uuid.uuid4().hex}"
        session = self._session()
        cases: dict[str, tuple[int, Callable[[], httpx.Response]]] = {
            "unknown_model": (404, lambda: self.http.post("/v1/chat/completions", json={
                **self._body(), "model": "no-such-model"})),
            "no_messages": (400, lambda: self.http.post("/v1/chat/completions", json={
                "model": self.model, "messages": []})),
            "broken_json": (400, lambda: self.http.post("/v1/chat/completions", content=b'{"model": ',
                                                        headers={"content-type": "application/json"})),
            "unknown_session_turn": (404, lambda: self.http.post("/v1/chat/completions", json=self._body(),
                                                                 headers={"x-session-id": unknown})),
            "unknown_session_read": (404, lambda: self.http.get(f"/v1/sessions/{unknown}")),
            "unknown_session_delete": (404, lambda: self.http.delete(f"/v1/sessions/{unknown}")),
            "bad_page_size": (400, lambda: self.http.get(f"/v1/sessions/{session}", params={"limit": 0})),
            "bad_score": (400, lambda: self.http.post(f"/v1/sessions/{session}/feedback", json={"score": 9})),
            "bad_session_id": (400, lambda: self.http.post("/v1/sessions", json={"id": "no spaces allowed"})),
            "body_too_large": (413, lambda: self.http.post("/v1/chat/completions", json={
                **self._body(), "messages": [{"role": "user", "content": "x" * self.max_body_bytes}]})),
            "wrong_method": (405, lambda: self.http.put("/v1/sessions")),
        }
        case = self.random.choice(sorted(cases))
        expected, send = cases[case]
        self._bad(case, expected, self._timed(send))

    def run(self, deadline: float) -> None:
        actions = list(WEIGHTS)
        weights = [WEIGHTS[a] for a in actions]
        self.create()
        try:
            while time.monotonic() < deadline:
                getattr(self, self.random.choices(actions, weights)[0])()
        finally:
            with self.lock:
                self.result.expected_turns.update({s: list(t) for s, t in self.sessions.items()})
            self.http.close()


def run_soak(base_url: str, server_pid: int, model: str, seconds: float, *, workers: int = 8,
             max_body_bytes: int = 1_000_000, seed: int = 20261125) -> SoakResult:
    """Drive ``workers`` clients against the server for ``seconds``; sample its memory once a second."""
    result = SoakResult(workers=workers)
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + seconds
    done = threading.Event()

    def sample() -> None:
        while True:
            result.rss.append((time.monotonic() - started, resident_bytes(server_pid)))
            if done.wait(1.0):
                result.rss.append((time.monotonic() - started, resident_bytes(server_pid)))
                return

    sampler = threading.Thread(target=sample, name="soak-rss", daemon=True)
    sampler.start()
    clients = [_Worker(i, base_url, model, result, lock, max_body_bytes, seed) for i in range(workers)]
    errors: list[BaseException] = []

    def guarded(thread_target: Callable[[float], None]) -> Callable[[float], None]:
        def run(at: float) -> None:
            try:
                thread_target(at)
            except BaseException as exc:  # a transport error is a failure of the run, reported by the caller
                errors.append(exc)
        return run

    threads = [threading.Thread(target=guarded(c.run), args=(deadline,), name=f"soak-{i}")
               for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - started
    done.set()
    sampler.join()
    if errors:
        raise RuntimeError(f"{len(errors)} soak worker(s) failed: {errors[0]!r}") from errors[0]
    return result
