/* edgeops fleet console: a hash-routed single page over the manager's JSON API.
 * It calls the same /api/v1 routes as the CLI (plus /api/v1/console aggregates). The API token
 * lives in sessionStorage only; all text is inserted with textContent (never innerHTML), and
 * the page's CSP forbids inline and foreign scripts.
 */
"use strict";
(function () {
  const TOKEN_KEY = "edgeops.console.token";
  const OPERATOR_ROLES = ["operator", "publisher", "admin"];
  const STATE_ORDER = ["healthy", "activated", "installing", "verifying", "downloading",
    "notified", "pending", "deferred", "failed", "timed-out", "rolled-back", "cancelled", "skipped"];
  const STATE_COLORS = {
    healthy: "#1f9d55", activated: "#58b983", installing: "#e0a526", verifying: "#e8b94f",
    downloading: "#d98b0b", notified: "#f0c674", pending: "#cfd6e0", deferred: "#b4bccb",
    failed: "#d64045", "timed-out": "#e57373", "rolled-back": "#a2262b", cancelled: "#a6afbd",
    skipped: "#dde2ea",
  };
  const view = document.getElementById("view");
  let me = null;
  let refreshTimer = null;
  const pageCursors = {};

  // -- tiny DOM helpers --------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const badge = (text, cls) => h("span", { class: "badge " + (cls || String(text)) }, text);
  const card = (title, ...body) => h("div", { class: "card" }, title ? h("h2", {}, title) : null, ...body);
  const kpi = (label, value, cls, testid) =>
    h("div", { class: "card kpi " + (cls || ""), "data-testid": testid }, h("div", { class: "value" }, value),
      h("div", { class: "label" }, label));
  const fmt = (v) => window.EdgeCharts.fmt(v);

  function ago(ts) {
    if (!ts) return "never";
    const s = Date.now() / 1000 - ts;
    if (s < 0) return "just now";
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  const when = (ts) => (ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–");
  const bytes = (n) => (n >= 1048576 ? (n / 1048576).toFixed(1) + " MB" : n >= 1024 ? (n / 1024).toFixed(1) + " kB" : n + " B");

  function flash(msg, ok) {
    const f = document.getElementById("flash");
    f.textContent = msg;
    f.className = "flash" + (ok ? " ok" : "");
    f.hidden = !msg;
  }

  // -- API ---------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.error ? body.error : "HTTP " + status);
      this.status = status;
      this.hint = body && body.hint;
    }
  }

  async function api(path, method) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const r = await fetch(path, { method: method || "GET", headers: token ? { Authorization: "Bearer " + token } : {} });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) throw new ApiError(r.status, body);
    return body;
  }

  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") u.append(k, v);
    const s = u.toString();
    return s ? "?" + s : "";
  }

  // -- routing -----------------------------------------------------------------------------
  function parseHash() {
    const raw = location.hash.replace(/^#/, "") || "/";
    const [path, query] = raw.split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    return { parts, params: Object.fromEntries(new URLSearchParams(query || "")) };
  }

  function go(parts, params) {
    location.hash = "#/" + parts.map(encodeURIComponent).join("/") + qs(params || {});
  }

  async function render() {
    clearInterval(refreshTimer);
    flash("");
    const { parts, params } = parseHash();
    const page = parts[0] || "overview";
    document.querySelectorAll("[data-nav]").forEach((a) =>
      a.classList.toggle("active", a.dataset.nav === (page === "login" ? "" : page)));
    if (!sessionStorage.getItem(TOKEN_KEY) || page === "login") return login();
    try {
      if (!me) me = await api("/api/v1/console/whoami");
      showWho();
      const pages = { overview, devices, deployments, bundles, drift };
      const fn = pages[page];
      if (!fn) { view.replaceChildren(h("p", { class: "empty" }, "No such page.")); return; }
      view.setAttribute("aria-busy", "true");
      await fn(parts.slice(1), params);
      view.removeAttribute("aria-busy");
      view.dataset.rendered = location.hash || "#/";  // lets tests wait for a finished render
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      view.removeAttribute("aria-busy");
      if (e.status === 401) { sessionStorage.removeItem(TOKEN_KEY); me = null; return login(e.message); }
      flash(e.message + (e.hint ? " (hint: " + e.hint + ")" : ""));
      if (!view.childElementCount) view.replaceChildren(h("p", { class: "empty" }, "Could not load this page."));
    }
  }

  function showWho() {
    const who = document.getElementById("who");
    who.replaceChildren(me ? h("span", {}, me.name || me.token_id, h("span", { class: "role", "data-testid": "role" }, me.role)) : "");
    document.getElementById("logout").hidden = !me;
  }
  const canOperate = () => me && OPERATOR_ROLES.includes(me.role);

  function setTitle(t) { document.getElementById("title").textContent = t; document.title = t + " · edgeops"; }

  // -- login -------------------------------------------------------------------------------
  function login(message) {
    setTitle("Sign in");
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.remove("active"));
    me = null;
    showWho();
    const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", placeholder: "eot_…", required: true });
    const form = h("form", { class: "card login", onsubmit: async (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      try {
        me = await api("/api/v1/console/whoami");
        location.hash = "#/";
        render();
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        flash(e.message + (e.hint ? " (hint: " + e.hint + ")" : ""));
      }
    } },
    h("h2", {}, "Fleet console"),
    h("p", {}, "Paste an API token. Viewers can watch; operators can also pause, resume, cancel and roll back deployments."),
    h("label", { for: "token" }, "API token"), input,
    h("button", { class: "btn", type: "submit" }, "Sign in"));
    view.replaceChildren(form);
    if (message) flash(message);
    input.focus();
  }

  // -- overview ----------------------------------------------------------------------------
  async function overview() {
    setTitle("Fleet overview");
    const o = await api("/api/v1/console/overview");
    const d = o.devices;
    const active = o.deployments.active;
    const parts = [{ key: "online", label: "online", color: "#1f9d55" }, { key: "offline", label: "offline", color: "#cfd6e0" }];
    const rows = (list) => list.map((c) => ({ name: c.name, values: { online: c.online, offline: c.offline } }));
    const inf = o.inference_last_hour;
    view.replaceChildren(
      h("div", { class: "grid kpis" },
        kpi("Devices", fmt(d.total), "", "kpi-devices"),
        kpi("Online", fmt(d.online), "ok", "kpi-online"),
        kpi("Offline", fmt(d.offline), d.offline ? "bad" : "", "kpi-offline"),
        kpi("Active deployments", String(active.length), "", "kpi-deployments"),
        kpi("Alerts", String(o.alerts.length), o.alerts.length ? "warn" : "", "kpi-alerts"),
        kpi("Inference p95 (1 h, worst)", inf.p95_ms_max === null ? "–" : fmt(inf.p95_ms_max) + " ms", "", "kpi-p95")),
      h("div", { class: "grid cols2" },
        card("Devices by class", window.EdgeCharts.hbars(rows(d.by_class), parts, { label: "devices by class" }), legend(parts)),
        card("Devices by " + d.city_tag + " (top 12)", window.EdgeCharts.hbars(rows(d.by_city.slice(0, 12)), parts, { label: "devices by city" }), legend(parts))),
      h("div", { class: "grid cols2" },
        card("Active deployments", active.length ? deploymentTable(active, true) : h("p", { class: "empty" }, "No deployment is running.")),
        card("Alerts", o.alerts.length ? h("div", { "data-testid": "alerts" }, o.alerts.map((a) =>
          h("div", { class: "alert-row" }, badge(a.severity), h("strong", {}, a.kind), h("span", { class: "subject mono" }, a.subject),
            h("span", { class: "muted" }, a.message)))) : h("p", { class: "empty" }, "No alerts."))),
      h("div", { class: "grid cols2" },
        card("Deployments by status", statusTable(o.deployments.by_status)),
        card("Inference, last hour", h("dl", { class: "kv" },
          h("dt", {}, "Inferences"), h("dd", {}, fmt(inf.inferences)),
          h("dt", {}, "Errors"), h("dd", {}, fmt(inf.errors)),
          h("dt", {}, "Error rate"), h("dd", {}, inf.error_rate === null ? "–" : (inf.error_rate * 100).toFixed(2) + " %"),
          h("dt", {}, "Reports"), h("dd", {}, fmt(inf.records))))));
    refreshTimer = setInterval(() => { if (!document.hidden) render(); }, 20000);
  }

  const legend = (parts) => legendOf(parts.map((p) => [p.label, p.color]));

  function statusTable(byStatus) {
    const entries = Object.entries(byStatus);
    if (!entries.length) return h("p", { class: "empty" }, "No deployments yet.");
    return h("table", {}, h("tbody", {}, entries.map(([s, n]) => h("tr", {}, h("td", {}, badge(s)), h("td", { class: "num" }, n)))));
  }

  function progressBar(counts, total) {
    const bar = h("div", { class: "progress", title: Object.entries(counts).map(([k, v]) => k + ": " + v).join(", ") });
    for (const s of STATE_ORDER.concat(Object.keys(counts).filter((k) => !STATE_ORDER.includes(k)))) {
      const n = counts[s] || 0;
      if (n && total) bar.appendChild(h("span", { class: "seg-" + s, "data-state": s, style: null, "data-w": n / total }));
    }
    // widths set as properties: the CSP forbids inline style attributes, not CSSOM writes
    bar.querySelectorAll("span").forEach((sp) => { sp.style.width = (parseFloat(sp.dataset.w) * 100).toFixed(2) + "%"; });
    return bar;
  }

  function deploymentTable(items, compact) {
    const cols = ["Deployment", "Bundle", "Status", "Progress", "Devices"].concat(compact ? [] : ["Created", "Reason"]);
    return h("table", { "data-testid": "deployments-table" },
      h("thead", {}, h("tr", {}, cols.map((t) => h("th", { class: t === "Devices" ? "num" : "" }, t)))),
      h("tbody", {}, items.map((d) => {
        const total = Object.values(d.counts || {}).reduce((a, b) => a + b, 0);
        const done = (d.counts.healthy || 0) + (d.counts.activated || 0);
        return h("tr", { class: "clickable", "data-id": d.id, onclick: () => go(["deployments", d.id]) },
          h("td", {}, h("code", {}, d.id)), h("td", {}, d.bundle), h("td", {}, badge(d.status)),
          h("td", {}, progressBar(d.counts || {}, total), h("span", { class: "muted small" }, total ? Math.round((done / total) * 100) + " % done" : "")),
          h("td", { class: "num" }, total),
          compact ? null : h("td", {}, ago(d.created_at)), compact ? null : h("td", { class: "muted small" }, d.reason || ""));
      })));
  }

  // -- devices -----------------------------------------------------------------------------
  let facetCache = null;
  async function devices(rest, params) {
    if (rest.length) return deviceDetail(rest[0]);
    setTitle("Devices");
    if (!facetCache) facetCache = await api("/api/v1/console/facets");
    const f = facetCache;
    const filterKeys = ["search", "class", "target", "tag", "version", "status"];
    const filters = Object.fromEntries(filterKeys.map((k) => [k, params[k] || ""]));
    const sig = JSON.stringify(filters);
    const stack = (pageCursors[sig] = pageCursors[sig] || []);
    const cursor = params.cursor || "";
    const page = await api("/api/v1/devices" + qs({ ...filters, limit: 50, cursor }));

    const sel = (name, label, values) => h("label", {}, label, h("select", { name, "data-filter": name },
      h("option", { value: "" }, "any"), values.map((v) => h("option", { value: v.value, selected: v.value === filters[name] }, v.label || v.value))));
    const tagValues = Object.entries(f.tags).flatMap(([k, vals]) => vals.map((v) => ({ value: k + "=" + v.value, label: k + " = " + v.value + " (" + v.count + ")" })));
    const withCount = (list) => list.map((v) => ({ value: v.value, label: v.value + " (" + v.count + ")" }));
    const search = h("input", { type: "search", name: "search", "data-filter": "search", placeholder: "id or tag value", value: filters.search });
    const apply = () => {
      const next = {};
      view.querySelectorAll("[data-filter]").forEach((e) => { if (e.value) next[e.dataset.filter] = e.value; });
      go(["devices"], next);
    };
    const form = h("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); apply(); } },
      h("label", {}, "Search", search),
      sel("class", "Class", withCount(f.class)), sel("target", "Target", withCount(f.target)),
      sel("tag", "Tag", tagValues), sel("version", "Version", withCount(f.version)),
      sel("status", "Status", [{ value: "online" }, { value: "offline" }]),
      h("button", { class: "btn", type: "submit" }, "Apply"),
      h("button", { class: "btn ghost", type: "button", onclick: () => go(["devices"], {}) }, "Clear"));
    form.querySelectorAll("select").forEach((s) => s.addEventListener("change", apply));

    const table = h("table", { "data-testid": "devices-table" },
      h("thead", {}, h("tr", {}, ["Device", "Class", "Target", "Tags", "Active version", "Agent", "Status", "Last seen"].map((t) => h("th", {}, t)))),
      h("tbody", {}, page.items.map((d) => h("tr", { class: "clickable", "data-id": d.id, onclick: () => go(["devices", d.id]) },
        h("td", {}, h("code", {}, d.id)), h("td", {}, d.class), h("td", {}, d.target),
        h("td", {}, Object.entries(d.tags).map(([k, v]) => h("span", { class: "tag" }, k + "=" + v))),
        h("td", {}, d.active_bundle || h("span", { class: "muted" }, "none")), h("td", {}, d.agent_version || "–"),
        h("td", {}, badge(d.online ? "online" : "offline")), h("td", {}, ago(d.last_seen))))));
    const prev = h("button", { class: "btn ghost", type: "button", disabled: !cursor, onclick: () => {
      const p = stack.pop();
      go(["devices"], { ...filters, cursor: p || "" });
    } }, "← Previous");
    const next = h("button", { class: "btn ghost", type: "button", disabled: !page.next_cursor, onclick: () => {
      stack.push(cursor);
      go(["devices"], { ...filters, cursor: page.next_cursor });
    } }, "Next →");
    view.replaceChildren(card(null, form,
      h("p", { class: "muted", "data-testid": "device-total" }, page.total + " device" + (page.total === 1 ? "" : "s") + " match"),
      page.items.length ? table : h("p", { class: "empty" }, "No device matches these filters."),
      h("div", { class: "pager" }, prev, next)));
  }

  async function deviceDetail(id) {
    setTitle("Device " + id);
    const [d, s] = await Promise.all([api("/api/v1/devices/" + encodeURIComponent(id)),
      api("/api/v1/console/devices/" + encodeURIComponent(id) + "/series")]);
    const L = window.EdgeCharts.line;
    const lat = s.latency, sys = s.system, dr = s.drift;
    const installed = Object.entries(d.installed || {});
    const slotRows = installed.map(([slot, info]) => h("tr", {}, h("td", {}, slot),
      h("td", {}, info && typeof info === "object" ? [info.name, info.version].filter(Boolean).join("@") || JSON.stringify(info)
        : info === null || info === undefined ? h("span", { class: "muted" }, "empty") : String(info)),
      h("td", {}, d.active && d.active.slot === slot ? badge("active", "ok") : "")));
    view.replaceChildren(
      h("div", { class: "crumbs" }, h("a", { href: "#/devices" }, "Devices"), " / ", id),
      h("div", { class: "grid cols2" },
        card("Device", h("dl", { class: "kv", "data-testid": "device-info" },
          h("dt", {}, "ID"), h("dd", {}, h("code", {}, d.id)),
          h("dt", {}, "Status"), h("dd", {}, badge(d.online ? "online" : "offline"), " ", h("span", { class: "muted" }, "last seen " + ago(d.last_seen))),
          h("dt", {}, "Class / target"), h("dd", {}, d.class + " / " + d.target),
          h("dt", {}, "Tags"), h("dd", {}, Object.entries(d.tags).map(([k, v]) => h("span", { class: "tag" }, k + "=" + v))),
          h("dt", {}, "Agent"), h("dd", {}, d.agent_version || "–"),
          h("dt", {}, "Active version"), h("dd", { "data-testid": "active-version" }, d.active_bundle || "none"),
          h("dt", {}, "Enrolled"), h("dd", {}, when(d.enrolled_at)))),
        card("Installed versions",
          installed.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Slot"), h("th", {}, "Bundle"), h("th", {}, ""))), h("tbody", {}, slotRows))
            : h("p", { class: "empty" }, "Nothing installed yet."))),
      h("div", { class: "grid cols2" },
        card("Inference latency (ms)", L([
          { name: "p50", color: "#58b983", x: lat.ts, y: lat.p50_ms },
          { name: "p95", color: "#2f6fed", x: lat.ts, y: lat.p95_ms },
          { name: "p99", color: "#d64045", x: lat.ts, y: lat.p99_ms }], { unit: "ms", label: "latency" }),
          legendOf([["p50", "#58b983"], ["p95", "#2f6fed"], ["p99", "#d64045"]])),
        card("Drift (largest standardised mean shift)", L([{ name: "shift", color: "#7c5cd6", x: dr.ts, y: dr.max_shift }],
          { unit: "σ", threshold: 3, label: "drift" }), h("div", { class: "legend" }, "dashed line: alert threshold (3σ)"))),
      h("div", { class: "grid cols2" },
        card("CPU (%)", L([{ name: "cpu", color: "#d98b0b", x: sys.ts, y: sys.cpu_pct }], { unit: "%", label: "cpu" })),
        card("Memory (MB)", L([{ name: "mem", color: "#2f6fed", x: sys.ts, y: sys.mem_mb }], { unit: "MB", label: "memory" }))),
      h("div", { class: "grid cols2" },
        card("Slot history (deployments)", d.deployments && d.deployments.length ? h("table", {},
          h("thead", {}, h("tr", {}, ["Deployment", "State", "Previous", "Updated", "Reason"].map((t) => h("th", {}, t)))),
          h("tbody", {}, d.deployments.slice().reverse().map((r) => h("tr", { class: "clickable", onclick: () => go(["deployments", r.deployment_id]) },
            h("td", {}, h("code", {}, r.deployment_id)), h("td", {}, badge(r.state)), h("td", {}, r.previous || "–"),
            h("td", {}, ago(r.updated_at)), h("td", {}, r.reason || ""))))) : h("p", { class: "empty" }, "No deployment has reached this device.")),
        card("Last telemetry", s.last ? h("pre", { class: "json", "data-testid": "last-telemetry" }, JSON.stringify(s.last, null, 2)) : h("p", { class: "empty" }, "No telemetry yet."))));
  }

  function legendOf(items) {
    return h("div", { class: "legend" }, items.map(([name, color]) => {
      const sw = h("i");
      sw.style.background = color;
      return h("span", {}, sw, name);
    }));
  }

  // -- deployments -------------------------------------------------------------------------
  async function deployments(rest, params) {
    if (rest.length) return deploymentDetail(rest[0], params);
    setTitle("Deployments");
    const list = await api("/api/v1/deployments?limit=100");
    view.replaceChildren(card(null, list.items.length ? deploymentTable(list.items) : h("p", { class: "empty" }, "No deployments yet.")));
  }

  async function deploymentDetail(id, params) {
    setTitle("Deployment " + id);
    const offset = parseInt(params.offset || "0", 10) || 0;
    const w = await api("/api/v1/console/deployments/" + encodeURIComponent(id) + "/waves" + qs({ state: params.state, offset, limit: 50 }));
    const d = w.deployment;
    const states = STATE_ORDER.filter((s) => d.counts[s]).concat(Object.keys(d.counts).filter((k) => !STATE_ORDER.includes(k)));
    const parts = states.map((s) => ({ key: s, label: s, color: STATE_COLORS[s] || "#98a2b3" }));
    const waveRows = w.waves.map((x) => ({ name: "Phase " + (x.wave + 1) + (w.phases[x.wave] ? " (" + w.phases[x.wave] + ")" : ""), values: x.counts }));
    const action = (verb, label, cls, enabled, confirmText) => h("button", {
      class: "btn " + cls, type: "button", "data-action": verb, disabled: !enabled,
      onclick: async (ev) => {
        if (confirmText && !window.confirm(confirmText)) return;
        ev.target.disabled = true;
        try {
          await api("/api/v1/deployments/" + encodeURIComponent(id) + "/" + verb, "POST");
          await render();
          flash("Deployment " + id + ": " + label.toLowerCase() + " done.", true);
        } catch (e) {
          flash(e.message + (e.hint ? " (hint: " + e.hint + ")" : ""));
          ev.target.disabled = false;
        }
      } }, label);
    const live = ["running", "paused"].includes(d.status);
    const actions = canOperate() ? h("div", { class: "actions", "data-testid": "operator-actions" },
      action("pause", "Pause", "warn", d.status === "running"),
      action("resume", "Resume", "", d.status === "paused"),
      action("cancel", "Cancel", "ghost", live, "Cancel deployment " + id + "? Devices not yet updated keep their version."),
      action("rollback", "Roll back", "danger", d.status !== "rolled-back", "Roll back every device this deployment reached to its previous version?"))
      : h("p", { class: "muted small", "data-testid": "viewer-note" }, "Your role (" + (me && me.role) + ") can watch deployments; operators can pause, resume, cancel and roll back.");
    const pageRows = w.page.items.map((r) => h("tr", { class: "clickable", onclick: () => go(["devices", r.device_id]) },
      h("td", {}, h("code", {}, r.device_id)), h("td", { class: "num" }, r.wave + 1), h("td", {}, badge(r.state)),
      h("td", {}, r.target), h("td", {}, r.previous || "–"), h("td", {}, ago(r.updated_at)), h("td", {}, r.reason || "")));
    const stateSel = h("select", { "data-filter": "state", onchange: (ev) => go(["deployments", id], { state: ev.target.value }) },
      h("option", { value: "" }, "all states"), Object.keys(d.counts).map((s) => h("option", { value: s, selected: s === params.state }, s + " (" + d.counts[s] + ")")));
    view.replaceChildren(
      h("div", { class: "crumbs" }, h("a", { href: "#/deployments" }, "Deployments"), " / ", id),
      d.reason ? h("div", { class: "reason" + (["aborted", "rolled-back"].includes(d.status) ? "" : " info"), "data-testid": "reason" }, (d.status === "aborted" ? "Abort reason: " : "Reason: ") + d.reason) : "",
      h("div", { class: "grid kpis" },
        kpi("Status", badge(d.status), "", "dep-status"), kpi("Bundle", d.bundle, "", "dep-bundle"),
        kpi("Devices", fmt(d.devices), "", "dep-devices"), kpi("Progress", Math.round(d.progress * 100) + " %", "ok", "dep-progress"),
        kpi("Phase", (d.phase_index + 1) + " of " + Math.max(w.phases.length, 1), "", "dep-phase")),
      h("div", { class: "grid cols2" },
        card("Phase progress", window.EdgeCharts.hbars(waveRows, parts, { label: "phase progress" }),
          legendOf(parts.map((p) => [p.label, p.color]))),
        card("Operator actions", actions,
          h("dl", { class: "kv" }, h("dt", {}, "Selector"), h("dd", {}, h("code", {}, d.selector)),
            h("dt", {}, "Created"), h("dd", {}, when(d.created_at)), h("dt", {}, "Updated"), h("dd", {}, when(d.updated_at))),
          h("table", { "data-testid": "state-counts" }, h("tbody", {}, Object.entries(d.counts).map(([s, n]) => h("tr", {}, h("td", {}, badge(s)), h("td", { class: "num" }, n))))))),
      card("Devices", h("div", { class: "filters" }, h("label", {}, "State", stateSel),
        h("span", { class: "muted" }, w.page.total + " devices")),
      h("table", { "data-testid": "deployment-devices" }, h("thead", {}, h("tr", {}, ["Device", "Phase", "State", "Target", "Previous", "Updated", "Reason"].map((t) => h("th", {}, t)))), h("tbody", {}, pageRows)),
      h("div", { class: "pager" },
        h("button", { class: "btn ghost", type: "button", disabled: offset <= 0, onclick: () => go(["deployments", id], { state: params.state, offset: Math.max(0, offset - 50) }) }, "← Previous"),
        h("span", { class: "muted small" }, (w.page.total ? offset + 1 : 0) + "–" + Math.min(offset + 50, w.page.total) + " of " + w.page.total),
        h("button", { class: "btn ghost", type: "button", disabled: offset + 50 >= w.page.total, onclick: () => go(["deployments", id], { state: params.state, offset: offset + 50 }) }, "Next →"))));
    if (live) refreshTimer = setInterval(() => { if (!document.hidden) render(); }, 15000);
  }

  // -- bundles -----------------------------------------------------------------------------
  // Where a bundle's model came from (signed lineage), linked into MLflow when it has a web UI.
  function lineage(l) {
    if (!l) return h("span", { class: "muted" }, "local file");
    const link = (href, text) => href && /^https?:\/\//.test(href) ? h("a", { href, target: "_blank", rel: "noopener noreferrer" }, text) : h("span", {}, text);
    return h("div", { class: "small" },
      l.model_name ? link(l.links && l.links.model_version, l.model_name + " v" + l.model_version + (l.alias ? " @" + l.alias : "")) : h("span", { class: "mono" }, l.source_uri),
      l.run_id ? h("div", {}, link(l.links && l.links.run, "run " + l.run_id.slice(0, 12))) : null,
      l.git_commit ? h("div", { class: "muted mono" }, "commit " + l.git_commit.slice(0, 12)) : null);
  }

  async function bundles() {
    setTitle("Bundles");
    const list = await api("/api/v1/console/bundles");
    const metric = (m) => Object.entries(m).map(([k, v]) => h("span", { class: "tag" }, k + " " + (typeof v === "number" ? fmt(v) : JSON.stringify(v))));
    view.replaceChildren(card(null, list.items.length ? h("table", { "data-testid": "bundles-table" },
      h("thead", {}, h("tr", {}, ["Bundle", "Version", "Published", "Source", "Targets", "Size", "Artifacts: metrics", "Signature", "Blessings"].map((t) => h("th", {}, t)))),
      h("tbody", {}, list.items.map((b) => h("tr", { "data-bundle": b.name + "@" + b.version },
        h("td", {}, h("strong", {}, b.name)),
        h("td", {}, h("code", {}, b.version), (b.aliases || []).map((a) => h("span", { class: "tag", "data-alias": a }, "@" + a))),
        h("td", {}, ago(b.published_at)), h("td", { "data-testid": "lineage" }, lineage(b.lineage)),
        h("td", {}, b.targets.map((t) => h("span", { class: "tag" }, t))), h("td", { class: "num" }, bytes(b.size)),
        h("td", {}, b.artifacts.map((a) => h("div", {}, h("span", { class: "muted small" }, a.target + " · " + (a.runtime || "") + " · " + (a.precision || "") + " · " + bytes(a.size || 0) + " "), metric(a.metrics)))),
        h("td", { title: b.signature.detail || "" }, badge(b.signature.status), b.signature.keyids ? h("div", { class: "muted small mono" }, b.signature.keyids.join(", ")) : null),
        h("td", {}, b.blessings.length ? b.blessings.map((x) => badge(x.hardware + (x.passed ? " ✓" : " ✗"), x.passed ? "ok" : "failed")) : h("span", { class: "muted" }, "none"))))))
      : h("p", { class: "empty" }, "No bundle published yet.")));
  }

  // -- drift -------------------------------------------------------------------------------
  // One cohort (tag selector) or one device: status per group, then per feature the signed
  // reference histogram beside the latest live window's merged counts, then monitors' alarms.
  async function drift(rest, params) {
    setTitle("Drift");
    const target = params.device ? { device: params.device } : { cohort: params.cohort || "all" };
    const [hist, status, monitors, alarms] = await Promise.all([
      api("/api/v1/console/drift" + qs(target)),
      api("/api/v1/drift" + qs(params.device ? { device: params.device } : { cohort: target.cohort })),
      api("/api/v1/drift/monitors"),
      api("/api/v1/drift/alarms?limit=30")]);
    const cohortIn = h("input", { type: "search", name: "cohort", "data-filter": "cohort", placeholder: "city=lyon,class=camera", value: params.device ? "" : target.cohort });
    const deviceIn = h("input", { type: "search", name: "device", "data-filter": "device", placeholder: "device id", value: params.device || "" });
    const form = h("form", { class: "filters", onsubmit: (ev) => {
      ev.preventDefault();
      go(["drift"], deviceIn.value ? { device: deviceIn.value } : { cohort: cohortIn.value || "all" });
    } }, h("label", {}, "Cohort", cohortIn), h("label", {}, "or device", deviceIn),
    h("button", { class: "btn", type: "submit" }, "Show"));
    const groups = status.cohorts.concat(status.devices).slice(0, 60);
    const statusTable = groups.length ? h("table", { "data-testid": "drift-status" },
      h("thead", {}, h("tr", {}, ["Group", "Bundle", "Status", "Data", "Prediction", "Devices", "Windows"].map((t) => h("th", {}, t)))),
      h("tbody", {}, groups.map((g) => h("tr", { class: "clickable", "data-group": g.group, onclick: () => {
        const [kind, name] = [g.group.split(":")[0], g.group.slice(g.group.indexOf(":") + 1)];
        go(["drift"], kind === "device" ? { device: name } : { cohort: name });
      } }, h("td", {}, h("code", {}, g.group)), h("td", {}, g.bundle), h("td", {}, badge(g.status)),
      h("td", {}, badge(g.data_drift.status)), h("td", {}, badge(g.prediction_drift.status)),
      h("td", { class: "num" }, g.devices), h("td", { class: "num" }, g.windows)))))
      : h("p", { class: "empty" }, "No drift sketches from these devices yet.");
    const bundleCards = hist.items.map((b) => card("Features · " + b.bundle + " · latest window " + when(b.latest_window_end),
      h("p", { class: "muted small" }, "grey: reference (signed in the bundle) · colour: live, " + b.devices + " device(s) merged · status ",
        badge(b.status), " data ", badge(b.data_status), " prediction ", badge(b.prediction_status)),
      h("div", { class: "hists", "data-testid": "drift-hists", "data-bundle": b.bundle }, b.features.map((f) =>
        h("div", { class: "hist-cell", "data-feature": f.feature },
          h("h3", {}, h("code", {}, f.feature), f.drift ? badge("drift", "alarm") : null,
            f.p_adjusted === null || f.p_adjusted === undefined ? null : h("span", { class: "muted small" }, "p=" + Number(f.p_adjusted).toExponential(1) + " psi=" + fmt(f.psi))),
          window.EdgeCharts.hist(f.reference, f.live, { edges: f.edges, label: "hist " + f.feature, liveColor: f.drift ? "#d64045" : "#2f6fed" }))))));
    const monTable = monitors.items.length ? h("table", { "data-testid": "drift-monitors" },
      h("thead", {}, h("tr", {}, ["Monitor", "Cohort", "Policy", "Webhooks", "Alarms"].map((t) => h("th", {}, t)))),
      h("tbody", {}, monitors.items.map((m) => h("tr", { class: "clickable", onclick: () => go(["drift"], { cohort: m.cohort }) },
        h("td", {}, h("strong", {}, m.name)), h("td", {}, h("code", {}, m.cohort)),
        h("td", { class: "small" }, "alpha " + m.policy.alpha + " (" + m.policy.correction + "), k=" + m.policy.persistence),
        h("td", { class: "num" }, m.webhooks.length),
        h("td", {}, alarms.current.filter((a) => a.monitor === m.name && a.in_alarm).map((a) => badge(a.bundle + " " + a.side, "alarm")))))))
      : h("p", { class: "empty" }, "No stored monitors (edgeops fleet monitor add).");
    const history = alarms.history.length ? h("table", { "data-testid": "alarm-history" },
      h("thead", {}, h("tr", {}, ["When", "Monitor", "Bundle", "Side", "Event", "Drifting features"].map((t) => h("th", {}, t)))),
      h("tbody", {}, alarms.history.map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.monitor), h("td", {}, e.bundle),
        h("td", {}, e.side), h("td", {}, badge(e.in_alarm ? "alarm started" : "alarm ended", e.in_alarm ? "alarm" : "ok")),
        h("td", { class: "small" }, (e.detail.features || []).map((f) => f.feature).join(", "))))))
      : h("p", { class: "empty" }, "No alarm yet.");
    view.replaceChildren(h("div", { class: "grid stack" },
      card(null, form, h("p", { class: "muted", "data-testid": "drift-group" }, hist.group)),
      card("Status", statusTable),
      ...(bundleCards.length ? bundleCards : [card("Features", h("p", { class: "empty" }, "No sketches for " + hist.group + " in the last 2 hours."))]),
      h("div", { class: "grid cols2" }, card("Monitors", monTable), card("Alarm history", history))));
  }

  // -- wiring ------------------------------------------------------------------------------
  document.getElementById("refresh").addEventListener("click", () => { facetCache = null; render(); });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    location.hash = "#/login";
  });
  window.addEventListener("hashchange", render);
  render();
})();
