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
//
// DPoP (RFC 9449): each page load makes a non-extractable ECDSA P-256 key
// and sends a proof signed by it with every token request, userinfo and API
// call, so the access tokens are bound to that key: a copied access token
// is useless without it, and script cannot read the key. (The refresh token
// stays in its cookie, unbound, so a reload, with a new key, can refresh.)
"use strict";

let config = null;       // {issuer, client_id, redirect_uri, scope, api}
let accessToken = null;  // in memory only
let refreshTimer = null;
let dpopKey = null;      // CryptoKeyPair; the private key is not extractable
let dpopNonce = null;    // the server's, when it sends one
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

const json64 = (value) => b64url(new TextEncoder().encode(JSON.stringify(value)));

// A DPoP proof for `method url` (with the hash of `token` when one is
// sent): a JWT whose header carries the public key.
async function dpopProof(method, url, token) {
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", dpopKey.publicKey);
  const claims = { jti: random(16), htm: method, htu: url, iat: Math.floor(Date.now() / 1000) };
  if (token) {
    const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token));
    claims.ath = b64url(new Uint8Array(hash));
  }
  if (dpopNonce) claims.nonce = dpopNonce;
  const input = json64({ typ: "dpop+jwt", alg: "ES256", jwk: { kty, crv, x, y } }) + "." + json64(claims);
  const signature = await crypto.subtle.sign(
    { name: "ECDSA", hash: "SHA-256" }, dpopKey.privateKey, new TextEncoder().encode(input));
  return input + "." + b64url(new Uint8Array(signature));  // r || s, as JWS wants
}

// fetch() with a fresh proof, once more with the server's nonce if it asks.
async function withDpop(url, init, token) {
  for (let attempt = 0; ; attempt++) {
    const headers = { ...init.headers, DPoP: await dpopProof(init.method || "GET", url, token) };
    if (token) headers.Authorization = "DPoP " + token;
    const response = await fetch(url, { ...init, headers });
    dpopNonce = response.headers.get("DPoP-Nonce") || dpopNonce;
    const askedForNonce = response.status === 401
      ? (response.headers.get("WWW-Authenticate") || "").includes("use_dpop_nonce")
      : response.status === 400 && (await response.clone().json().catch(() => ({}))).error === "use_dpop_nonce";
    if (!askedForNonce || attempt > 0) return response;
  }
}

async function tessera(path, fields) {
  const init = {
    method: "POST",
    credentials: "include",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      "X-Tessera-CSRF": "1",
    },
    body: new URLSearchParams({ client_id: config.client_id, ...fields }),
  };
  const url = config.issuer + path;
  const response = path === "/oauth/token" ? await withDpop(url, init) : await fetch(url, init);
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
  const info = await (await withDpop(config.issuer + "/oauth/userinfo", {}, accessToken)).json();
  $("user").textContent = info.preferred_username || info.sub;
  show("logged in", { sub: info.sub, amr: claims.amr, scope: r.body.scope, token_type: r.body.token_type });
}

async function refresh() {
  const r = await tessera("/oauth/token", { grant_type: "refresh_token" });
  if (!r.ok) {
    accessToken = null;
    return show("refresh failed", r.body);
  }
  accepted(r.body);
  show("refreshed", { expires_in: r.body.expires_in, token_type: r.body.token_type });
}

async function callApi() {
  if (!accessToken) return show("not logged in");
  const response = await withDpop(new URL(config.api, location.href).href, {}, accessToken);
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
  dpopKey = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  $("sign-in").addEventListener("click", signIn);
  $("refresh").addEventListener("click", refresh);
  $("call-api").addEventListener("click", callApi);
  $("logout").addEventListener("click", logout);
  const params = new URLSearchParams(location.search);
  if (params.has("code") || params.has("error")) return signedIn(params);
  show("logged out");
}

start();
