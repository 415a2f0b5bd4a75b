// clustermail console: vanilla JavaScript, no build step. Talks to /api/v1 with the
// session cookie; every change sends the session's X-CSRF-Token. One EventSource
// (/api/v1/events/stream) keeps the cluster picture, the event log and the charts live.
"use strict";

const API = "/api/v1";
// moveTo: each card's chosen move target, kept across the redraws every status brings.
const state = { me: null, csrf: null, status: null, owners: {}, samples: [], source: null,
  moveTo: {} };
const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key === "disabled") node.disabled = true;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// ------------------------------------------------------------------ API

async function api(method, path, body) {
  const headers = { "X-Clustermail-Console": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(API + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (!response.ok) {
    if (response.status === 401 && path !== "/session") showLogin();
    const message = data && data.error ? data.error.message : response.statusText;
    throw new Error(message);
  }
  return data;
}

function notice(text, bad = false) {
  const n = $("#notice");
  n.textContent = text;
  n.className = bad ? "notice bad" : "notice";
}

async function act(description, method, path, body) {
  if (!(await confirmAction(description))) return null;
  try {
    const answer = await api(method, path, body);
    notice(answer && answer.done ? answer.done : description + ": done");
    return answer;
  } catch (err) {
    notice(description + ": " + err.message, true);
    return null;
  }
}

function confirmAction(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text + "?";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

// ------------------------------------------------------------------ login

function showLogin() {
  if (state.source) { state.source.close(); state.source = null; }
  state.me = null;
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-name").focus();
}

async function login(event) {
  event.preventDefault();
  $("#login-error").textContent = "";
  try {
    const me = await api("POST", "/session", {
      name: $("#login-name").value, password: $("#login-password").value });
    $("#login-password").value = "";
    start(me);
  } catch (err) {
    $("#login-error").textContent = err.message;
  }
}

async function logout() {
  try { await api("DELETE", "/session"); } catch (e) { /* gone already */ }
  state.csrf = null;
  showLogin();
}

function isOperator() { return state.me && state.me.role === "operator"; }

function start(me) {
  state.me = me;
  state.csrf = me.csrf_token;
  $("#who").textContent = `${me.name} (${me.role})`;
  $("#login").hidden = true;
  $("#app").hidden = false;
  document.body.classList.toggle("viewer", !isOperator());
  for (const node of document.querySelectorAll(".operator-only button, button.operator-only")) {
    node.disabled = !isOperator();
  }
  connect();
  loadEvents();
}

// ------------------------------------------------------------------ live stream

function connect() {
  if (state.source) state.source.close();
  const source = new EventSource(API + "/events/stream");
  state.source = source;
  source.addEventListener("open", () => $("#live").classList.add("on"));
  source.addEventListener("error", async () => {
    $("#live").classList.remove("on");
    // EventSource reconnects by itself (the admin service may be failing over);
    // a 401 means the session is over.
    try { await api("GET", "/session"); } catch (e) { /* showLogin() ran if needed */ }
  });
  source.addEventListener("status", (e) => renderStatus(JSON.parse(e.data)));
  source.addEventListener("log", (e) => addEvent(JSON.parse(e.data), true));
  source.addEventListener("metrics", (e) => addSample(JSON.parse(e.data)));
}

// ------------------------------------------------------------------ the cluster picture

function dependencyTree(resources) {
  const byName = Object.fromEntries(resources.map((r) => [r.name, r]));
  const needed = new Set(resources.flatMap((r) => r.depends_on));
  const roots = resources.filter((r) => !needed.has(r.name));
  const shown = new Set();
  const item = (res) => {
    const again = shown.has(res.name);
    shown.add(res.name);
    const label = el("span", {}, `${res.name} `, el("span", { class: `badge ${res.state}`,
      text: res.admin_offline ? `${res.state} (held)` : res.state }), ` ${res.type}`);
    const children = again ? [] : res.depends_on.map((d) => byName[d]).filter(Boolean);
    return el("li", { class: again ? "again" : null, "data-resource": res.name }, label,
      children.length ? el("ul", { class: "tree" }, children.map(item)) : null);
  };
  return el("ul", { class: "tree" }, roots.map(item));
}

function vsCard(vs, nodes, detail) {
  const op = !isOperator();
  const moved = state.owners[vs.name] !== undefined && vs.owner && state.owners[vs.name] !== vs.owner;
  const card = el("div", {
    class: `vs ${vs.kind === "cluster" ? "cluster-group" : ""} ${moved ? "arrived" : ""}`,
    id: `vs-${vs.name}`, "data-state": vs.state, "data-owner": vs.owner || "",
  });
  card.append(el("h3", {}, vs.name, el("span", { class: `badge ${vs.state}`, text: vs.state }),
    el("span", { class: "muted", text: vs.address || "" })));
  card.append(el("div", { class: "reason", text: vs.reason }));
  if (detail) card.append(dependencyTree(detail.resource_list));
  const target = el("select", { class: "move-target", "aria-label": `move ${vs.name} to`,
    disabled: op },
  el("option", { value: "", text: "best node" }),
  nodes.filter((n) => n.name !== vs.owner).map((n) => el("option", { value: n.name, text: n.name })));
  if ([...target.options].some((o) => o.value === state.moveTo[vs.name])) {
    target.value = state.moveTo[vs.name];
  }
  target.addEventListener("change", () => { state.moveTo[vs.name] = target.value; });
  const button = (label, action, handler) => {
    const b = el("button", { class: "small", "data-action": action, disabled: op, text: label });
    b.addEventListener("click", handler);
    return b;
  };
  const path = `/virtual-servers/${encodeURIComponent(vs.name)}`;
  const actions = el("div", { class: "actions" },
    target,
    button("Move", "move", () => act(`Move ${vs.name} to ${target.value || "the best other node"}`,
      "POST", `${path}/move`, target.value ? { to: target.value } : {})),
    button("Online", "online", () => act(`Bring ${vs.name} online`, "POST", `${path}/online`)),
    button("Offline", "offline", () => act(`Take ${vs.name} offline`, "POST", `${path}/offline`)),
    button("Clear failures", "clear-failures", () => act(`Clear the failover history of ${vs.name}`,
      "POST", `${path}/clear-failures`)));
  const explainButton = el("button", { class: "small", "data-action": "explain", text: "Explain" });
  explainButton.addEventListener("click", () => explain(vs.name));
  actions.append(explainButton);
  for (const res of (detail ? detail.resource_list : [])) {
    if (res.type !== "imap4" && res.type !== "pop3") continue;
    const name = res.type === "imap4" ? "IMAP4" : "POP3";
    const enable = res.admin_offline;
    actions.append(button(`${enable ? "Enable" : "Disable"} ${name}`, `${enable ? "enable" : "disable"}-${res.type}`,
      () => act(`${enable ? "Enable" : "Disable"} ${name} on ${vs.name}`, "POST",
        `${path}/resources/${encodeURIComponent(res.name)}/${enable ? "online" : "offline"}`)));
  }
  card.append(actions);
  return card;
}

async function renderStatus(status) {
  state.status = status;
  $("#cluster-name").textContent = status.cluster;
  const mailServers = status.virtual_servers.filter((v) => v.kind !== "cluster").map((v) => v.name);
  for (const select of document.querySelectorAll(".vs-select")) {
    const shown = [...select.options].map((o) => o.value);
    if (shown.join() !== mailServers.join()) {  // keep the choice unless the list changed
      select.replaceChildren(...mailServers.map((name) => el("option", { value: name, text: name })));
    }
  }
  const details = {};
  await Promise.all(status.virtual_servers.map(async (vs) => {
    try { details[vs.name] = await api("GET", `/virtual-servers/${encodeURIComponent(vs.name)}`); }
    catch (e) { details[vs.name] = null; }
  }));
  if (state.status !== status) return; // a newer status arrived meanwhile
  const op = !isOperator();
  const nodes = $("#nodes");
  nodes.replaceChildren(...status.nodes.map((node) => {
    const box = el("div", { class: `node ${node.state}`, id: `node-${node.name}`, "data-state": node.state });
    const pause = el("button", { class: "small", "data-action": node.state === "paused" ? "resume" : "pause",
      disabled: op || node.state === "down", text: node.state === "paused" ? "Resume" : "Pause" });
    pause.addEventListener("click", () => {
      const verb = node.state === "paused" ? "resume" : "pause";
      act(`${verb === "pause" ? "Pause" : "Resume"} ${node.name}`, "POST",
        `/nodes/${encodeURIComponent(node.name)}/${verb}`);
    });
    box.append(el("div", { class: "row" },
      el("h2", {}, node.name, " ", el("span", { class: `badge ${node.state}`, text: node.state }),
        node.leader ? el("span", { class: "muted", title: "leader", text: " ★ leader" }) : null),
      pause));
    if (node.metrics_url) {
      box.append(el("div", { class: "meta" }, el("a", { href: node.metrics_url, text: "metrics" })));
    }
    for (const vs of status.virtual_servers.filter((v) => v.owner === node.name)) {
      box.append(vsCard(vs, status.nodes, details[vs.name]));
    }
    return box;
  }));
  $("#unplaced").replaceChildren(...status.virtual_servers.filter((v) => !v.owner)
    .map((vs) => vsCard(vs, status.nodes, details[vs.name])));
  state.owners = Object.fromEntries(status.virtual_servers.map((v) => [v.name, v.owner]));
}

async function explain(name) {
  try {
    const answer = await api("GET", `/virtual-servers/${encodeURIComponent(name)}/explain`);
    $("#explain-title").textContent = `explain ${name}`;
    $("#explain-text").textContent = answer.explanation;
    $("#explain").hidden = false;
  } catch (err) {
    notice(`explain ${name}: ${err.message}`, true);
  }
}

// ------------------------------------------------------------------ events

function time(t) { return new Date(t * 1000).toLocaleTimeString(); }

function addEvent(entry, live) {
  const row = el("tr", {}, el("td", { text: time(entry.time) }), el("td", { text: entry.node }),
    el("td", { text: entry.vs }), el("td", { text: entry.event }), el("td", { text: entry.message }));
  const body = $("#events");
  if (live) body.prepend(row); else body.append(row);
  while (body.children.length > 500) body.lastChild.remove();
}

async function loadEvents() {
  try {
    const entries = await api("GET", "/events?limit=200");
    $("#events").replaceChildren();
    for (const entry of entries.reverse()) addEvent(entry, false);
  } catch (err) { notice(err.message, true); }
  try {
    const history = await api("GET", "/metrics/history");
    state.samples = history.samples;
    drawCharts();
  } catch (err) { /* charts stay empty */ }
}

// ------------------------------------------------------------------ charts

function addSample(sample) {
  state.samples.push(sample);
  if (state.samples.length > 300) state.samples.shift();
  for (const move of sample.failovers || []) {
    $("#failovers").prepend(el("li", { text:
      `${time(sample.time)}: ${move.vs} moved from ${move.from} to ${move.to} (${move.seconds} s not online)` }));
  }
  if (!$("#tab-performance").hidden) drawCharts();
}

function lineChart(canvas, values, color) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 24;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#d9dde4";
  ctx.strokeRect(pad, 4, w - pad - 4, h - pad);
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  const max = Math.max(1, ...finite);
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px system-ui";
  ctx.fillText(max.toFixed(max < 10 ? 1 : 0), 2, 12);
  ctx.fillText("0", 2, h - pad);
  if (values.length < 2) return;
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = pad + (i / (values.length - 1)) * (w - pad - 6);
    const y = 4 + (h - pad - 4) * (1 - (v || 0) / max);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

const COLORS = ["#1f5fbf", "#1a7f37", "#b35900", "#7a5af8", "#b42318", "#0e7490", "#a21caf"];

function ownersChart(canvas) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const samples = state.samples;
  if (!samples.length) return;
  const names = Object.keys(samples[samples.length - 1].owners || {}).sort();
  const nodes = state.status ? state.status.nodes.map((n) => n.name) : [];
  const row = Math.max(12, (h - 20) / Math.max(1, names.length));
  ctx.font = "11px system-ui";
  names.forEach((name, r) => {
    ctx.fillStyle = "#1d2330";
    ctx.fillText(name, 2, 14 + r * row);
    samples.forEach((s, i) => {
      const owner = s.owners[name];
      const x = 70 + (i / samples.length) * (w - 80);
      ctx.fillStyle = owner && s.states[name] === "online"
        ? COLORS[Math.max(0, nodes.indexOf(owner)) % COLORS.length] : "#e5e7eb";
      ctx.fillRect(x, 4 + r * row, Math.ceil((w - 80) / samples.length) + 1, row - 4);
    });
  });
  nodes.forEach((n, i) => {
    ctx.fillStyle = COLORS[i % COLORS.length];
    ctx.fillText(n, 70 + i * 70, h - 4);
  });
}

function drawCharts() {
  const s = state.samples;
  lineChart($("#chart-messages"), s.map((x) => x.messages_per_s), "#1f5fbf");
  lineChart($("#chart-sessions"), s.map((x) => x.sessions), "#1a7f37");
  lineChart($("#chart-latency"), s.map((x) => x.latency_ms), "#b35900");
  lineChart($("#chart-queue"), s.map((x) => x.queue_length), "#7a5af8");
  ownersChart($("#chart-owners"));
}

// ------------------------------------------------------------------ mail pages

function quotaText(q) {
  if (!q) return "database default";
  return [q.warning, q.prohibit_send, q.prohibit_send_receive].map((v) => v === null ? "-" : v).join(" / ");
}

async function loadUsers() {
  const users = await api("GET", "/users");
  const op = !isOperator();
  $("#users").replaceChildren(...users.map((u) => {
    const path = `/users/${encodeURIComponent(u.address)}`;
    const toggle = el("button", { class: "small", disabled: op, text: u.enabled ? "Disable" : "Enable" });
    toggle.addEventListener("click", async () => {
      if (await act(`${u.enabled ? "Disable" : "Enable"} ${u.address}`, "POST",
        `${path}/${u.enabled ? "disable" : "enable"}`)) loadUsers();
    });
    const quota = el("button", { class: "small", disabled: op, text: "Quota…" });
    quota.addEventListener("click", async () => {
      const text = window.prompt(`Quota of ${u.address} in bytes: warning,send,send+receive ` +
        "(empty for no limit), or 'default'", u.quota ? quotaText(u.quota).replaceAll(" / ", ",").replaceAll("-", "") : "default");
      if (text === null) return;
      const body = text.trim() === "default" ? { default: true } : (() => {
        const [warning, send, all] = text.split(",").map((v) => v.trim() === "" ? null : Number(v));
        return { warning, prohibit_send: send ?? null, prohibit_send_receive: all ?? null };
      })();
      if (await act(`Set the quota of ${u.address}`, "PUT", `${path}/quota`, body)) loadUsers();
    });
    const remove = el("button", { class: "small", disabled: op, text: "Remove" });
    remove.addEventListener("click", async () => {
      if (await act(`Remove mailbox ${u.address} (its data stays in its database)`, "DELETE", path)) loadUsers();
    });
    return el("tr", {}, el("td", { text: u.address }), el("td", { text: u.display_name }),
      el("td", { text: `${u.server} ${u.storage_group}/${u.database}` }),
      el("td", { text: quotaText(u.quota) }), el("td", { text: u.enabled ? "yes" : "no" }),
      el("td", {}, toggle, " ", quota, " ", remove));
  }));
}

async function loadAliases() {
  const op = !isOperator();
  const aliases = await api("GET", "/aliases");
  $("#aliases").replaceChildren(...aliases.map((a) => {
    const remove = el("button", { class: "small", disabled: op, text: "Remove" });
    remove.addEventListener("click", async () => {
      if (await act(`Remove alias ${a.alias}`, "DELETE", `/aliases/${encodeURIComponent(a.alias)}`)) loadAliases();
    });
    return el("tr", {}, el("td", { text: a.alias }), el("td", { text: a.mailbox }), el("td", {}, remove));
  }));
  const domains = await api("GET", "/domains");
  $("#domains").replaceChildren(...domains.map((d) => {
    const remove = el("button", { class: "small", disabled: op || d.mailboxes > 0, text: "Remove" });
    remove.addEventListener("click", async () => {
      if (await act(`Remove domain ${d.domain}`, "DELETE", `/domains/${encodeURIComponent(d.domain)}`)) loadAliases();
    });
    return el("tr", {}, el("td", { text: d.domain }), el("td", { text: String(d.mailboxes) }),
      el("td", { text: d.catch_all || "-" }), el("td", {}, remove));
  }));
}

async function loadQueue() {
  const vs = $("#queue-form").vs.value;
  if (!vs) return;
  const op = !isOperator();
  const rows = await api("GET", `/virtual-servers/${encodeURIComponent(vs)}/queue`);
  $("#queue").replaceChildren(...rows.map((m) => {
    const remove = el("button", { class: "small", disabled: op, text: "Delete" });
    remove.addEventListener("click", async () => {
      if (await act(`Delete ${m.queue_id} from the queue of ${vs} (no bounce is sent)`, "POST",
        `/virtual-servers/${encodeURIComponent(vs)}/queue/delete`, { queue_ids: [m.queue_id] })) loadQueue();
    });
    return el("tr", {}, el("td", { text: m.queue_id }), el("td", { text: String(m.age) }),
      el("td", { text: m.sender }),
      el("td", { text: m.recipients.map((r) => `${r.address} (${r.attempts} tries${r.last_error ? ": " + r.last_error : ""})`).join(", ") }),
      el("td", {}, remove));
  }));
}

async function track(event) {
  event.preventDefault();
  const form = new FormData($("#track-form"));
  const query = new URLSearchParams([...form.entries()].filter(([, v]) => v !== ""));
  try {
    const rows = await api("GET", `/tracking?${query}`);
    $("#tracking").replaceChildren(...rows.map((e) => el("tr", {},
      el("td", { text: time(e.time) }), el("td", { text: e.vs }), el("td", { text: e.event }),
      el("td", { text: e.sender || "<>" }), el("td", { text: (e.recipients || []).join(", ") }),
      el("td", { text: e.result || "" }))));
  } catch (err) { notice(err.message, true); }
}

function formBody(form) {
  return Object.fromEntries([...new FormData(form).entries()].filter(([, v]) => v !== ""));
}

// ------------------------------------------------------------------ wiring

function showTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${name}`;
  const loaders = { users: loadUsers, aliases: loadAliases, queue: loadQueue, performance: drawCharts };
  if (loaders[name]) Promise.resolve(loaders[name]()).catch((err) => notice(err.message, true));
}

document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#explain-close").addEventListener("click", () => { $("#explain").hidden = true; });
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#user-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = formBody(e.target);
    if (await act(`Add mailbox ${body.address} on ${body.server}`, "POST", "/users", body)) { e.target.reset(); loadUsers(); }
  });
  $("#alias-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = formBody(e.target);
    if (await act(`Add alias ${body.alias} → ${body.mailbox}`, "POST", "/aliases", body)) { e.target.reset(); loadAliases(); }
  });
  $("#domain-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = formBody(e.target);
    if (await act(`Add domain ${body.domain}`, "POST", "/domains", body)) { e.target.reset(); loadAliases(); }
  });
  $("#queue-form").addEventListener("submit", (e) => { e.preventDefault(); loadQueue().catch((err) => notice(err.message, true)); });
  $("#queue-retry").addEventListener("click", async () => {
    const vs = $("#queue-form").vs.value;
    if (await act(`Retry every queued message of ${vs} now`, "POST", `/virtual-servers/${encodeURIComponent(vs)}/queue/retry`, {})) loadQueue();
  });
  $("#track-form").addEventListener("submit", track);
  try {
    start(await api("GET", "/session"));
  } catch (err) {
    showLogin();
  }
});
