"""What a person does on the pages, as functions the browser tests share."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from playwright.sync_api import expect

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page


def enter_key(page: Page, key: str) -> None:
    """Answer the page's request for a key: it opens its key field when the server refuses a call (401)."""
    expect(page.locator("#key-panel")).to_be_visible()  # not clicking the toggle: that would race the page's own
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")


def open_chat(page: Page, key: str) -> None:
    """Load the chat page and give it the key; returns once the model is known (the key worked)."""
    page.goto("/")
    expect(page.locator("#banner")).to_contain_text("needs an API key")
    enter_key(page, key)
    expect(page.locator("#key-panel")).to_be_hidden()
    expect(page.locator("#model")).not_to_be_empty()
    expect(page.locator("#banner")).to_be_hidden()


def send(page: Page, text: str) -> Locator:
    """Type ``text``, press Enter, wait for the reply to finish; the reply's ``article``."""
    before = page.locator(".message.assistant").count()
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    reply = page.locator(".message.assistant").nth(before)
    expect(reply.locator(".rating")).to_be_visible()
    expect(reply).not_to_have_class(re.compile(r"\bstreaming\b"))
    return reply


def current_session(page: Page) -> str:
    session_id = page.evaluate("sessionStorage.getItem('clawdbot.session')")
    assert session_id, "the page has no open conversation"
    return session_id
