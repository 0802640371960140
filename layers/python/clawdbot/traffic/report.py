"""The A/B report: per variant, turns, conversations, latency percentiles, tokens and satisfaction.

Input is a list of :class:`SessionRecord` — read from the local SQLite store, or from exported data: JSON Lines
(or one JSON array) of session objects exactly as ``GET /v1/sessions/{id}`` returns them, which any deployment
(DynamoDB, Redis) can produce through its own API and ``clawdbot ab export`` writes from the local store.

Definitions (docs/traffic.md):

* A *turn* counts for the variant recorded on its reply; a *conversation* (a session with at least one reply)
  for the session's sticky variant (else its first turn's).
* A conversation is *completed* when it has at least one reply and either the user ended it (feedback on the
  whole session) or it has been idle longer than ``idle_seconds``.
* *Satisfaction* is per conversation — the mean of its feedback scores — because sessions, not turns, are the
  unit of randomisation: turns of one conversation are not independent samples.
* Significance: Welch's two-sided t-test of each variant's conversation satisfaction against the control (the
  first variant), at alpha = 0.05; the 95% interval of a mean uses Student's t.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clawdbot.traffic import stats
from clawdbot.traffic.ab import DEFAULT_VARIANT, VARIANT_ATTRIBUTE

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

ALPHA = 0.05
TEST_NAME = "Welch's two-sided t-test on per-conversation mean satisfaction vs the control, alpha = 0.05"
FEEDBACK_PREFIX = "feedback:"
SESSION_FEEDBACK = "feedback:session"
COMPLETED_ATTRIBUTE = "completed_at"


@dataclass(frozen=True, slots=True)
class Reply:
    variant: str
    latency_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    created_at: float


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: str
    updated_at: float
    attributes: dict[str, Any]
    replies: list[Reply] = field(default_factory=list)

    @property
    def variant(self) -> str:
        recorded = self.attributes.get(VARIANT_ATTRIBUTE)
        if recorded:
            return str(recorded)
        return self.replies[0].variant if self.replies else DEFAULT_VARIANT

    @property
    def scores(self) -> list[int]:
        return [int(v["score"]) for k, v in self.attributes.items()
                if k.startswith(FEEDBACK_PREFIX) and isinstance(v, dict) and "score" in v]

    def completed(self, now: float, idle_seconds: float) -> bool:
        if not self.replies:
            return False
        ended = COMPLETED_ATTRIBUTE in self.attributes or SESSION_FEEDBACK in self.attributes
        return ended or now - self.updated_at > idle_seconds


def _reply(attributes: dict[str, Any], created_at: float) -> Reply:
    latency = attributes.get("latency_ms")
    return Reply(variant=str(attributes.get(VARIANT_ATTRIBUTE) or DEFAULT_VARIANT),
                 latency_ms=None if latency is None else float(latency),
                 prompt_tokens=int(attributes.get("prompt_tokens") or 0),
                 completion_tokens=int(attributes.get("completion_tokens") or 0), created_at=float(created_at))


# ------------------------------------------------------------------------------------------- sources
def load_sqlite(data_dir: str | Path, filename: str = "sessions.sqlite3") -> list[SessionRecord]:
    """Every session of the local store, read-only (nothing is touched: no TTL slides)."""
    path = Path(data_dir) / filename
    if not path.exists():
        raise FileNotFoundError(f"no session store at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        sessions = {sid: SessionRecord(sid, float(updated), json.loads(attrs or "{}"))
                    for sid, updated, attrs in conn.execute(
                        "SELECT session_id, updated_at, attributes FROM sessions ORDER BY created_at")}
        for sid, attrs, created in conn.execute(
                "SELECT session_id, attributes, created_at FROM entries WHERE role = 'assistant' "
                "ORDER BY session_id, seq"):
            if sid in sessions:
                sessions[sid].replies.append(_reply(json.loads(attrs or "{}"), created))
    finally:
        conn.close()
    return list(sessions.values())


def from_api_objects(objects: Iterable[dict[str, Any]]) -> list[SessionRecord]:
    """Sessions in the shape of ``GET /v1/sessions/{id}`` (``metadata``, ``messages.data[].metadata``)."""
    records = []
    for obj in objects:
        messages = obj.get("messages", {})
        entries = messages.get("data", []) if isinstance(messages, dict) else messages
        record = SessionRecord(str(obj["id"]), float(obj.get("updated_at", 0)), dict(obj.get("metadata") or {}))
        record.replies.extend(_reply(e.get("metadata") or {}, e.get("created_at", 0))
                              for e in entries if e.get("role") == "assistant")
        records.append(record)
    return records


def load_export(path: str | Path) -> list[SessionRecord]:
    """JSON Lines (one session object per line) or a JSON array of session objects."""
    text = Path(path).read_text(encoding="utf-8").strip()
    if text.startswith("["):
        return from_api_objects(json.loads(text))
    return from_api_objects(json.loads(line) for line in text.splitlines() if line.strip())


def export_objects(records: Sequence[SessionRecord]) -> list[dict[str, Any]]:
    """The records in the API's session shape (what :func:`load_export` reads)."""
    return [{"id": r.session_id, "object": "session", "updated_at": r.updated_at, "metadata": r.attributes,
             "messages": {"object": "list", "data": [
                 {"role": "assistant", "created_at": p.created_at,
                  "metadata": {VARIANT_ATTRIBUTE: p.variant, "latency_ms": p.latency_ms,
                               "prompt_tokens": p.prompt_tokens, "completion_tokens": p.completion_tokens}}
                 for p in r.replies]}} for r in records]


# ------------------------------------------------------------------------------------------- report
@dataclass(frozen=True, slots=True)
class VariantRow:
    variant: str
    turns: int
    conversations: int
    completed: int
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    tokens: int
    rated_conversations: int
    satisfaction_mean: float | None
    satisfaction_ci_low: float | None
    satisfaction_ci_high: float | None
    #: Against the control (``None`` for the control itself or too few ratings).
    difference: float | None = None
    t: float | None = None
    df: float | None = None
    p_value: float | None = None
    significant: bool | None = None


@dataclass(frozen=True, slots=True)
class Report:
    control: str
    test: str
    alpha: float
    idle_seconds: float
    rows: list[VariantRow]

    def to_dict(self) -> dict[str, Any]:
        return {"control": self.control, "test": self.test, "alpha": self.alpha, "idle_seconds": self.idle_seconds,
                "variants": [asdict(r) for r in self.rows]}


def build_report(records: Sequence[SessionRecord], *, variants: Sequence[str] = (), control: str | None = None,
                 idle_seconds: float = 1800, now: float | None = None) -> Report:
    """Aggregate per variant; ``variants`` fixes the order (the configured one), others follow by name."""
    now = time.time() if now is None else now
    seen = {p.variant for r in records for p in r.replies} | {r.variant for r in records if r.replies}
    order = [v for v in variants if v in seen or v == control] + sorted(seen - set(variants))
    if not order:
        order = list(variants[:1]) or [DEFAULT_VARIANT]
    control = control or order[0]
    conversations = [r for r in records if r.replies]
    satisfaction = {v: [stats.mean(r.scores) for r in conversations if r.variant == v and r.scores] for v in order}
    rows = []
    for variant in order:
        replies = [p for r in records for p in r.replies if p.variant == variant]
        latencies = [p.latency_ms for p in replies if p.latency_ms is not None]
        mine = [r for r in conversations if r.variant == variant]
        interval = stats.mean_interval(satisfaction[variant])
        comparison = None if variant == control else stats.welch_t_test(satisfaction[variant],
                                                                          satisfaction.get(control, []))
        difference = None
        if comparison is not None and interval is not None:
            difference = interval.mean - stats.mean(satisfaction[control])
        prompt = sum(p.prompt_tokens for p in replies)
        completion = sum(p.completion_tokens for p in replies)
        rows.append(VariantRow(
            variant=variant, turns=len(replies), conversations=len(mine),
            completed=sum(r.completed(now, idle_seconds) for r in mine),
            p50_latency_ms=stats.percentile(latencies, 50), p95_latency_ms=stats.percentile(latencies, 95),
            prompt_tokens=prompt, completion_tokens=completion, tokens=prompt + completion,
            rated_conversations=len(satisfaction[variant]),
            satisfaction_mean=interval.mean if interval else None,
            satisfaction_ci_low=interval.low if interval else None,
            satisfaction_ci_high=interval.high if interval else None,
            difference=difference,
            t=None if comparison is None else comparison.t, df=None if comparison is None else comparison.df,
            p_value=None if comparison is None else comparison.p_value,
            significant=None if comparison is None else comparison.p_value < ALPHA))
    return Report(control, TEST_NAME, ALPHA, idle_seconds, rows)


def render(report: Report) -> str:
    """A fixed-width table, then the test used."""
    def num(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    header = (f"{'variant':<14}{'turns':>7}{'convs':>7}{'done':>6}{'p50 ms':>10}{'p95 ms':>10}{'tokens':>10}"
              f"{'rated':>7}  {'satisfaction (95% CI)':<24}{'vs control':<24}")
    lines = [header, "-" * len(header)]
    for r in report.rows:
        sat = "-" if r.satisfaction_mean is None else (
            f"{r.satisfaction_mean:.2f}" + ("" if r.satisfaction_ci_low is None else
                                            f" [{r.satisfaction_ci_low:.2f}, {r.satisfaction_ci_high:.2f}]"))
        if r.variant == report.control:
            versus = "(control)"
        elif r.p_value is None:
            versus = "too few ratings"
        else:
            versus = f"{r.difference:+.2f}, p={r.p_value:.3g} " + ("significant" if r.significant else "n.s.")
        lines.append(f"{r.variant:<14}{r.turns:>7}{r.conversations:>7}{r.completed:>6}"
                     f"{num(r.p50_latency_ms):>10}{num(r.p95_latency_ms):>10}{r.tokens:>10}"
                     f"{r.rated_conversations:>7}  {sat:<24}{versus:<24}")
    lines.append("")
    lines.append(f"Test: {report.test}. Completed = at least one reply and ended by the user (session feedback) "
                 f"or idle > {report.idle_seconds:g}s.")
    return "\n".join(lines)
