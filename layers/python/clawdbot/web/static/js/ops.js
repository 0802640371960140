// The operations page: polls v1/ops/summary every few seconds and turns successive readings into charts.
// Counters and histograms arrive cumulative; rates are differences between readings, latency percentiles are
// estimated from the histogram buckets gained over the last minute (as Prometheus' histogram_quantile does).
import { ApiError, apiJson, describe, formatNumber, setupKeyPanel, showError } from "./common.js";
import { LineChart } from "./chart.js";

const params = new URLSearchParams(location.search);
const REFRESH_SECONDS = Math.max(1, Number(params.get("refresh")) || 3);
const WINDOW_SECONDS = 60;

const $ = (id) => document.getElementById(id);
const readings = []; // [{time, metrics}] over the last WINDOW_SECONDS (and one older), for rates and windows
let timer = null;

function chart(name, series, format, options = {}) {
  const card = document.querySelector(`[data-metric="${name}"]`);
  return { card, now: card.querySelector(".now"), chart: new LineChart(card.querySelector("canvas"), {
    series, format, ...options,
  }) };
}

const charts = {
  cpu: chart("cpu", ["cpu"], (v) => `${v.toFixed(0)}%`),
  memory: chart("memory", ["memory"], (v) => `${v.toFixed(0)}`),
  gpu: chart("gpu", ["gpu"], (v) => `${v.toFixed(0)}%`, { max: 100 }),
  requests: chart("requests", ["requests", "errors"], (v) => v.toFixed(1)),
  latency: chart("latency", ["p50", "p95"], (v) => `${v.toFixed(0)}`),
  throughput: chart("throughput", ["tokens"], (v) => v.toFixed(0)),
  concurrency: chart("concurrency", ["in flight", "queued"], (v) => v.toFixed(0)),
  modelTurns: chart("model-turns", ["generating", "waiting"], (v) => v.toFixed(0)),
  turns: chart("turns", ["turns", "completed"], (v) => v.toFixed(0)),
  satisfaction: chart("satisfaction", ["mean"], (v) => v.toFixed(1), { min: 1, max: 5 }),
};

// ------------------------------------------------------------------------------------------- metric math
function seriesOf(metrics, name) {
  return (metrics && metrics[name] && metrics[name].series) || [];
}

function total(metrics, name, keep = () => true) {
  return seriesOf(metrics, name).filter((s) => keep(s.labels)).reduce((sum, s) => sum + (s.value || 0), 0);
}

function gauge(metrics, name) {
  const values = seriesOf(metrics, name).map((s) => s.value);
  return values.length ? values.reduce((a, b) => a + b, 0) : null;
}

/** All label sets of a histogram merged: count, sum and cumulative counts per upper bound. */
function histogram(metrics, name) {
  const merged = { count: 0, sum: 0, buckets: new Map() };
  for (const s of seriesOf(metrics, name)) {
    merged.count += s.count || 0;
    merged.sum += s.sum || 0;
    for (const [bound, cumulative] of s.buckets || []) {
      const key = bound === null ? Infinity : bound;
      merged.buckets.set(key, (merged.buckets.get(key) || 0) + cumulative);
    }
  }
  return merged;
}

function minus(now, before) {
  const out = { count: now.count - before.count, sum: now.sum - before.sum, buckets: new Map() };
  for (const [bound, value] of now.buckets) out.buckets.set(bound, value - (before.buckets.get(bound) || 0));
  return out;
}

/** The q-quantile of a cumulative-bucket histogram, linear within the bucket it falls in. */
function quantile(hist, q) {
  if (!hist.count) return null;
  const bounds = [...hist.buckets.keys()].sort((a, b) => a - b);
  const rank = q * hist.count;
  let lower = 0;
  let below = 0;
  for (const bound of bounds) {
    const cumulative = hist.buckets.get(bound);
    if (cumulative >= rank) {
      if (bound === Infinity) return lower;
      const inBucket = cumulative - below;
      return inBucket > 0 ? lower + (bound - lower) * ((rank - below) / inBucket) : bound;
    }
    lower = bound;
    below = cumulative;
  }
  return lower;
}

const EMPTY = { count: 0, sum: 0, buckets: new Map() };

// ------------------------------------------------------------------------------------------- rendering
function render(summary) {
  const metrics = summary.metrics;
  const time = summary.time;
  $("model").textContent = summary.model;
  $("refreshed").textContent = `updated ${new Date(time * 1000).toLocaleTimeString()}`;
  $("metrics-note").hidden = Boolean(metrics);
  $("metrics-note").textContent = summary.metrics_unavailable || "";
  for (const section of document.querySelectorAll(".level.metrics")) section.hidden = !metrics;
  if (metrics) renderMetrics(metrics, time);
  renderGuard(summary.latency_guard, metrics);
  renderAb(summary.ab, summary.ab_unavailable);
}

function renderMetrics(metrics, time) {
  const previous = readings[readings.length - 1];
  readings.push({ time, metrics });
  while (readings.length > 2 && time - readings[1].time >= WINDOW_SECONDS) readings.shift();
  const windowStart = readings[0];
  const elapsed = previous ? time - previous.time : null;
  const rate = (value, before) => (elapsed && elapsed > 0 ? Math.max(0, value - before) / elapsed : null);

  const cpu = gauge(metrics, "ProcessCpuTime");
  const cpuPercent = previous ? rate(cpu, gauge(previous.metrics, "ProcessCpuTime")) * 100 : null;
  set(charts.cpu, time, [cpuPercent], cpuPercent === null ? "–" : `${cpuPercent.toFixed(0)}%`);
  const memory = gauge(metrics, "ProcessMemory");
  const mib = memory === null ? null : memory / 2 ** 20;
  set(charts.memory, time, [mib], mib === null ? "–" : `${mib.toFixed(0)} MiB`);
  const load = gauge(metrics, "ModelLoadTime");
  $("model-load").textContent = load === null ? "–" : `${(load / 1000).toFixed(1)} s`;
  const gpu = gauge(metrics, "GpuUtilization");
  charts.gpu.card.hidden = gpu === null;
  if (gpu !== null) set(charts.gpu, time, [gpu], `${gpu.toFixed(0)}%`);

  const requests = total(metrics, "Requests");
  const errors = total(metrics, "Errors");
  const requestRate = previous ? rate(requests, total(previous.metrics, "Requests")) : null;
  const errorRate = previous ? rate(errors, total(previous.metrics, "Errors")) : null;
  set(charts.requests, time, [requestRate, errorRate],
    `${formatNumber(requests)} · ${formatNumber(errors)} errors`);

  // Percentiles of the turns finished while this page watched (up to the last minute); before any, the
  // headline falls back to every turn since the server started and says so.
  const windowed = (name) => (previous ? minus(histogram(metrics, name), histogram(windowStart.metrics, name)) : EMPTY);
  const turnLatency = windowed("TurnLatency");
  const p50 = quantile(turnLatency, 0.5);
  const p95 = quantile(turnLatency, 0.95);
  const scoped = p95 !== null;
  const headline = scoped ? p95 : quantile(histogram(metrics, "TurnLatency"), 0.95);
  set(charts.latency, time, [p50, p95], headline === null ? "no turns yet" : `p95 ${formatNumber(headline)} ms`);
  $("latency-scope").textContent = scoped || headline === null ? "last minute" : "since start";
  const firstToken = windowed("TimeToFirstToken");
  const ttft = quantile(firstToken.count ? firstToken : histogram(metrics, "TimeToFirstToken"), 0.5);
  $("ttft").textContent = ttft === null ? "–" : `${formatNumber(ttft)} ms`;

  const tokens = total(metrics, "Tokens");
  const tokenRate = previous ? rate(tokens, total(previous.metrics, "Tokens")) : null;
  set(charts.throughput, time, [tokenRate], `${formatNumber(tokens)} total`);
  const inFlight = gauge(metrics, "RequestsInFlight");
  const queued = gauge(metrics, "RequestsQueued");
  set(charts.concurrency, time, [inFlight, queued],
    inFlight === null ? "–" : `${formatNumber(inFlight)} · ${formatNumber(queued)} queued`);
  // Chat turns admitted to the in-process model and waiting for it: only a server that runs the model has them.
  const generating = gauge(metrics, "TurnsInFlight");
  const waiting = gauge(metrics, "TurnsQueued");
  charts.modelTurns.card.hidden = generating === null;
  if (generating !== null) {
    set(charts.modelTurns, time, [generating, waiting],
      `${formatNumber(generating)} · ${formatNumber(waiting)} waiting`);
  }

  const turns = total(metrics, "Turns");
  const completed = total(metrics, "ConversationsCompleted");
  set(charts.turns, time, [turns, completed], formatNumber(turns));
  $("completed").textContent = formatNumber(completed);
  const scores = histogram(metrics, "SatisfactionScore");
  const mean = scores.count ? scores.sum / scores.count : null;
  set(charts.satisfaction, time, [mean], mean === null ? "–" : mean.toFixed(2));
  $("ratings").textContent = `${formatNumber(scores.count)} rating${scores.count === 1 ? "" : "s"}`;
}

function set(view, time, values, text) {
  view.chart.add(time, values);
  view.now.textContent = text;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
}

function renderGuard(guard, metrics) {
  const body = document.querySelector("#guard-table tbody");
  body.replaceChildren();
  if (!guard) {
    $("guard-rule").textContent = "The latency guard is off (metrics are off).";
    return;
  }
  $("guard-rule").textContent = `${guard.turns} consecutive turns slower than ${formatNumber(guard.threshold_ms)} ms `
    + "emit LatencyBreach (the alarm that scales out); any faster turn resets the streak.";
  for (const [variant, streak] of Object.entries(guard.streaks)) {
    const row = document.createElement("tr");
    row.dataset.variant = variant;
    cell(row, variant);
    const breaching = streak !== null && streak >= guard.turns;
    cell(row, streak === null ? "unavailable" : `${streak} / ${guard.turns}`, breaching ? "alert" : "");
    cell(row, formatNumber(total(metrics, "LatencyBreach", (labels) => labels.variant === variant)));
    body.append(row);
  }
}

function number(value, digits = 1) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}

function renderAb(report, reason) {
  const body = document.querySelector("#ab-table tbody");
  body.replaceChildren();
  if (!report) {
    $("ab-note").textContent = reason || "";
    return;
  }
  $("ab-note").textContent = `${report.test}. Completed = at least one reply and ended by the user or idle `
    + `> ${report.idle_seconds}s. Refreshed at most every 10 s.`;
  for (const r of report.variants) {
    const row = document.createElement("tr");
    row.dataset.variant = r.variant;
    let satisfaction = "-";
    if (r.satisfaction_mean !== null) {
      satisfaction = r.satisfaction_mean.toFixed(2);
      if (r.satisfaction_ci_low !== null) {
        satisfaction += ` [${r.satisfaction_ci_low.toFixed(2)}, ${r.satisfaction_ci_high.toFixed(2)}]`;
      }
    }
    let versus;
    if (r.variant === report.control) versus = "(control)";
    else if (r.p_value === null) versus = "too few ratings";
    else versus = `${r.difference >= 0 ? "+" : ""}${r.difference.toFixed(2)}, p=${r.p_value.toPrecision(3)} `
      + (r.significant ? "significant" : "n.s.");
    for (const value of [r.variant, formatNumber(r.turns), formatNumber(r.conversations), formatNumber(r.completed),
      number(r.p50_latency_ms), number(r.p95_latency_ms), formatNumber(r.tokens),
      formatNumber(r.rated_conversations), satisfaction, versus]) {
      cell(row, value);
    }
    body.append(row);
  }
}

// ------------------------------------------------------------------------------------------- polling
async function refresh() {
  if (document.hidden && readings.length) return; // a background tab spends none of the key's request budget
  try {
    render(await apiJson("v1/ops/summary"));
    showError("");
  } catch (error) {
    showError(describe(error));
    if (error instanceof ApiError && error.status === 401) {
      keyPanel.open(true);
      stop(); // no point hammering the server with a key it refuses; saving a key restarts polling
      return;
    }
  }
}

function stop() {
  clearInterval(timer);
  timer = null;
}

function startPolling() {
  stop();
  readings.length = 0;
  refresh();
  timer = setInterval(refresh, REFRESH_SECONDS * 1000);
}

const keyPanel = setupKeyPanel(startPolling);
startPolling();
