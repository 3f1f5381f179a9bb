// An unmodified DPoP client library (panva's oauth4webapi) against tessera:
// discovery, a password grant and a refresh with DPoP-bound tokens (the
// key is a non-extractable WebCrypto key, as in a browser), then a
// client_credentials token used at the admin API with its proof. Server
// nonces are on, so the library's use_dpop_nonce retry is exercised too.
//
// Usage: node dpop_client.mjs ISSUER USER PASSWORD ADMIN_SECRET RS_URL, from a
// directory whose node_modules holds oauth4webapi (tests/api/interop.rs
// copies it next to what scripts/test.sh installs).
// Prints a JSON summary on stdout.
import * as oauth from 'oauth4webapi'

const [issuer, user, password, adminSecret, rsUrl] = process.argv.slice(2)
const insecure = { [oauth.allowInsecureRequests]: true }

// Retries once when the server asks for a (new) nonce: the DPoP handle
// has stored the one it sent.
async function withNonce(request, process) {
  try {
    return await process(await request())
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err
    return await process(await request())
  }
}

const as = await oauth.processDiscoveryResponse(
  new URL(issuer),
  await oauth.discoveryRequest(new URL(issuer), { algorithm: 'oauth2', ...insecure }),
)
const spa = { client_id: 'spa' }
const keyPair = await oauth.generateKeyPair('ES256')
const DPoP = oauth.DPoP(spa, keyPair)

const login = await withNonce(
  () => oauth.genericTokenEndpointRequest(as, spa, oauth.None(), 'password',
    { username: user, password }, { DPoP, ...insecure }),
  (res) => oauth.processGenericTokenEndpointResponse(as, spa, res),
)
const refreshed = await withNonce(
  () => oauth.refreshTokenGrantRequest(as, spa, oauth.None(), login.refresh_token,
    { DPoP, ...insecure }),
  (res) => oauth.processRefreshTokenResponse(as, spa, res),
)

// The user's bound token at a resource server that uses the verify library.
const meRequest = () => oauth.protectedResourceRequest(refreshed.access_token, 'GET',
  new URL(`${rsUrl}/me`), new Headers(), null, { DPoP, ...insecure })
const me = await meRequest()
const meBody = await me.json()

const admin = { client_id: 'admin' }
const adminKey = await oauth.generateKeyPair('ES256')
const adminDPoP = oauth.DPoP(admin, adminKey)
const adminToken = await withNonce(
  () => oauth.clientCredentialsGrantRequest(as, admin, oauth.ClientSecretBasic(adminSecret),
    {}, { DPoP: adminDPoP, ...insecure }),
  (res) => oauth.processClientCredentialsResponse(as, admin, res),
)
const keysRequest = () => oauth.protectedResourceRequest(adminToken.access_token, 'GET',
  new URL(`${issuer}/admin/v1/keys`), new Headers(), null, { DPoP: adminDPoP, ...insecure })
let keys
try {
  keys = await keysRequest()
} catch (err) {
  if (!oauth.isDPoPNonceError(err)) throw err
  keys = await keysRequest()
}
if (keys.status === 401 && (keys.headers.get('www-authenticate') ?? '').includes('use_dpop_nonce')) {
  keys = await keysRequest()
}

console.log(JSON.stringify({
  login_token_type: login.token_type,
  login_access_token: login.access_token,
  refresh_token_parts: login.refresh_token.split('.').length,
  refreshed_token_type: refreshed.token_type,
  refreshed_access_token: refreshed.access_token,
  admin_token_type: adminToken.token_type,
  admin_keys_status: keys.status,
  rs_status: me.status,
  rs_sub: meBody.sub,
}))
