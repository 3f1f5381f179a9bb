// tessera SPA example: password login, silent refresh through the
// __Host-tessera-rt cookie, an API call with the access token, logout.
//
// Every request to tessera carries `credentials: "include"` (so the browser
// sends and stores the cookie) and `X-Tessera-CSRF: 1` (which a cross-site
// form cannot send, and which makes the browser ask tessera's CORS policy
// first). The access token is kept in a variable, never in storage.
"use strict";

let config = null;       // {issuer, client_id, api}
let accessToken = null;  // in memory only
let refreshTimer = null;

const $ = (id) => document.getElementById(id);
const show = (status, detail) => {
  $("status").textContent = status;
  $("result").textContent = detail === undefined ? "" : JSON.stringify(detail, null, 2);
};

async function tessera(path, fields) {
  const response = await fetch(config.issuer + path, {
    method: "POST",
    credentials: "include",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      "X-Tessera-CSRF": "1",
    },
    body: new URLSearchParams({ client_id: config.client_id, ...fields }),
  });
  const text = await response.text();
  return { ok: response.ok, status: response.status, body: text ? JSON.parse(text) : null };
}

function accepted(body) {
  accessToken = body.access_token;
  // Refresh a minute before expiry (or at half-life for short tokens).
  const lead = Math.min(60, body.expires_in / 2);
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, (body.expires_in - lead) * 1000);
}

async function login(event) {
  event.preventDefault();
  const r = await tessera("/oauth/token", {
    grant_type: "password",
    username: $("username").value,
    password: $("password").value,
  });
  $("password").value = "";
  if (!r.ok) return show("login failed", r.body);
  accepted(r.body);
  show("logged in", { scope: r.body.scope, expires_in: r.body.expires_in });
}

async function refresh() {
  const r = await tessera("/oauth/token", { grant_type: "refresh_token" });
  if (!r.ok) {
    accessToken = null;
    return show("refresh failed", r.body);
  }
  accepted(r.body);
  show("refreshed", { expires_in: r.body.expires_in });
}

async function callApi() {
  if (!accessToken) return show("not logged in");
  const response = await fetch(config.api, {
    headers: { Authorization: "Bearer " + accessToken },
  });
  show(response.ok ? "api ok" : "api refused", await response.json());
}

async function logout() {
  const r = await tessera("/oauth/logout", {});
  accessToken = null;
  clearTimeout(refreshTimer);
  show(r.ok ? "logged out" : "logout failed", r.body);
}

async function start() {
  config = await (await fetch("spa-config.json")).json();
  $("login").addEventListener("submit", login);
  $("refresh").addEventListener("click", refresh);
  $("call-api").addEventListener("click", callApi);
  $("logout").addEventListener("click", logout);
  show("logged out");
}

start();
