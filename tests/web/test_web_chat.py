"""The chat page in headless Chromium against the real server: streaming, reload, sessions, keys."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.sync_api import expect

from tests.fixtures.servers import run_redis_server
from tests.web.chat_actions import current_session, enter_key, open_chat, send
from tests.web.conftest import server_env, start_server, stop_server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from playwright.sync_api import Page, Route

    from tests.web.conftest import WebServer

#: Records every length the reply being streamed shows, as the page changes it (installed before any script).
RECORD_GROWTH = """
window.__replyLengths = [];
new MutationObserver(() => {
  const bubble = document.querySelector(".message.assistant.streaming .bubble");
  if (bubble) window.__replyLengths.push(bubble.textContent.length);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


#: A reply this long takes the shipped model several milliseconds, longer than the server takes to write the
#: first text: it arrives in more than one write.
MIN_STREAMED_TOKENS = 12


def test_a_message_streams_its_reply_and_shows_variant_and_tokens(new_page: Callable[..., Page],
                                                                   web_server: WebServer) -> None:
    page = new_page()
    page.add_init_script(RECORD_GROWTH)
    open_chat(page, web_server.key)

    # WHEN a message is sent, and another while the sampled reply is too short to span two writes: the first
    # write carries every token made by the time the server writes (~1 ms after the first), so a reply of a
    # few tokens can arrive in one piece (half the shipped model's replies to a greeting are under 12 tokens)
    for message in ["Hello! How are you today?"] + ["Explain how to bake bread, step by step, in detail."] * 7:
        page.evaluate("window.__replyLengths = []")
        reply = send(page, message)
        tokens = re.search(r"→ (\d+) tokens", reply.locator(".tokens").inner_text())
        if tokens and int(tokens.group(1)) >= MIN_STREAMED_TOKENS:
            break

    # THEN the reply grew on screen in several steps, each a prefix of the next, up to the full text
    text = reply.locator(".bubble").inner_text()
    lengths = [n for n in page.evaluate("window.__replyLengths") if n > 0]
    assert text.strip(), "the reply is empty"
    assert lengths == sorted(lengths), f"the reply shrank while streaming: {lengths}"
    assert len(set(lengths)) >= 2 and min(lengths) < len(text), f"the reply appeared at once: {lengths}"
    assert int(reply.get_attribute("data-chunks") or 0) >= 2

    # AND what it shows is what the server stored for that turn: the text, the A/B variant and the tokens
    session_id = current_session(page)
    with web_server.api() as api:
        stored = api.get(f"/v1/sessions/{session_id}").json()
    assistant = [m for m in stored["messages"]["data"] if m["role"] == "assistant"][-1]
    assert assistant["content"] == text
    facts = assistant["metadata"]
    expect(reply.locator(".variant")).to_have_text(f"variant {facts['variant']}")
    expect(reply.locator(".tokens")).to_have_text(f"{facts['prompt_tokens']} → {facts['completion_tokens']} tokens")
    assert reply.get_attribute("data-turn-id") == assistant["turn_id"]
    # AND the new conversation is listed under its first message, as the open one
    listed = page.locator(f".session[data-id='{session_id}']")
    expect(listed).to_have_attribute("aria-current", "true")
    expect(listed.locator(".session-title")).to_have_text("Hello! How are you today?")


def test_a_message_sent_while_the_list_loads_keeps_its_reply_in_view(new_page: Callable[..., Page],
                                                                    web_server: WebServer) -> None:
    """The page reopened "the current conversation" once its list arrived: the one a message sent meanwhile had
    just started, whose streamed reply it wiped from the view (CI: a reply that never showed)."""
    page = new_page()
    held: dict[str, Route] = {}

    def hold_first(name: str) -> Callable[[Route], None]:
        def handle(route: Route) -> None:
            if name in held:
                route.continue_()
            else:
                held[name] = route
        return handle

    page.route(re.compile(r".*/v1/sessions\?limit=100$"), hold_first("list"))
    page.route(re.compile(r".*/v1/chat/completions$"), hold_first("turn"))
    open_chat(page, web_server.key)  # the model is known; the conversation list is still on its way (held)
    page.fill("#prompt", "Hello! How are you today?")
    page.press("#prompt", "Enter")
    expect(page.locator(".message.assistant.streaming")).to_have_count(1)
    # WHEN the list arrives while the turn is on its way (its conversation still empty on the server) ...
    held["list"].continue_()
    page.wait_for_timeout(500)  # time for the page to reopen a conversation, as it did
    held["turn"].continue_()
    # THEN the reply streams into the view it started in
    expect(page.locator(".message.assistant").first.locator(".rating")).to_be_visible()
    expect(page.locator(".message.user")).to_have_text(["Hello! How are you today?"])


def test_reload_finds_the_conversation_again(new_page: Callable[..., Page], web_server: WebServer) -> None:
    page = new_page()
    open_chat(page, web_server.key)
    first = send(page, "What is your name?").locator(".bubble").inner_text()
    send(page, "Tell me about the weather.")
    session_id = current_session(page)

    page.reload()

    # THEN the key is still there (session storage), and the conversation is open with both turns
    expect(page.locator("#model")).not_to_be_empty()
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator(".message")).to_have_count(4)
    expect(page.locator(".message.user .bubble").first).to_have_text("What is your name?")
    expect(page.locator(".message.assistant .bubble").first).to_have_text(first)
    expect(page.locator(f".session[data-id='{session_id}']")).to_have_attribute("aria-current", "true")

    # AND a new tab (no storage but the key) finds it in the list the server keeps for this key
    other_tab = new_page()
    open_chat(other_tab, web_server.key)
    expect(other_tab.locator(".message")).to_have_count(0)
    other_tab.click(f".session[data-id='{session_id}']")
    expect(other_tab.locator(".message")).to_have_count(4)
    expect(other_tab.locator("#chat-title")).to_have_text("What is your name?")


def test_conversations_belong_to_the_key(new_page: Callable[..., Page], web_server: WebServer) -> None:
    page = new_page()
    open_chat(page, web_server.key)
    send(page, "Hi there")
    mine = current_session(page)

    stranger = new_page()
    open_chat(stranger, web_server.other_key)
    with web_server.api(web_server.other_key) as api:
        theirs = [s["id"] for s in api.get("/v1/sessions").json()["data"]]
    if theirs:
        expect(stranger.locator(".session")).to_have_count(len(theirs))
        assert [b.get_attribute("data-id") for b in stranger.locator(".session").all()] == theirs
    else:
        expect(stranger.locator("#session-list")).to_contain_text("No conversations yet.")
    assert mine not in theirs
    expect(stranger.locator(f".session[data-id='{mine}']")).to_have_count(0)


def test_new_reset_and_delete(new_page: Callable[..., Page], web_server: WebServer) -> None:
    page = new_page()
    open_chat(page, web_server.key)
    send(page, "First conversation")
    first = current_session(page)

    page.click("#new-chat")
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator("#chat-title")).to_have_text("New conversation")
    send(page, "Second conversation")
    second = current_session(page)
    assert second != first
    expect(page.locator(f".session[data-id='{first}']")).to_be_visible()

    # Reset keeps the conversation (same id, same title) and drops its messages
    page.click("#reset-chat")
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator(f".session[data-id='{second}']")).to_contain_text("0 msgs")
    expect(page.locator("#chat-title")).to_have_text("Second conversation")
    with web_server.api() as api:
        assert api.get(f"/v1/sessions/{second}").json()["messages"]["data"] == []
    send(page, "After the reset")
    assert current_session(page) == second

    # Delete removes it everywhere
    page.click("#delete-chat")
    expect(page.locator(f".session[data-id='{second}']")).to_have_count(0)
    expect(page.locator(".message")).to_have_count(0)
    with web_server.api() as api:
        assert api.get(f"/v1/sessions/{second}").status_code == 404
        assert api.get(f"/v1/sessions/{first}").status_code == 200


def test_an_invalid_key_shows_a_readable_error(new_page: Callable[..., Page], web_server: WebServer) -> None:
    wrong = "cb-this-key-does-not-exist-0123456789abcdef"
    for path in ("/", "/ops"):
        page = new_page()
        page.goto(path)
        # No key yet: the page says what is needed and opens the key field
        expect(page.locator("#banner")).to_have_text("This server needs an API key: enter it under “API key”.")
        expect(page.locator("#key-panel")).to_be_visible()

        enter_key(page, wrong)

        banner = page.locator("#banner")
        expect(banner).to_contain_text("The API key was not accepted. Incorrect API key provided:")
        message = banner.inner_text()
        assert "{" not in message and wrong not in message, message  # prose, and the key is never echoed whole
        expect(page.locator("#key-panel")).to_be_visible()

        enter_key(page, web_server.key)
        expect(banner).to_be_hidden()
        expect(page.locator("#model")).to_have_text(re.compile(r"\S"))


def test_every_asset_is_served_by_the_app(new_page: Callable[..., Page], web_server: WebServer) -> None:
    page = new_page()
    for path in ("/", "/ops"):
        response = page.goto(path)
        assert response is not None and response.ok
        assert "default-src 'self'" in response.headers["content-security-policy"]
        if path == "/":
            enter_key(page, web_server.key)
        # (the tab keeps the key for the next page)
        expect(page.locator("#model")).not_to_be_empty()
        page.wait_for_load_state("networkidle")
    expect(page.locator("#banner")).to_be_hidden()
    requested = page.requested  # type: ignore[attr-defined]
    assert any(url.endswith("/web/js/chart.js") for url in requested)
    assert all(url.startswith(web_server.base_url + "/") for url in requested), requested


@pytest.fixture(scope="module")
def redis_backed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An open server (loopback, no key) on the Redis store, which cannot list sessions by owner.

    Its redis-server is its own: an API key another test left in a shared one would close the server.
    """
    data_dir = tmp_path_factory.mktemp("web-redis")
    with run_redis_server(data_dir) as redis_url:
        env = server_env(data_dir, CLAWDBOT_SESSION_STORE="redis", CLAWDBOT_REDIS_URL=redis_url)
        base_url, process = start_server(env, data_dir / "server.log")
        yield base_url
        stop_server(process)


def test_without_a_session_list_the_browser_remembers_its_conversations(
        new_page: Callable[..., Page], redis_backed_server: str) -> None:
    assert httpx.get(f"{redis_backed_server}/v1/sessions").json()["error"]["code"] == "session_listing_unsupported"
    page = new_page(base_url=redis_backed_server)
    page.goto("/")
    expect(page.locator("#model")).not_to_be_empty()  # an open server: no key asked for
    expect(page.locator("#banner")).to_be_hidden()
    send(page, "Remember me")
    session_id = current_session(page)

    # A new tab of the same browser (local storage, not this tab's session storage) lists it again
    other_tab = page.context.new_page()
    other_tab.goto("/")
    expect(other_tab.locator("#sessions-note")).to_have_text("Conversations started in this browser.")
    other_tab.click(f".session[data-id='{session_id}']")
    expect(other_tab.locator(".message.user .bubble")).to_have_text("Remember me")
    other_tab.click("#delete-chat")
    expect(other_tab.locator(f".session[data-id='{session_id}']")).to_have_count(0)
    assert page.evaluate("localStorage.getItem('clawdbot.knownSessions')") == "[]"
