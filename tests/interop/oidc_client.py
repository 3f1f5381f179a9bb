"""An unmodified OAuth/OIDC client library (Authlib) through tessera's
authorization code flow with PKCE.

Usage: oidc_client.py BASE_URL ISSUER CLIENT_ID REDIRECT_URI USERNAME PASSWORD

Authlib builds the authorization request (S256 challenge, state, nonce);
this script plays the user at tessera's login page (requests, reading the
form's hidden fields); Authlib redeems the code, validates the ID token
against the JWKS (signature, iss, aud, nonce, at_hash, exp), calls userinfo
and refreshes. Prints a JSON summary; exits non-zero on any failure.
"""

import json
import os
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlparse

# The test server speaks plain HTTP on loopback.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

import requests  # noqa: E402
from authlib.common.security import generate_token  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
from authlib.jose import JsonWebKey, jwt  # noqa: E402
from authlib.oidc.core import CodeIDToken  # noqa: E402

base, issuer, client_id, redirect_uri, username, password = sys.argv[1:7]


class HiddenFields(HTMLParser):
    def __init__(self):
        super().__init__()
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("type") == "hidden":
            self.fields[a["name"]] = a.get("value", "")


def check(cond, what):
    if not cond:
        raise SystemExit(f"interop failure: {what}")


meta = requests.get(f"{base}/.well-known/openid-configuration", timeout=10).json()
check(meta["issuer"] == issuer, f"discovery issuer {meta['issuer']!r}")
check("S256" in meta["code_challenge_methods_supported"], "S256 advertised")

client = OAuth2Session(
    client_id,
    redirect_uri=redirect_uri,
    scope="openid profile read",
    code_challenge_method="S256",
    token_endpoint_auth_method="none",
)
verifier = generate_token(48)
nonce = generate_token(20)
url, state = client.create_authorization_url(
    f"{base}/oauth/authorize", code_verifier=verifier, nonce=nonce
)

# The user at the login page: a browser session with cookies.
browser = requests.Session()
page = browser.get(url, allow_redirects=False, timeout=10)
check(page.status_code == 200, f"login page: {page.status_code}")
form = HiddenFields()
form.feed(page.text)
fields = dict(form.fields, username=username, password=password)
# The cookies are Secure; over plain HTTP requests would not send them back.
cookies = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
done = browser.post(
    f"{base}/oauth/authorize",
    data=fields,
    headers={"Cookie": cookies},
    allow_redirects=False,
    timeout=10,
)
check(done.status_code == 303, f"sign-in: {done.status_code} {done.text[:200]}")
location = done.headers["Location"]
check(location.startswith(redirect_uri), f"redirected to {location}")
answer = parse_qs(urlparse(location).query)
check(answer.get("iss") == [issuer], "RFC 9207 iss")

token = client.fetch_token(
    f"{base}/oauth/token",
    authorization_response=location,
    state=state,
    code_verifier=verifier,
)
check("id_token" in token and "refresh_token" in token, f"token response {sorted(token)}")

jwks = JsonWebKey.import_key_set(requests.get(f"{base}/.well-known/jwks.json", timeout=10).json())
claims = jwt.decode(
    token["id_token"],
    jwks,
    claims_cls=CodeIDToken,
    claims_options={"iss": {"essential": True, "value": issuer}},
    claims_params={"nonce": nonce, "client_id": client_id, "access_token": token["access_token"]},
)
claims.validate(leeway=5)

info = client.get(f"{base}/oauth/userinfo", timeout=10).json()
check(info["sub"] == claims["sub"], "userinfo sub is the ID token's")

refreshed = client.refresh_token(f"{base}/oauth/token", refresh_token=token["refresh_token"])
check(refreshed["refresh_token"] != token["refresh_token"], "the refresh token rotated")

print(
    json.dumps(
        {
            "sub": claims["sub"],
            "aud": claims["aud"],
            "amr": claims["amr"],
            "preferred_username": info.get("preferred_username"),
            "scope": token["scope"],
            "refreshed": True,
        }
    )
)
