"""Soak, short: mixed traffic (``tests.reliability.soak``) against ``clawdbot serve`` on SQLite for
``CLAWDBOT_SOAK_SECONDS`` (20 in CI; ``python -m bench.reliability`` runs the 2-minute one).

Afterwards: no valid request failed, every bad request got exactly its status, the server's memory stopped growing
once warm, and the store, walked whole, is consistent and holds exactly the turns each client was answered, in the
order it sent them (deleted sessions gone).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from clawdbot.reliability.consistency import check_store
from tests.reliability.soak import run_soak

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.reliability.conftest import Backing, Figures, Serve

SECONDS = float(os.environ.get("CLAWDBOT_SOAK_SECONDS", "20"))
WORKERS = 6
MAX_BODY_BYTES = 64 * 1024
#: Growth allowed over the second half of the run (after warm-up). About a thousand requests run in it, so keeping
#: ~16 KiB per request (a response, a transcript, a connection's buffers) fails it; the 2-minute soak
#: (``python -m bench.reliability``) reports the growth for slower leaks.
RSS_GROWTH_LIMIT = 16 * 2**20
#: The engine's prefix cache fills up to its size by design (256 MiB by default), which over a short run reads as
#: growth; at 1 MiB it is full within the warm-up and turns over all the time (eviction under load), so what
#: grows is a leak. (``tests/inference/test_onnx_prefix_cache.py`` holds the cache to its size.)
PREFIX_CACHE_MB = 1


def test_mixed_traffic_keeps_every_turn_and_bounded_memory(sqlite_backing: Backing, serve: Callable[..., Serve],
                                                           model_id: str, figures: Figures) -> None:
    server = serve({**sqlite_backing.env, "CLAWDBOT_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
                    "CLAWDBOT_PREFIX_CACHE_MB": str(PREFIX_CACHE_MB)})

    result = run_soak(server.base_url, server.process.pid, model_id, SECONDS, workers=WORKERS,
                      max_body_bytes=MAX_BODY_BYTES)
    figures.add("soak_requests", result.requests_total)
    figures.add("soak_turns_attempted", result.turns_attempted)

    assert result.valid_failures == [] and result.valid_failure_count == 0
    assert result.bad_mismatches == [] and result.bad_mismatch_count == 0
    assert result.turns_answered > 50 and result.bad_requests > 10 and result.sessions_deleted > 0
    assert result.rss_growth() < RSS_GROWTH_LIMIT, result.rss
    # THEN the store is whole and holds what the clients were told
    report = check_store(sqlite_backing.make_store())
    assert report.ok, report.problems[:10]
    assert {s: report.turn_ids.get(s) for s in result.expected_turns} == result.expected_turns
    figures.add("soak_turns_stored", sum(len(t) for t in result.expected_turns.values()))
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
