// The overview's charts of the last hour (GET /api/v1/history), drawn as inline SVG.
// Loaded after core.js, whose helpers it uses.
"use strict";

// ---------------------------------------------------------------- charts

const SVG_NS = "http://www.w3.org/2000/svg";
// The drawing area of each chart, in the SVG's own units (it scales with its box).
const CHART = { width: 420, height: 150, left: 46, right: 12, top: 10, bottom: 22 };
const MINUTES = 60;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/** A round number at or above `n` for the top of an axis (1, 2, 5 × 10^k). */
function niceMax(n) {
  if (!(n > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(n));
  return [1, 2, 2.5, 5, 10].map((f) => f * power).find((v) => v >= n);
}

/**
 * The frame every chart shares: the last hour left to right (one slot per minute, the
 * current minute last), value labels at 0 and the top, time labels under the axis.
 */
function chartFrame(label, top, format) {
  const { width, height, left, right, top: pad0, bottom } = CHART;
  const plotBottom = height - bottom;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, preserveAspectRatio: "xMidYMid meet" },
    svg("title", { text: label }),
    svg("line", { class: "grid", x1: left, x2: width - right, y1: pad0, y2: pad0 }),
    svg("line", { class: "axis", x1: left, x2: width - right, y1: plotBottom, y2: plotBottom }),
    svg("text", { class: "tick", x: left - 4, y: pad0 + 4, "text-anchor": "end", text: format(top) }),
    svg("text", { class: "tick", x: left - 4, y: plotBottom, "text-anchor": "end", text: format(0) }));
  return root;
}

/** Where minute `time` goes: its slot 0..59 in the hour ending at `now`, or null. */
function slotOf(time, now) {
  const end = Math.floor(now / 60000) * 60000;
  const slot = MINUTES - 1 - Math.round((end - Date.parse(time)) / 60000);
  return slot >= 0 && slot < MINUTES ? slot : null;
}

function timeAxis(root, now) {
  const { width, height, left, right } = CHART;
  const end = Math.floor(now / 60000) * 60000;
  const plot = width - left - right;
  for (const [slot, anchor] of [[0, "start"], [30, "middle"], [MINUTES - 1, "end"]]) {
    const x = left + plot * (slot + (anchor === "start" ? 0 : anchor === "end" ? 1 : 0.5)) / MINUTES;
    root.append(svg("text", { class: "tick", x, y: height - 6, "text-anchor": anchor, text: hhmm(end - (MINUTES - 1 - slot) * 60000) }));
  }
}

function emptyNote(root) {
  const { width, height, left, right, top, bottom } = CHART;
  root.append(svg("text", { class: "empty", x: left + (width - left - right) / 2, y: top + (height - top - bottom) / 2, "text-anchor": "middle", text: "nothing in the last hour yet" }));
}

function setChart(id, root, value) {
  const figure = $(`#${id}`);
  figure.querySelector("svg")?.remove();
  figure.append(root);
  figure.querySelector(".chart-value").textContent = value;
}

function renderCharts() {
  const history = state.history;
  if (!history) return;
  const minutes = history.minutes
    .map((m) => ({ ...m, slot: slotOf(m.time, history.now) }))
    .filter((m) => m.slot !== null);
  renderRequestsChart(minutes, history.now);
  renderTokensChart(minutes, history.now);
  renderMemoryChart(minutes, history.now);
}

function renderRequestsChart(minutes, now) {
  const total = minutes.reduce((n, m) => n + m.requests, 0);
  const errors = minutes.reduce((n, m) => n + m.errors, 0);
  const top = niceMax(Math.max(...minutes.map((m) => m.requests), 1));
  const label = `Gateway requests per minute over the last hour: ${total} in all, ${errors} of them errors`;
  const root = chartFrame(label, top, String);
  const { width, height, left, right, top: plotTop, bottom } = CHART;
  const slotWidth = (width - left - right) / MINUTES;
  const plotHeight = height - plotTop - bottom;
  const y = (n) => plotHeight * n / top;
  for (const m of minutes.filter((m) => m.requests > 0)) {
    const x = left + m.slot * slotWidth + 0.5;
    const w = Math.max(1, slotWidth - 1);
    const good = m.requests - m.errors;
    const base = height - bottom;
    root.append(svg("g", { class: "minute", "data-time": m.time, "data-requests": m.requests, "data-errors": m.errors },
      svg("title", { text: `${hhmm(Date.parse(m.time))}: ${m.requests} requests${m.errors ? `, ${m.errors} errors` : ""}` }),
      good > 0 ? svg("rect", { class: "bar-ok", x, width: w, y: base - y(good), height: y(good) }) : null,
      m.errors > 0 ? svg("rect", { class: "bar-error", x, width: w, y: base - y(m.requests), height: y(m.errors) }) : null));
  }
  timeAxis(root, now);
  if (total === 0) emptyNote(root);
  const current = minutes.find((m) => m.slot === MINUTES - 1)?.requests || 0;
  setChart("chart-requests", root, `${current} this minute · ${total} in the hour${errors ? ` · ${errors} errors` : ""}`);
}

/** Lines through consecutive minutes and a dot on each, for one series. */
function series(root, points, cls, y) {
  const { width, left, right } = CHART;
  const slotWidth = (width - left - right) / MINUTES;
  const x = (slot) => left + (slot + 0.5) * slotWidth;
  const group = svg("g", { class: `series ${cls}` });
  let run = [];
  const flush = () => {
    if (run.length > 1) group.append(svg("polyline", { points: run.map((p) => `${x(p.slot).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ") }));
    run = [];
  };
  for (const p of points) {
    if (run.length && p.slot !== run[run.length - 1].slot + 1) flush();
    run.push(p);
    group.append(svg("circle", { cx: x(p.slot).toFixed(1), cy: y(p.value).toFixed(1), r: 2.2, "data-value": p.value }));
  }
  flush();
  root.append(group);
}

function renderTokensChart(minutes, now) {
  const points = minutes.filter((m) => m.tokens_per_second !== null && m.tokens_per_second !== undefined)
    .map((m) => ({ slot: m.slot, value: m.tokens_per_second }));
  const top = niceMax(Math.max(...points.map((p) => p.value), 1));
  const last = points.length ? points[points.length - 1].value : null;
  const label = `Completion tokens per second over the last hour${last === null ? ": none yet" : `, latest ${last}`}`;
  const root = chartFrame(label, top, (v) => String(Math.round(v * 10) / 10));
  const { height, top: plotTop, bottom } = CHART;
  const y = (v) => height - bottom - (height - plotTop - bottom) * v / top;
  series(root, points, "tokens", y);
  timeAxis(root, now);
  if (!points.length) emptyNote(root);
  setChart("chart-tokens", root, last === null ? "no tokens yet" : `latest ${last} tokens/s`);
}

function renderMemoryChart(minutes, now) {
  const gpus = [...new Set(minutes.flatMap((m) => Object.keys(m.gpu_claimed_mib || {})))].sort((a, b) => a - b);
  const lines = gpus.map((g, i) => ({ name: `GPU ${g}`, cls: `gpu${i % 4}`, points: minutes.map((m) => ({ slot: m.slot, value: m.gpu_claimed_mib?.[g] || 0 })) }));
  if (minutes.some((m) => m.host_claimed_mib)) {
    lines.push({ name: "host", cls: "host", points: minutes.map((m) => ({ slot: m.slot, value: m.host_claimed_mib || 0 })) });
  }
  // The top in round GiB (1, 2, 2.5, 5, 10…), at least 1 GiB.
  const top = 1024 * niceMax(Math.max(...lines.flatMap((l) => l.points.map((p) => p.value)), 1024) / 1024);
  const latest = lines.map((l) => `${l.name} ${mib(l.points[l.points.length - 1].value)}`);
  const label = `Memory claimed by services over the last hour${latest.length ? `; now ${latest.join(", ")}` : ": nothing yet"}`;
  const root = chartFrame(label, top, (v) => (v === 0 ? "0" : v % 1024 === 0 ? `${v / 1024} GiB` : mib(v)));
  const { height, top: plotTop, bottom } = CHART;
  const y = (v) => height - bottom - (height - plotTop - bottom) * v / top;
  for (const line of lines) series(root, line.points, line.cls, y);
  timeAxis(root, now);
  if (!lines.length) emptyNote(root);
  const figure = $("#chart-memory");
  setChart("chart-memory", root, "");
  figure.querySelector(".chart-value").replaceChildren(...lines.map((l) => el("span", { class: "key", "data-series": l.name },
    el("span", { class: `swatch ${l.cls}`, "aria-hidden": "true" }), `${l.name} ${mib(l.points[l.points.length - 1].value)}`)));
}
