"""An unmodified OAuth client library (Authlib) through tessera's RFC 8693
token exchange, in both of its forms.

Usage: token_exchange_client.py ISSUER PUBLIC_CLIENT_ID ID_TOKEN API_AUDIENCE
       CONFIDENTIAL_CLIENT_ID CLIENT_SECRET ACCESS_TOKEN EXCHANGE_AUDIENCE

ISSUER is where tessera is served (its metadata's endpoints are used as
published). Reads the RFC 8414 metadata and checks the token-exchange grant
is advertised. Then, with Authlib's OAuth2Session:

1. Upstream login: the public client (auth method `none`) trades ID_TOKEN,
   an upstream issuer's ID token, for a tessera access token (checked with
   authlib.jose against tessera's JWKS: ES256, typ at+jwt, iss, aud
   API_AUDIENCE, exp) and a refresh token, which Authlib's own
   refresh_token() redeems.
2. On behalf of: the confidential client (client_secret_basic) trades a
   user's ACCESS_TOKEN for one addressed to EXCHANGE_AUDIENCE naming it as
   the actor (`act`), with the subject token's `sub` and `sid` and no
   refresh token; an audience it may not have is refused (invalid_target),
   which Authlib reports as an OAuthError.

Prints a JSON summary; exits non-zero on any failure.
"""

import json
import os
import sys

# The test server speaks plain HTTP on loopback.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

import requests  # noqa: E402
from authlib.integrations.base_client import OAuthError  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
from authlib.jose import JsonWebKey, JsonWebToken  # noqa: E402

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"

(
    issuer,
    public_id,
    id_token,
    api_audience,
    service_id,
    service_secret,
    subject_token,
    exchange_audience,
) = sys.argv[1:9]


def check(cond, what):
    if not cond:
        raise SystemExit(f"interop failure: {what}")


meta = requests.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=10).json()
check(meta["issuer"] == issuer, f"metadata issuer {meta['issuer']!r}")
check(GRANT in meta["grant_types_supported"], f"grant types {meta['grant_types_supported']}")
for method in ("none", "client_secret_basic"):
    check(method in meta["token_endpoint_auth_methods_supported"], f"auth method {method}")
token_endpoint = meta["token_endpoint"]

jwks = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
# Only what tessera says it signs with: a token in any other algorithm fails.
es256 = JsonWebToken(["ES256"])


def verified(token, audience):
    """The claims of one of tessera's access tokens, checked."""
    claims = es256.decode(
        token,
        jwks,
        claims_options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": audience},
            "sub": {"essential": True},
            "exp": {"essential": True},
        },
    )
    claims.validate(leeway=5)
    check(claims.header["alg"] == "ES256", f"alg {claims.header['alg']!r}")
    check(claims.header.get("typ") == "at+jwt", f"typ {claims.header.get('typ')!r}")
    return claims


def single(aud):
    return aud[0] if isinstance(aud, list) and len(aud) == 1 else aud


# ---- 1. upstream login, by a public client ----

bff = OAuth2Session(public_id, token_endpoint_auth_method="none")
token = bff.fetch_token(
    token_endpoint,
    grant_type=GRANT,
    subject_token=id_token,
    subject_token_type=ID_TOKEN,
)
check(token.get("issued_token_type") == ACCESS, f"issued_token_type {token.get('issued_token_type')!r}")
check(token.get("token_type") == "Bearer", f"token_type {token.get('token_type')!r}")
check(isinstance(token.get("expires_in"), int) and token["expires_in"] > 0, "expires_in")
check("refresh_token" in token, f"upstream login response {sorted(token)}")
upstream = verified(token["access_token"], api_audience)
check("act" not in upstream, "a login names no actor")
check(upstream.get("sid"), "the login opened a session")

refreshed = bff.refresh_token(token_endpoint, refresh_token=token["refresh_token"])
check(refreshed["access_token"] != token["access_token"], "a new access token")
check(refreshed["refresh_token"] != token["refresh_token"], "the refresh token rotated")
after = verified(refreshed["access_token"], api_audience)
check(after["sub"] == upstream["sub"], "the refreshed token is the same user's")
check(after["sid"] == upstream["sid"], "the refreshed token is the same session's")

# ---- 2. on behalf of, by a confidential client ----

subject = verified(subject_token, api_audience)
service = OAuth2Session(
    service_id, service_secret, token_endpoint_auth_method="client_secret_basic"
)
exchanged = service.fetch_token(
    token_endpoint,
    grant_type=GRANT,
    subject_token=subject_token,
    subject_token_type=ACCESS,
    audience=exchange_audience,
)
check(exchanged.get("issued_token_type") == ACCESS, "issued_token_type of the exchange")
check(exchanged.get("token_type") == "Bearer", "token_type of the exchange")
check("refresh_token" not in exchanged, f"on-behalf-of response {sorted(exchanged)}")
obo = verified(exchanged["access_token"], exchange_audience)
check(obo.get("act") == {"sub": service_id}, f"act {obo.get('act')!r}")
check(obo["sub"] == subject["sub"], "the exchanged token is the subject's user's")
check(obo.get("sid") == subject["sid"], "the exchanged token is the subject's session's")
check(obo["exp"] <= subject["exp"], "the exchanged token expires no later than its subject")

try:
    service.fetch_token(
        token_endpoint,
        grant_type=GRANT,
        subject_token=subject_token,
        subject_token_type=ACCESS,
        audience="https://not-allowed.example",
    )
    refused = None
except OAuthError as e:
    refused = e.error
check(refused == "invalid_target", f"a foreign audience: {refused!r}")

print(
    json.dumps(
        {
            "upstream": {
                "sub": upstream["sub"],
                "sid": upstream["sid"],
                "aud": single(upstream["aud"]),
                "scope": token.get("scope"),
                "client_id": upstream.get("client_id"),
            },
            "refreshed": True,
            "subject": {"sub": subject["sub"], "sid": subject["sid"]},
            "exchanged": {
                "sub": obo["sub"],
                "sid": obo["sid"],
                "aud": single(obo["aud"]),
                "act": obo["act"],
                "client_id": obo.get("client_id"),
                "scope": exchanged.get("scope"),
                "refresh_token": "refresh_token" in exchanged,
            },
            "refused_audience_error": refused,
        }
    )
)
