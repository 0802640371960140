"""The operations page in headless Chromium: live metrics, the latency guard, the A/B table."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from playwright.sync_api import expect

from tests.web.chat_actions import enter_key, open_chat, send
from tests.web.conftest import BREACH_TURNS, LATENCY_THRESHOLD_MS, NO_READING, VARIANTS

if TYPE_CHECKING:
    from collections.abc import Callable

    from playwright.sync_api import Page

    from tests.web.conftest import WebServer

#: The page's refresh period in these tests (seconds); the default is 3.
REFRESH = 1


def open_ops(page: Page, key: str) -> None:
    page.goto(f"/ops?refresh={REFRESH}")
    enter_key(page, key)
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#refreshed")).to_contain_text("updated")


def satisfaction(web_server: WebServer) -> tuple[float, float]:
    """(sum, count) of every feedback score so far, from the summary the page polls."""
    with web_server.api() as api:
        series = api.get("/v1/ops/summary").json()["metrics"]["SatisfactionScore"]["series"]
    return sum(s["sum"] for s in series), sum(s["count"] for s in series)


def ratings_text(count: float) -> str:
    return f"{count:.0f} rating" + ("" if count == 1 else "s")


def test_rating_a_reply_moves_satisfaction_on_ops(new_page: Callable[..., Page], web_server: WebServer) -> None:
    chat = new_page()
    open_chat(chat, web_server.key)
    reply = send(chat, "Good morning!")
    ops = new_page()
    open_ops(ops, web_server.key)
    total, count = satisfaction(web_server)
    card = ops.locator("[data-metric=satisfaction]")
    expect(ops.locator("#ratings")).to_have_text(ratings_text(count))

    # WHEN the reply is rated 2, then changed to 5 (two pieces of feedback, each one counted)
    reply.get_by_role("button", name="Rate 2 of 5").click()
    expect(reply.locator(".rating")).to_have_attribute("data-saved", "2")
    expect(ops.locator("#ratings")).to_have_text(ratings_text(count + 1))
    expect(card.locator(".now")).to_have_text(f"{(total + 2) / (count + 1):.2f}")
    reply.get_by_role("button", name="Rate 5 of 5").click()
    expect(reply.locator(".rating")).to_have_attribute("data-saved", "5")

    # THEN /ops shows the new mean and count on its next refresh
    expect(ops.locator("#ratings")).to_have_text(ratings_text(count + 2))
    expect(card.locator(".now")).to_have_text(f"{(total + 7) / (count + 2):.2f}")
    # AND the chat page shows the rating it keeps (the last one) after a reload
    chat.reload()
    expect(chat.locator(".message.assistant").last.get_by_role("button", name="Rate 5 of 5")) \
        .to_have_attribute("aria-pressed", "true")


def test_ops_shows_three_levels_the_guard_and_the_ab_table(new_page: Callable[..., Page],
                                                           web_server: WebServer) -> None:
    chat = new_page()
    open_chat(chat, web_server.key)
    for text in ("One", "Two", "Three"):
        send(chat, text)
    ops = new_page()
    open_ops(ops, web_server.key)

    # Three levels of metrics, each card with a reading once two refreshes have happened
    for metric in ("cpu", "memory", "requests", "latency", "throughput", "concurrency", "turns", "satisfaction"):
        expect(ops.locator(f"[data-metric={metric}] .now")).not_to_have_text(NO_READING)
    expect(ops.locator("[data-metric=memory] .now")).to_contain_text("MiB")
    latency = ops.locator("[data-metric=latency] .now")
    expect(latency).to_have_text(re.compile(r"^p95 [\d,]+ ms$"))
    expect(ops.locator("#latency-scope")).to_have_text("since start")  # the turns came before the page opened
    send(chat, "Four")
    expect(ops.locator("#latency-scope")).to_have_text("last minute")  # a turn the page saw
    expect(latency).to_have_text(re.compile(r"^p95 [\d,]+ ms$"))
    with web_server.api() as api:
        summary = api.get("/v1/ops/summary").json()
    turns = sum(s["value"] for s in summary["metrics"]["Turns"]["series"])
    assert turns >= 4
    expect(ops.locator("[data-metric=turns] .now")).to_have_text(f"{turns:,.0f}")
    # The chat turns at the in-process model (this server runs it): its gauges, none generating now
    assert {"TurnsInFlight", "TurnsQueued"} <= set(summary["metrics"])
    expect(ops.locator("[data-metric=model-turns]")).to_be_visible()
    expect(ops.locator("[data-metric=model-turns] .now")).to_have_text("0 · 0 waiting")

    # The latency guard: the threshold, and per variant the streak the server holds (every turn is slow here)
    expect(ops.locator("#guard-rule")).to_contain_text(f"{BREACH_TURNS} consecutive turns slower than "
                                                       f"{LATENCY_THRESHOLD_MS} ms")
    streaks = summary["latency_guard"]["streaks"]
    assert sorted(streaks) == sorted(v["name"] for v in VARIANTS)
    assert sum(streaks.values()) == turns  # no turn was fast enough to reset a streak
    for variant, streak in streaks.items():
        row = ops.locator(f"#guard-table tr[data-variant='{variant}']")
        expect(row.locator("td").nth(1)).to_have_text(f"{streak} / {BREACH_TURNS}")

    # The A/B table is `clawdbot ab report`'s: a row per arm that served a turn, in the configured order, the
    # first one the control, and its turns adding up to every reply stored (by either key: it reads the store)
    sessions = []
    for key in (web_server.key, web_server.other_key):
        with web_server.api(key) as api:
            sessions += api.get("/v1/sessions").json()["data"]
    stored = sum(s["message_count"] // 2 for s in sessions)
    arms = [v["name"] for v in VARIANTS if any(s["metadata"].get("variant") == v["name"] for s in sessions)]
    assert stored >= 4
    rows = ops.locator("#ab-table tbody tr")
    expect(rows).to_have_count(len(arms))
    for i, arm in enumerate(arms):
        expect(rows.nth(i)).to_have_attribute("data-variant", arm)
    expect(rows.first.locator("td").last).to_have_text("(control)")
    ops.wait_for_function(  # the report is rebuilt at most every 10 s
        """n => [...document.querySelectorAll('#ab-table tbody tr')]
                 .reduce((sum, row) => sum + Number(row.cells[1].textContent.replace(/,/g, '')), 0) === n""",
        arg=stored)
