#!/usr/bin/env python3
"""MCP-style OAuth smoke test of provider.mjs (stdlib only; reuses helpers from smoke.py).

    python3 integration/oidc/smoke_mcp.py     # starts its own OP with example-config.json + an "mcp" block

Checks: RFC 8414 metadata at /.well-known/oauth-authorization-server (and OIDC discovery) with
registration_endpoint, S256, auth method none; RFC 7591 open registration at /reg of a public
client (token_endpoint_auth_method none) and of a client_secret_post client (the MCP SDK default);
authorization code + PKCE with resource= (RFC 8707) and an MCP scope, login through the form;
token exchange with resource= gives an RS256 JWT access token (verified against jwks_uri) with
aud == resource, scope, sub, iss, exp, iat; unknown resource refused at /auth and /token;
unconfigured scopes dropped; token request without resource= reuses the granted one; refresh
token grant with resource= gives a new JWT. Prints 'N passed, 0 failed'; exits non-zero on failure.
"""
import base64
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
import urllib.parse

from smoke import (ALICE, CONFIG, HERE, PASSED, Browser, b64u, b64u_dec, check, parse, start_provider,
                   verify_rs256)

RESOURCE = "http://127.0.0.1:18090/mcp"
OTHER_RESOURCE = "http://127.0.0.1:18090/other"
MCP_SCOPES = ["mcp:tools", "mcp:deploy"]
REDIRECT = "http://localhost:18091/callback"


def post_json(br, url, obj, headers=None):
    return br.request(url, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})


def authorize(br, meta, client_id, scope, resource, login=True):
    verifier = b64u(secrets.token_bytes(32))
    state = b64u(secrets.token_bytes(12))
    q = [("response_type", "code"), ("client_id", client_id), ("redirect_uri", REDIRECT),
         ("scope", scope), ("state", state),
         ("code_challenge", b64u(hashlib.sha256(verifier.encode()).digest())),
         ("code_challenge_method", "S256")]
    if resource:
        q.append(("resource", resource))
    res, url, body = br.follow(meta["authorization_endpoint"] + "?" + urllib.parse.urlencode(q),
                               stop_prefix=REDIRECT)
    seen = False
    if res != "stopped":
        p = parse(body)
        check("login form shown (input#login, input#password, button#submit)",
              res == 200 and {"login", "password", "submit"} <= p.ids, f"{res} {url} {body[:300]}")
        seen = True
        action = urllib.parse.urljoin(url, p.forms[0]["action"])
        res, url, body = br.follow(action, {"login": ALICE["email"], "password": ALICE["password"]},
                                   stop_prefix=REDIRECT)
    check("redirected to the registered redirect_uri", res == "stopped", f"{res} {url} {body[:300]}")
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    return params, state, verifier, seen


def token(br, meta, client, data):
    data = dict(data)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    data["client_id"] = client["client_id"]
    if client.get("client_secret"):
        data["client_secret"] = client["client_secret"]
    st, _, body = br.request(meta["token_endpoint"], urllib.parse.urlencode(data).encode(), headers)
    return st, body


def code_token(br, meta, client, code, verifier, resource):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    if resource:
        data["resource"] = resource
    return token(br, meta, client, data)


def check_at(name, at, jwks, issuer, resource, scopes, client_id):
    header = json.loads(b64u_dec(at.split(".")[0]))
    claims = verify_rs256(at, jwks)
    print(json.dumps({"header": header, "claims": claims}, indent=2))
    now = time.time()
    check(name, header.get("typ") == "at+jwt" and claims["aud"] == resource and claims["iss"] == issuer
          and claims["sub"] == ALICE["sub"] and claims["client_id"] == client_id
          and sorted(claims["scope"].split(" ")) == sorted(scopes)
          and claims["iat"] <= now + 5 and claims["exp"] > now, json.dumps(claims))
    return claims


def main():
    cfg_path = os.path.join(tempfile.mkdtemp(), "op.json")
    cfg = dict(CONFIG, mcp={"resources": [RESOURCE, OTHER_RESOURCE], "scopes": MCP_SCOPES})
    json.dump(cfg, open(cfg_path, "w"))
    proc, issuer = start_provider(cfg_path)
    failed = 0
    try:
        run(issuer)
    except AssertionError as e:
        print(e, file=sys.stderr)
        failed = 1
    finally:
        proc.terminate()
        rc = proc.wait(10)
        if rc == 0:
            check("OP exits cleanly on SIGTERM", True)
        else:
            print(f"FAIL OP exit code {rc} after SIGTERM", file=sys.stderr)
            failed += 1
    print(f"{len(PASSED)} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def run(issuer):
    br = Browser()
    st, _, body = br.request(issuer + "/.well-known/oauth-authorization-server")
    check("RFC 8414 metadata served", st == 200, f"{st} {body[:200]}")
    meta = json.loads(body)
    check("RFC 8414 metadata content", meta["issuer"] == issuer
          and meta["registration_endpoint"] == issuer + "/reg"
          and "S256" in meta["code_challenge_methods_supported"]
          and "none" in meta["token_endpoint_auth_methods_supported"]
          and set(MCP_SCOPES) <= set(meta["scopes_supported"]), json.dumps(meta))
    st, _, body = br.request(issuer + "/.well-known/openid-configuration")
    check("OIDC discovery still served, same registration_endpoint",
          st == 200 and json.loads(body).get("registration_endpoint") == meta["registration_endpoint"])
    jwks = json.loads(br.request(meta["jwks_uri"])[2])

    # 1. RFC 7591 registration of a public client (what an MCP client sends)
    st, _, body = post_json(br, meta["registration_endpoint"], {
        "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "client_name": "mcp smoke (public)", "scope": " ".join(MCP_SCOPES)})
    check("public client registered (201)", st == 201, f"{st} {body}")
    pub = json.loads(body)
    check("public client: client_id, no secret, auth none",
          pub.get("client_id") and "client_secret" not in pub and pub["token_endpoint_auth_method"] == "none", body)

    # 2. authorization code + PKCE + resource + scope, login through the form
    params, state, verifier, seen = authorize(br, meta, pub["client_id"], "mcp:tools", RESOURCE)
    check("code + state + iss in the authorization response",
          params.get("state") == state and "code" in params and params.get("iss") == issuer, str(params))
    check("login form was shown for the dynamic client", seen)
    st, body = code_token(br, meta, pub, params["code"], verifier, RESOURCE)
    check("token exchange (public client, resource=)", st == 200, f"{st} {body}")
    tok = json.loads(body)
    check("access token is a JWT, Bearer", tok["access_token"].count(".") == 2 and tok["token_type"] == "Bearer", body)
    check_at("JWT access token: aud=resource, scope=mcp:tools, sub/iss/exp/iat/client_id",
             tok["access_token"], jwks, issuer, RESOURCE, ["mcp:tools"], pub["client_id"])
    check("refresh token issued (client registered refresh_token grant)", "refresh_token" in tok, body)

    # 3. refresh token grant with resource=
    st, body = token(br, meta, pub, {"grant_type": "refresh_token", "refresh_token": tok["refresh_token"],
                                     "resource": RESOURCE})
    check("refresh with resource=", st == 200, f"{st} {body}")
    check_at("refreshed JWT access token", json.loads(body)["access_token"], jwks, issuer, RESOURCE,
             ["mcp:tools"], pub["client_id"])

    # 4. second authorize: silent SSO, both MCP scopes + an unconfigured scope; token
    #    request WITHOUT resource= reuses the granted resource
    params, state, verifier, seen = authorize(br, meta, pub["client_id"], "mcp:tools mcp:deploy mcp:admin",
                                              RESOURCE)
    check("second authorize is silent (SSO, auto-consent)", not seen and "code" in params, str(params))
    st, body = code_token(br, meta, pub, params["code"], verifier, None)
    check("token exchange without resource= (uses granted resource)", st == 200, f"{st} {body}")
    tok = json.loads(body)
    check_at("JWT has both configured scopes, unconfigured mcp:admin dropped", tok["access_token"], jwks, issuer,
             RESOURCE, MCP_SCOPES, pub["client_id"])
    check("no id_token without openid", "id_token" not in tok, body)
    # registered scopes do not cap a client (MCP step-up asks for more later, SEP-2350): a scope
    # it did not register is granted when the OP has it; unconfigured ones are dropped (above)
    params, _, _, _ = authorize(br, meta, pub["client_id"], "openid mcp:tools", RESOURCE)
    check("a scope beyond the client's registration is granted (step-up)",
          "code" in params and "error" not in params, str(params))

    # 5. unknown resource refused: at /auth (error redirect) and at /token
    params, _, _, _ = authorize(br, meta, pub["client_id"], "mcp:tools", "http://127.0.0.1:18090/unknown")
    check("unknown resource refused at /auth (invalid_target)", params.get("error") == "invalid_target", str(params))
    params, _, verifier, _ = authorize(br, meta, pub["client_id"], "mcp:tools", RESOURCE)
    st, body = code_token(br, meta, pub, params["code"], verifier, "http://127.0.0.1:18090/unknown")
    check("unknown resource refused at /token (invalid_target)", st == 400 and "invalid_target" in body, f"{st} {body}")
    params, _, verifier, _ = authorize(br, meta, pub["client_id"], "mcp:tools", RESOURCE)
    st, body = code_token(br, meta, pub, params["code"], verifier, OTHER_RESOURCE)
    check("configured resource not requested at /auth refused at /token", st == 400, f"{st} {body}")

    # 6. registration as the MCP Python SDK does by default (client_secret_post)
    st, _, body = post_json(br, meta["registration_endpoint"], {
        "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_post",
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "client_name": "mcp smoke (secret)"})
    check("client_secret_post client registered", st == 201 and "client_secret" in json.loads(body), f"{st} {body}")
    conf = json.loads(body)
    params, _, verifier, _ = authorize(br, meta, conf["client_id"], "openid email mcp:deploy", OTHER_RESOURCE)
    st, body = code_token(br, meta, conf, params["code"], verifier, OTHER_RESOURCE)
    check("token exchange (client_secret_post, second resource, openid)", st == 200, f"{st} {body}")
    tok = json.loads(body)
    check_at("JWT for the second resource has only the resource scope", tok["access_token"], jwks, issuer,
             OTHER_RESOURCE, ["mcp:deploy"], conf["client_id"])
    idt = verify_rs256(tok["id_token"], jwks)
    check("id_token issued too (aud=client_id, email)", idt["aud"] == conf["client_id"]
          and idt["email"] == ALICE["email"], json.dumps(idt))

    # 7. registration refuses scopes the OP does not know
    st, _, body = post_json(br, meta["registration_endpoint"], {
        "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "scope": "mcp:admin"})
    check("registration with unknown scope refused (400 invalid_client_metadata)",
          st == 400 and "invalid_client_metadata" in body, f"{st} {body}")


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()
