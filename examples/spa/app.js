// tessera SPA example: sign-in through tessera's login page (authorization
// code flow with PKCE, OpenID Connect), silent refresh through the
// __Host-tessera-rt cookie, an API call with the access token, logout.
//
// Every request to tessera's token and logout endpoints carries
// `credentials: "include"` (so the browser sends and stores the cookie) and
// `X-Tessera-CSRF: 1` (which a cross-site form cannot send, and which makes
// the browser ask tessera's CORS policy first). The access token is kept in
// a variable, never in storage; the PKCE verifier, state and nonce stay in
// sessionStorage only between the redirect to tessera and the way back.
"use strict";

let config = null;       // {issuer, client_id, redirect_uri, scope, api}
let accessToken = null;  // in memory only
let refreshTimer = null;
const PENDING = "tessera-sign-in";

const $ = (id) => document.getElementById(id);
const show = (status, detail) => {
  $("status").textContent = status;
  $("result").textContent = detail === undefined ? "" : JSON.stringify(detail, null, 2);
};

// base64url without padding (RFC 7636 appendix A).
function b64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
const random = (n) => b64url(crypto.getRandomValues(new Uint8Array(n)));

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

// To tessera's login page with a fresh PKCE verifier, state and nonce.
async function signIn() {
  const verifier = random(32);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  const pending = { verifier, state: random(16), nonce: random(16) };
  sessionStorage.setItem(PENDING, JSON.stringify(pending));
  location.assign(config.issuer + "/oauth/authorize?" + new URLSearchParams({
    response_type: "code",
    client_id: config.client_id,
    redirect_uri: config.redirect_uri,
    scope: config.scope,
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: b64url(new Uint8Array(digest)),
    code_challenge_method: "S256",
  }));
}

// Back from tessera: check state and iss, redeem the code, check the nonce.
async function signedIn(params) {
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", location.pathname);  // the code leaves the URL
  if (params.has("error")) {
    return show("sign-in failed", { error: params.get("error"), error_description: params.get("error_description") });
  }
  if (!pending || params.get("state") !== pending.state) {
    return show("sign-in failed", "the state does not match the one this tab sent");
  }
  if (params.get("iss") !== config.issuer) {
    return show("sign-in failed", "the response comes from another issuer");  // RFC 9207 mix-up
  }
  const r = await tessera("/oauth/token", {
    grant_type: "authorization_code",
    code: params.get("code"),
    redirect_uri: config.redirect_uri,
    code_verifier: pending.verifier,
  });
  if (!r.ok) return show("sign-in failed", r.body);
  // The ID token's signature is for servers to check; the app checks that
  // it answers its own request.
  const payload = r.body.id_token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  const claims = JSON.parse(atob(payload));
  if (claims.nonce !== pending.nonce) return show("sign-in failed", "the nonce does not match");
  accepted(r.body);
  const info = await (await fetch(config.issuer + "/oauth/userinfo", {
    headers: { Authorization: "Bearer " + accessToken },
  })).json();
  $("user").textContent = info.preferred_username || info.sub;
  show("logged in", { sub: info.sub, amr: claims.amr, scope: r.body.scope });
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
  $("user").textContent = "nobody";
  show(r.ok ? "logged out" : "logout failed", r.body);
}

async function start() {
  config = await (await fetch("spa-config.json")).json();
  $("sign-in").addEventListener("click", signIn);
  $("refresh").addEventListener("click", refresh);
  $("call-api").addEventListener("click", callApi);
  $("logout").addEventListener("click", logout);
  const params = new URLSearchParams(location.search);
  if (params.has("code") || params.has("error")) return signedIn(params);
  show("logged out");
}

start();
