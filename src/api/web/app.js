// atrest web dashboard. Plain script, no libraries: it calls the node's REST API (the routes
// qq uses) on the same origin with the bearer token of a normal login, kept in sessionStorage.
"use strict";

const TOKEN_KEY = "atrest_token";
const REFRESH_MS = 3000;
const WRITE_PRIVILEGE = "PRIVILEGE_ENCRYPTION_WRITE";

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function toLogin() {
  sessionStorage.removeItem(TOKEN_KEY);
  const here = location.pathname;
  location.replace("/login" + (here && here !== "/login" ? "?next=" + encodeURIComponent(here) : ""));
}

// One REST call. A 401 ends the session and goes to the login page.
async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = null; }
  }
  if (resp.status === 401 && path !== "/v1/session/login") {
    toLogin();
    throw new Error("not logged in");
  }
  if (!resp.ok) {
    const desc = data && data.description ? data.description : "HTTP " + resp.status;
    const err = new Error(desc);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function $(id) {
  return document.getElementById(id);
}

function setText(id, text) {
  const el = $(id);
  if (el) el.textContent = text;
}

function fmtBytes(n) {
  if (typeof n !== "number" || !isFinite(n)) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toString() : n.toFixed(1)) + " " + units[i];
}

function fmtTime(t) {
  if (!t) return "never";
  const d = new Date(t);
  if (isNaN(d.getTime())) return t;
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function encryptionText(status) {
  return status === "Not Encrypted" ? "Data Not Encrypted" : "Data Encrypted";
}

function showWarnings(list) {
  const banner = $("warning-banner");
  const ul = $("warning-list");
  if (!banner || !ul) return;
  ul.replaceChildren(...list.map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
  banner.hidden = list.length === 0;
}

function stamp() {
  setText("updated", new Date().toLocaleTimeString());
}

async function refreshDashboard() {
  const o = await api("GET", "/v1/atrest/overview");
  showWarnings(o.warnings || []);
  setText("capacity-used", fmtBytes(o.used_bytes));
  setText("capacity-free", fmtBytes(o.free_bytes));
  setText("capacity-total", fmtBytes(o.total_bytes));
  setText("drives", o.drives_total
    ? o.drives_healthy + " of " + o.drives_total + " healthy"
    : "none reported");
  const enc = o.encryption || {};
  setText("encryption-state", encryptionText(enc.status) + " (" + enc.type + ", " + enc.status + ")");
  const pct = o.total_bytes ? Math.min(100, (100 * o.used_bytes) / o.total_bytes) : 0;
  $("capacity-bar").style.width = pct.toFixed(1) + "%";
  stamp();
}

function renderSlots(slots) {
  const rows = slots.map((s) => {
    const tr = document.createElement("tr");
    const cells = [
      String(s.slot),
      s.state,
      s.path || "",
      fmtBytes(Number(s.capacity)),
      s.rebuild_percent === null || s.rebuild_percent === undefined
        ? "" : Number(s.rebuild_percent).toFixed(1) + " %",
    ];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c;
      if (i === 1) td.className = "state-" + s.state;
      tr.appendChild(td);
    });
    tr.id = "slot-" + s.slot;
    return tr;
  });
  $("slots-body").replaceChildren(...rows);
  $("slots-empty").hidden = slots.length !== 0;
}

async function refreshCluster() {
  const [o, status, store, slots] = await Promise.all([
    api("GET", "/v1/atrest/overview"),
    api("GET", "/v2/encryption/key-store/status"),
    api("GET", "/v2/encryption/key-store"),
    api("GET", "/v1/cluster/slots/"),
  ]);
  showWarnings(o.warnings || []);
  setText("encryption-state", encryptionText(status.status));
  setText("key-store-type", status.type);
  setText("key-store-status", status.status);
  setText("last-rotation", fmtTime(status.last_key_rotation_time));
  setText("ca-cert-expiry", status.ca_cert_expiry ? fmtTime(status.ca_cert_expiry) : "not used");
  setText("client-cert-expiry",
    status.client_cert_expiry ? fmtTime(status.client_cert_expiry) : "not used");
  const kms = store && store.kms_store;
  document.querySelectorAll(".kms").forEach((el) => { el.hidden = !kms; });
  if (kms) {
    setText("kms-host", kms.hostname + ":" + kms.port);
    setText("kms-key-id", kms.key_id);
  }
  renderSlots(slots || []);
  stamp();
}

async function setupRotate() {
  const box = $("rotate-box");
  const result = $("rotate-result");
  $("rotate-button").addEventListener("click", () => {
    $("rotate-confirm-box").hidden = false;
  });
  $("rotate-cancel").addEventListener("click", () => {
    $("rotate-confirm-box").hidden = true;
  });
  $("rotate-confirm").addEventListener("click", async () => {
    $("rotate-confirm-box").hidden = true;
    $("rotate-button").disabled = true;
    result.hidden = false;
    result.className = "";
    result.textContent = "Rotating the master key...";
    try {
      await api("POST", "/v2/encryption/rotate-keys", {});
      result.className = "ok";
      result.textContent = "Key rotation complete";
    } catch (e) {
      result.className = "bad";
      result.textContent = "Key rotation failed: " + e.message;
    }
    $("rotate-button").disabled = false;
    refreshCluster().catch(() => {});
  });
  return box;
}

function keepRefreshing(fn) {
  const run = () => fn().catch((e) => {
    if (e.message !== "not logged in") setText("updated", "failed: " + e.message);
  });
  run();
  setInterval(run, REFRESH_MS);
}

async function startPage(page) {
  if (!token()) {
    toLogin();
    return;
  }
  $("logout").addEventListener("click", (ev) => {
    ev.preventDefault();
    toLogin();
  });
  const me = await api("GET", "/v1/session/who-am-i");
  setText("user-name", me.name);
  if (page === "dashboard") {
    keepRefreshing(refreshDashboard);
  } else if (page === "cluster") {
    const box = await setupRotate();
    box.hidden = !(me.privileges || []).includes(WRITE_PRIVILEGE);
    keepRefreshing(refreshCluster);
  }
}

function startLogin() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = $("login-error");
    err.hidden = true;
    try {
      const r = await api("POST", "/v1/session/login", {
        username: $("username").value,
        password: $("password").value,
      });
      sessionStorage.setItem(TOKEN_KEY, r.bearer_token);
      const next = new URLSearchParams(location.search).get("next");
      location.assign(next && /^\/[a-z]*$/.test(next) ? next : "/dashboard");
    } catch (e) {
      err.textContent = "Login failed: " + e.message;
      err.hidden = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "login") {
    startLogin();
  } else {
    startPage(page).catch((e) => setText("updated", "failed: " + e.message));
  }
});
