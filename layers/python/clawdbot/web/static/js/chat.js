// The chat page: the caller's conversations, a streamed reply, ratings, new/reset/delete.
import { ApiError, api, apiJson, describe, formatNumber, setupKeyPanel, showError } from "./common.js";

const CURRENT_STORAGE = "clawdbot.session"; // the conversation open in this tab (survives a reload)
const KNOWN_STORAGE = "clawdbot.knownSessions"; // ids this browser created, for stores that cannot list
const TITLE_LENGTH = 60;

const $ = (id) => document.getElementById(id);
const state = {
  model: null,
  sessionId: sessionStorage.getItem(CURRENT_STORAGE),
  sessions: [],
  abort: null,
};

// ------------------------------------------------------------------------------------------- sessions
function known() {
  try {
    return JSON.parse(localStorage.getItem(KNOWN_STORAGE) || "[]");
  } catch {
    return [];
  }
}

function remember(id) {
  localStorage.setItem(KNOWN_STORAGE, JSON.stringify([id, ...known().filter((k) => k !== id)].slice(0, 50)));
}

function forget(id) {
  localStorage.setItem(KNOWN_STORAGE, JSON.stringify(known().filter((k) => k !== id)));
}

function setCurrent(id) {
  state.sessionId = id;
  if (id) sessionStorage.setItem(CURRENT_STORAGE, id);
  else sessionStorage.removeItem(CURRENT_STORAGE);
  $("reset-chat").disabled = !id;
  $("delete-chat").disabled = !id;
}

/** The caller's sessions: the server lists them; a store that cannot (501) falls back to ids kept here. */
async function loadSessions() {
  let sessions;
  try {
    sessions = (await apiJson("v1/sessions?limit=100")).data;
    $("sessions-note").textContent = "";
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 501) throw error;
    const found = await Promise.all(known().map((id) => apiJson(`v1/sessions/${encodeURIComponent(id)}?limit=1`)
      .catch((e) => { if (e instanceof ApiError && e.status === 404) forget(id); return null; })));
    sessions = found.filter(Boolean).sort((a, b) => b.updated_at - a.updated_at);
    $("sessions-note").textContent = "Conversations started in this browser.";
  }
  state.sessions = sessions;
  renderSessions();
}

function titleOf(session) {
  return (session.metadata && session.metadata.title) || "Untitled conversation";
}

function renderSessions() {
  const list = $("session-list");
  list.replaceChildren();
  for (const session of state.sessions) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "session";
    button.dataset.id = session.id;
    if (session.id === state.sessionId) button.setAttribute("aria-current", "true");
    const title = document.createElement("span");
    title.className = "session-title";
    title.textContent = titleOf(session);
    const info = document.createElement("small");
    info.className = "muted";
    const when = new Date(session.updated_at * 1000);
    info.textContent = `${when.toLocaleDateString([], { month: "short", day: "numeric" })} `
      + `${when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })} · ${session.message_count} msgs`;
    button.append(title, info);
    button.addEventListener("click", () => openSession(session.id).catch(fail));
    item.append(button);
    list.append(item);
  }
  if (!state.sessions.length) {
    const empty = document.createElement("li");
    empty.className = "muted small";
    empty.textContent = "No conversations yet.";
    list.append(empty);
  }
  const current = state.sessions.find((s) => s.id === state.sessionId);
  $("chat-title").textContent = current ? titleOf(current) : "New conversation";
}

async function openSession(id) {
  closeSidebar();
  const entries = [];
  let after = null;
  let session;
  do {
    const query = after === null ? "limit=500" : `limit=500&after=${after}`;
    session = await apiJson(`v1/sessions/${encodeURIComponent(id)}?${query}`);
    entries.push(...session.messages.data);
    after = session.messages.next_after;
  } while (session.messages.has_more);
  setCurrent(id);
  const ratings = session.metadata || {};
  const messages = $("messages");
  messages.replaceChildren();
  for (const entry of entries) {
    if (entry.role !== "user" && entry.role !== "assistant") continue;
    const view = addMessage(entry.role, entry.content);
    if (entry.role === "assistant") {
      const facts = entry.metadata || {};
      const rating = ratings[`feedback:${entry.turn_id}`];
      finishReply(view, {
        turnId: entry.turn_id, variant: facts.variant, promptTokens: facts.prompt_tokens,
        completionTokens: facts.completion_tokens, latencyMs: facts.latency_ms,
        score: rating && rating.score,
      });
    }
  }
  renderSessions();
  scrollToEnd();
}

function startNew() {
  stopStreaming();
  setCurrent(null);
  $("messages").replaceChildren();
  renderSessions();
  closeSidebar();
  $("prompt").focus();
}

async function resetCurrent() {
  const id = state.sessionId;
  const session = state.sessions.find((s) => s.id === id);
  stopStreaming();
  await api(`v1/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
  // The same id again: the conversation keeps its place (and its hashed A/B arm) with no history.
  const metadata = session && session.metadata && session.metadata.title ? { title: session.metadata.title } : {};
  await apiJson("v1/sessions", { method: "POST", body: { id, metadata } });
  $("messages").replaceChildren();
  await loadSessions();
}

async function deleteCurrent() {
  const id = state.sessionId;
  stopStreaming();
  await api(`v1/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
  forget(id);
  startNew();
  await loadSessions();
}

// ------------------------------------------------------------------------------------------- messages
function addMessage(role, text) {
  const article = document.createElement("article");
  article.className = `message ${role}`;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  bubble.textContent = text;
  const meta = document.createElement("footer");
  meta.className = "meta";
  article.append(bubble, meta);
  $("messages").append(article);
  return { article, bubble, meta };
}

function scrollToEnd() {
  const messages = $("messages");
  messages.scrollTop = messages.scrollHeight;
}

/** The discreet line under a reply: variant, tokens, time, and the 1-5 rating. */
function finishReply(view, { turnId, variant, promptTokens, completionTokens, latencyMs, score }) {
  const { article, meta } = view;
  article.dataset.turnId = turnId || "";
  meta.replaceChildren();
  const facts = [];
  if (variant) facts.push(["variant", `variant ${variant}`]);
  if (promptTokens !== undefined && completionTokens !== undefined) {
    facts.push(["tokens", `${formatNumber(promptTokens)} → ${formatNumber(completionTokens)} tokens`]);
  }
  if (latencyMs !== undefined && latencyMs !== null) {
    facts.push(["latency", latencyMs < 1000 ? `${latencyMs.toFixed(0)} ms` : `${(latencyMs / 1000).toFixed(1)} s`]);
  }
  for (const [name, text] of facts) {
    const span = document.createElement("span");
    span.className = name;
    span.textContent = text;
    meta.append(span);
  }
  if (!turnId) return;
  const group = document.createElement("span");
  group.className = "rating";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", "Rate this reply from 1 (poor) to 5 (great)");
  for (let value = 1; value <= 5; value += 1) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = String(value);
    button.title = `Rate ${value} of 5`;
    button.setAttribute("aria-label", button.title);
    button.setAttribute("aria-pressed", String(score === value));
    button.addEventListener("click", () => rate(group, turnId, value).catch(fail));
    group.append(button);
  }
  meta.append(group);
}

async function rate(group, turnId, score) {
  await apiJson(`v1/sessions/${encodeURIComponent(state.sessionId)}/feedback`, {
    method: "POST", body: { score, turn_id: turnId },
  });
  for (const button of group.querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(Number(button.textContent) === score));
  }
  group.dataset.saved = String(score);
}

/** Server-sent events of a fetch Response, one ``data:`` payload at a time. */
async function* sseData(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
      if (data.length) yield data.join("\n");
    }
  }
}

async function send(text) {
  showError("");
  if (!state.sessionId) {
    const created = await apiJson("v1/sessions", {
      method: "POST", body: { metadata: { title: text.replace(/\s+/g, " ").trim().slice(0, TITLE_LENGTH) } },
    });
    setCurrent(created.id);
    remember(created.id);
  }
  addMessage("user", text);
  const view = addMessage("assistant", "");
  view.article.classList.add("streaming");
  scrollToEnd();
  const controller = new AbortController();
  state.abort = controller;
  setBusy(true);
  const started = performance.now();
  const reply = { turnId: null, usage: null };
  let chunks = 0;
  try {
    const response = await api("v1/chat/completions", {
      method: "POST",
      headers: { "x-session-id": state.sessionId },
      body: {
        model: state.model, messages: [{ role: "user", content: text }],
        stream: true, stream_options: { include_usage: true },
      },
      signal: controller.signal,
    });
    reply.variant = response.headers.get("x-clawdbot-variant") || undefined;
    for await (const data of sseData(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(500, chunk.error);
      reply.turnId = chunk.id || reply.turnId;
      if (chunk.usage) reply.usage = chunk.usage;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        view.bubble.textContent += delta.content;
        chunks += 1;
        view.article.dataset.chunks = String(chunks);
        scrollToEnd();
      }
    }
    finishReply(view, {
      turnId: reply.turnId, variant: reply.variant,
      promptTokens: reply.usage ? reply.usage.prompt_tokens : undefined,
      completionTokens: reply.usage ? reply.usage.completion_tokens : undefined,
      latencyMs: performance.now() - started,
    });
  } catch (error) {
    if (error.name === "AbortError") {
      finishReply(view, { variant: reply.variant, latencyMs: performance.now() - started });
      const stopped = document.createElement("span");
      stopped.className = "stopped";
      stopped.textContent = "stopped";
      view.meta.append(stopped);
      return;
    }
    view.article.classList.add("failed");
    if (!view.bubble.textContent) view.bubble.textContent = describe(error);
    throw error;
  } finally {
    view.article.classList.remove("streaming");
    state.abort = null;
    setBusy(false);
    loadSessions().catch(fail);
  }
}

function stopStreaming() {
  if (state.abort) state.abort.abort();
}

function setBusy(busy) {
  $("messages").setAttribute("aria-busy", String(busy)); // screen readers read the reply once, when complete
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("prompt").readOnly = busy;
}

// ------------------------------------------------------------------------------------------- page
function fail(error) {
  console.error(error);
  showError(describe(error));
  if (error instanceof ApiError && error.status === 401) keyPanel.open(true);
}

function closeSidebar() {
  document.body.classList.remove("sessions-open");
  $("sessions-toggle").setAttribute("aria-expanded", "false");
}

/** Ask for the model (which also tells whether the key works), then list and reopen conversations. */
async function start() {
  showError("");
  // The conversation to reopen is the one open now: a message sent while the list loads starts (and streams into)
  // a new one, which reopening would wipe from the view mid-reply.
  const reopen = state.sessionId;
  const models = await apiJson("v1/models");
  state.model = models.data[0].id;
  $("model").textContent = state.model;
  await loadSessions();
  if (reopen && state.sessionId === reopen && !state.abort) {
    await openSession(reopen).catch((error) => {
      if (error instanceof ApiError && error.status === 404) startNew();
      else throw error;
    });
  }
}

const keyPanel = setupKeyPanel(() => start().catch(fail));

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = $("prompt");
  const text = prompt.value.trim();
  if (!text || state.abort) return;
  if (!state.model) {
    start().catch(fail);
    return;
  }
  prompt.value = "";
  send(text).catch(fail);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", stopStreaming);
$("new-chat").addEventListener("click", startNew);
$("reset-chat").addEventListener("click", () => resetCurrent().catch(fail));
$("delete-chat").addEventListener("click", () => deleteCurrent().catch(fail));
$("sessions-toggle").addEventListener("click", () => {
  const open = !document.body.classList.contains("sessions-open");
  document.body.classList.toggle("sessions-open", open);
  $("sessions-toggle").setAttribute("aria-expanded", String(open));
});

setCurrent(state.sessionId);
start().catch(fail);
