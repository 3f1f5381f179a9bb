#!/usr/bin/env python3
"""Interoperability check with independent JOSE libraries (PyJWT, jwcrypto).

Reads a JSON job on stdin, written by tests/api/interop.rs:
  {"issuer", "audience", "jwks": {...}, "jws": "...",
   "jwe": [{"token", "private_jwk", "audience"}...], "wrap": {"jws", "public_jwk"}}
Writes a JSON report on stdout:
  {"jws_claims": {...}, "jwe_claims": [...], "wrapped": "<JWE made by jwcrypto>"}
Any verification failure raises, so the process exits non-zero.
"""
import json
import sys

import jwt  # PyJWT
from jwcrypto import jwe, jwk


def verify_with_pyjwt(token, jwks, issuer, audience):
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt", header
    assert header["alg"] == "ES256", header
    keys = {k["kid"]: k for k in jwks["keys"]}
    key = jwt.PyJWK.from_dict(keys[header["kid"]])
    return jwt.decode(
        token,
        key=key,
        algorithms=["ES256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )


def main():
    job = json.load(sys.stdin)
    report = {
        "jws_claims": verify_with_pyjwt(job["jws"], job["jwks"], job["issuer"], job["audience"]),
        "jwe_claims": [],
    }
    for case in job["jwe"]:
        token = jwe.JWE()
        key = jwk.JWK(**case["private_jwk"])
        token.deserialize(case["token"], key=key)
        protected = json.loads(token.objects["protected"])
        assert protected["enc"] == "A256GCM", protected
        assert protected["cty"].upper() == "JWT", protected
        inner = token.payload.decode()
        report["jwe_claims"].append(
            verify_with_pyjwt(inner, job["jwks"], job["issuer"], case["audience"])
        )
    # Encrypt one of our signed tokens with jwcrypto, for our verifier to open.
    wrap = job["wrap"]
    out = jwe.JWE(
        wrap["jws"].encode(),
        json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "cty": "JWT"}),
    )
    out.add_recipient(jwk.JWK(**wrap["public_jwk"]))
    report["wrapped"] = out.serialize(compact=True)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
