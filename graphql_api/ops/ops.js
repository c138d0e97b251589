// The ops page: log in through `logIn`, check the user is platform staff, then follow
// `opsStatus` over graphql-transport-ws and draw it. No library, no build step.
"use strict";

const SESSION = { token: "penguinmails.ops.token", tenant: "penguinmails.ops.tenant" };
const TIERS = ["high", "normal", "low"];
const COLOURS = { high: "#b42318", normal: "#1570ef", low: "#6b7280", bounce: "#dc6803", complaint: "#b42318", sent: "#1570ef" };
const DEPTH_SAMPLES = 120; // one a second: the last two minutes

const LOG_IN = `mutation($email: String!, $password: String!) {
  logIn(email: $email, password: $password) { token tenant { id } errors { message } }
}`;
const STAFF_CHECK = "{ platformAlerts(first: 1) { kind } }";
const OPS_STATUS = `subscription {
  opsStatus {
    queue { queued scheduled running dead tiers { name ready inFlight } }
    minutes { at sent bounced complained }
    alerts { kind severity message at }
    pipelines { pipeline watermark lagSeconds lastError }
    at
  }
}`;

const $ = (id) => document.getElementById(id);
let socket = null;
let latest = null;
const depths = Object.fromEntries(TIERS.map((tier) => [tier, []]));

// --- GraphQL over HTTP and over graphql-transport-ws ----------------------------------------

async function graphql(query, variables, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  return response.json();
}

function subscribe(token, tenantId) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/graphql`, "graphql-transport-ws");
  const ws = socket;
  const send = (message) => ws.send(JSON.stringify(message));
  ws.onopen = () => send({ type: "connection_init", payload: { Authorization: `Bearer ${token}`, tenantId } });
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection_ack") {
      send({ id: "ops", type: "subscribe", payload: { query: OPS_STATUS } });
      showConnection("live", true);
    } else if (message.type === "next") {
      if (message.payload.errors) showMessage(message.payload.errors[0].message);
      else render(message.payload.data.opsStatus);
    } else if (message.type === "error") {
      showMessage(message.payload[0].message);
    } else if (message.type === "complete") {
      showConnection("ended", false);
      showMessage("The live view ended: log in again (are you still platform staff?).");
    } else if (message.type === "ping") {
      send({ type: "pong" });
    }
  };
  ws.onclose = (event) => {
    if (socket !== ws) return; // logged out
    showConnection(`disconnected (${event.code})`, false);
    if (event.code === 4401 || event.code === 4403) return logOut("Your session ended: log in again.");
    setTimeout(() => socket === ws && subscribe(token, tenantId), 2000);
  };
}

// --- logging in and out ------------------------------------------------------------------------

async function logIn(event) {
  event.preventDefault();
  const form = event.target;
  showMessage(null);
  const body = await graphql(LOG_IN, { email: form.email.value, password: form.password.value });
  const answer = body.data && body.data.logIn;
  if (!answer || answer.errors.length) {
    return showMessage(answer ? answer.errors[0].message : "Log-in failed.");
  }
  form.password.value = "";
  await start(answer.token, answer.tenant && answer.tenant.id, form.email.value);
}

async function start(token, tenantId, email) {
  const check = await graphql(STAFF_CHECK, {}, token);
  if (check.errors) {
    sessionStorage.clear();
    $("log-in").hidden = false;
    const who = email ? `${email} is not` : "You are not";
    return showMessage(`${who} platform staff: this page is for platform staff only.`);
  }
  sessionStorage.setItem(SESSION.token, token);
  sessionStorage.setItem(SESSION.tenant, tenantId || "");
  $("log-in").hidden = true;
  $("dashboard").hidden = false;
  $("log-out").hidden = false;
  subscribe(token, tenantId);
}

function logOut(message) {
  const ws = socket;
  socket = null;
  if (ws) ws.close();
  sessionStorage.clear();
  $("dashboard").hidden = true;
  $("log-out").hidden = true;
  $("log-in").hidden = false;
  showConnection("not connected", false);
  showMessage(message || null);
}

function showMessage(text) {
  $("message").hidden = !text;
  $("message").textContent = text || "";
}

function showConnection(text, live) {
  $("connection").textContent = text;
  $("connection").classList.toggle("live", live);
}

// --- drawing -------------------------------------------------------------------------------------

function render(status) {
  latest = status;
  const queue = status.queue;
  for (const name of ["queued", "scheduled", "running", "dead"]) $(name).textContent = queue[name];
  $("tiers").replaceChildren(...queue.tiers.map((t) => row([t.name, t.ready, t.inFlight])));

  const minutes = status.minutes;
  const rate = (part, whole) => (whole ? (100 * part) / whole : 0);
  const sum = (key) => minutes.reduce((total, m) => total + m[key], 0);
  const sent = sum("sent");
  $("send-rate").textContent = minutes.length ? minutes[minutes.length - 1].sent : 0;
  $("hour-rates").textContent =
    `${rate(sum("bounced"), sent).toFixed(1)} % bounced, ${rate(sum("complained"), sent).toFixed(2)} % complaints`;
  chart($("send-chart"), [{ colour: COLOURS.sent, values: minutes.map((m) => m.sent) }], "");
  chart($("rate-chart"), [
    { colour: COLOURS.bounce, values: minutes.map((m) => rate(m.bounced, m.sent)) },
    { colour: COLOURS.complaint, values: minutes.map((m) => rate(m.complained, m.sent)) },
  ], " %");

  $("alerts").replaceChildren(
    ...(status.alerts.length
      ? status.alerts.map((a) => item(`${new Date(a.at).toLocaleString()} ${a.severity} ${a.kind}: ${a.message}`, a.severity))
      : [item("none open", "quiet")]),
  );
  $("pipelines").replaceChildren(
    ...(status.pipelines.length
      ? status.pipelines.map((p) =>
          row([p.pipeline, p.lagSeconds === null ? "never ran" : duration(p.lagSeconds), p.watermark, p.lastError || ""]))
      : [row(["no pipeline has run yet", "", "", ""])]),
  );
}

// The depth chart moves with time, not with pushes (which come only on change).
function sampleDepths() {
  if (!latest) return;
  for (const tier of latest.queue.tiers) {
    const samples = depths[tier.name];
    if (!samples) continue;
    samples.push(tier.ready);
    if (samples.length > DEPTH_SAMPLES) samples.shift();
  }
  chart($("depth-chart"), TIERS.map((tier) => ({ colour: COLOURS[tier], values: depths[tier] })), "", DEPTH_SAMPLES);
}

const SVG = "http://www.w3.org/2000/svg";
const PLOT = { left: 30, right: 315, top: 8, bottom: 110 };

// Lines of `series` over a zero-based scale, the newest value at the right; `slots` fixes the x
// axis (else the longest series).
function chart(svg, series, unit, slots) {
  const count = slots || Math.max(2, ...series.map((s) => s.values.length));
  const top = Math.max(1, ...series.flatMap((s) => s.values));
  const x = (i) => PLOT.left + ((PLOT.right - PLOT.left) * i) / Math.max(1, count - 1);
  const y = (v) => PLOT.bottom - ((PLOT.bottom - PLOT.top) * v) / top;
  const shapes = [
    shape("line", { class: "axis", x1: PLOT.left, y1: PLOT.bottom, x2: PLOT.right, y2: PLOT.bottom }),
    shape("line", { class: "axis", x1: PLOT.left, y1: PLOT.top, x2: PLOT.left, y2: PLOT.bottom }),
    label(`${round(top)}${unit}`, 2, PLOT.top + 6),
    label(`0${unit}`, 2, PLOT.bottom),
  ];
  for (const s of series) {
    const offset = count - s.values.length;
    const points = s.values.map((v, i) => `${x(offset + i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    shapes.push(shape("polyline", { points, fill: "none", stroke: s.colour, "stroke-width": 1.5 }));
  }
  svg.replaceChildren(...shapes);
}

function shape(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function label(text, x, y) {
  const element = shape("text", { x, y });
  element.textContent = text;
  return element;
}

function row(cells) {
  const tr = document.createElement("tr");
  tr.replaceChildren(...cells.map((value) => Object.assign(document.createElement("td"), { textContent: value })));
  return tr;
}

function item(text, className) {
  return Object.assign(document.createElement("li"), { textContent: text, className });
}

const round = (v) => (v >= 10 ? Math.round(v) : Math.round(v * 10) / 10);

function duration(seconds) {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

// --- start -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("log-in").addEventListener("submit", logIn);
  $("log-out").addEventListener("click", () => logOut());
  setInterval(sampleDepths, 1000);
  const token = sessionStorage.getItem(SESSION.token);
  if (token) start(token, sessionStorage.getItem(SESSION.tenant) || null);
  else $("log-in").hidden = false;
});
