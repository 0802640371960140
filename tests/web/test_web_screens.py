"""Both pages at a phone's and a desktop's window size: nothing overflows sideways, and screenshots to look at."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import expect

from tests.web.chat_actions import enter_key, open_chat, send
from tests.web.conftest import DESKTOP, NO_READING, PHONE

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from playwright.sync_api import Page

    from tests.web.conftest import WebServer

SIZES = {"phone": PHONE, "desktop": DESKTOP}


def assert_fits_the_window(page: Page) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page is {width[0]} px wide in a {width[1]} px window"


@pytest.mark.parametrize("size", SIZES)
def test_pages_fit_the_window_and_are_captured(size: str, new_page: Callable[..., Page], web_server: WebServer,
                                               artifacts: Path) -> None:
    viewport = SIZES[size]
    chat = new_page(viewport)
    open_chat(chat, web_server.key)
    send(chat, "Hello! What can you do?")
    reply = send(chat, "Tell me a short story about a cat who learns to sail across the sea.")
    reply.get_by_role("button", name="Rate 4 of 5").click()
    expect(reply.locator(".rating")).to_have_attribute("data-saved", "4")

    messages = chat.locator("#messages")
    sessions = chat.locator("#sessions")
    expect(messages).to_be_in_viewport()
    if size == "phone":
        # The conversation list slides over the chat on demand instead of squeezing it
        expect(sessions).not_to_be_in_viewport()
        chat.click("#sessions-toggle")
        expect(sessions).to_be_in_viewport(ratio=1)
        chat.screenshot(path=artifacts / f"chat-{size}-list.png")
        chat.click("#sessions-toggle")
        expect(sessions).not_to_be_in_viewport()
    else:
        expect(sessions).to_be_in_viewport()
    assert_fits_the_window(chat)
    chat.screenshot(path=artifacts / f"chat-{size}.png")

    ops = new_page(viewport)
    ops.goto("/ops?refresh=1")
    enter_key(ops, web_server.key)
    for metric in ("cpu", "requests", "turns", "satisfaction"):
        expect(ops.locator(f"[data-metric={metric}] .now")).not_to_have_text(NO_READING)
    expect(ops.locator("#ab-table tbody tr").first).to_be_visible()
    ops.wait_for_timeout(2000)  # a few more readings, so the charts have lines
    assert_fits_the_window(ops)
    ops.screenshot(path=artifacts / f"ops-{size}.png", full_page=True)
