#!/usr/bin/env python3
"""End-to-end smoke test of provider.mjs without a browser (stdlib only).

    python3 integration/oidc/smoke.py            # starts its own OP from example-config.json
    python3 integration/oidc/smoke.py --issuer http://127.0.0.1:PORT   # use a running OP
                                                                     # (needs example-config.json clients)

Checks: discovery; authorization code + PKCE S256 with state and nonce; login form
(wrong password rejected, then right one); consent skipped; code captured from the
Location header of the redirect to a redirect_uri nothing listens on; token exchange
with client_secret_basic and client_secret_post; RS256 ID token verified against
jwks_uri (pure-Python RSA); claims email/email_verified/name/auth_time/nonce present;
silent SSO on a second authorize; prompt=login forces the form and a newer auth_time;
PKCE is required; RP-initiated logout; token-endpoint fault injection (500).
Prints the ID token claims and 'N passed, 0 failed' at the end; exits non-zero on failure.
"""
import argparse
import base64
import hashlib
import html.parser
import http.cookiejar
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = json.load(open(os.path.join(HERE, "example-config.json")))
BASIC = CONFIG["clients"][0]
POST = CONFIG["clients"][1]
ALICE = CONFIG["accounts"][0]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_dec(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


class Browser:
    """Cookie-keeping HTTP client that does NOT follow redirects by itself."""

    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def request(self, url, data=None, headers=None):
        body = urllib.parse.urlencode(data).encode() if isinstance(data, dict) else data
        req = urllib.request.Request(url, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def follow(self, url, data=None, stop_prefix=None, max_hops=15):
        """Follow redirects until a non-3xx answer or a Location starting with stop_prefix."""
        for _ in range(max_hops):
            status, headers, body = self.request(url, data)
            data = None
            if status in (301, 302, 303, 307, 308):
                loc = urllib.parse.urljoin(url, headers["Location"])
                if stop_prefix and loc.startswith(stop_prefix):
                    return "stopped", loc, body
                url = loc
                continue
            return status, url, body
        raise AssertionError("too many redirects")


class FormParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "form":
            self.forms.append({"action": a.get("action"), "id": a.get("id"), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")


def parse(body):
    p = FormParser()
    p.feed(body)
    return p


def verify_rs256(jwt, jwks):
    h, p, s = jwt.split(".")
    header = json.loads(b64u_dec(h))
    assert header["alg"] == "RS256", header
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    n = int.from_bytes(b64u_dec(key["n"]), "big")
    e = int.from_bytes(b64u_dec(key["e"]), "big")
    k = (n.bit_length() + 7) // 8
    em = pow(int.from_bytes(b64u_dec(s), "big"), e, n).to_bytes(k, "big")
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420")
    digest = hashlib.sha256(f"{h}.{p}".encode()).digest()
    expected = b"\x00\x01" + b"\xff" * (k - 3 - len(digest_info) - len(digest)) + b"\x00" + digest_info + digest
    assert em == expected, "bad RS256 signature"
    return json.loads(b64u_dec(p))


PASSED = []


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"FAIL {name} {detail}")
    PASSED.append(name)
    print(f"ok   {name}")


def authorize(br, disc, client, extra=None, login=True, password=None):
    """Run one authorization; returns (code, state, nonce, verifier, login_form_seen)."""
    verifier = b64u(secrets.token_bytes(32))
    state, nonce = b64u(secrets.token_bytes(12)), b64u(secrets.token_bytes(12))
    redirect_uri = client["redirect_uris"][0]
    q = {"response_type": "code", "client_id": client["client_id"], "redirect_uri": redirect_uri,
         "scope": "openid email profile", "state": state, "nonce": nonce,
         "code_challenge": b64u(hashlib.sha256(verifier.encode()).digest()),
         "code_challenge_method": "S256", **(extra or {})}
    res, url, body = br.follow(disc["authorization_endpoint"] + "?" + urllib.parse.urlencode(q),
                               stop_prefix=redirect_uri)
    form_seen = False
    if res != "stopped":
        check("login form shown", res == 200 and {"login", "password", "submit"} <= parse(body).ids,
              f"{res} {url} {body[:300]}")
        form_seen = True
        action = urllib.parse.urljoin(url, parse(body).forms[0]["action"])
        if password is not None:  # a wrong password first
            st, _, body2 = br.request(action, {"login": ALICE["email"], "password": password})
            check("wrong password rejected", st == 200 and 'id="error"' in body2)
        res, url, body = br.follow(action, {"login": ALICE["email"], "password": ALICE["password"]},
                                   stop_prefix=redirect_uri)
    check("redirected to redirect_uri", res == "stopped", f"{res} {url} {body[:300]}")
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    check("state echoed, code present", params.get("state") == state and "code" in params, str(params))
    return params["code"], nonce, verifier, form_seen


def token(br, disc, client, code, verifier):
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": client["redirect_uris"][0], "code_verifier": verifier}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if client["token_endpoint_auth_method"] == "client_secret_basic":
        cred = f"{urllib.parse.quote(client['client_id'], safe='')}:{urllib.parse.quote(client['client_secret'], safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
    else:
        data.update(client_id=client["client_id"], client_secret=client["client_secret"])
    return br.request(disc["token_endpoint"], urllib.parse.urlencode(data).encode(), headers)


def start_provider(config_path):
    """Starts provider.mjs with this configuration on a free port: (process, issuer)."""
    port_file = os.path.join(tempfile.mkdtemp(), "port")
    proc = subprocess.Popen(["node", os.path.join(HERE, "provider.mjs"), "--config", config_path,
                             "--port", "0", "--port-file", port_file])
    for _ in range(100):
        if os.path.exists(port_file):
            break
        time.sleep(0.1)
    return proc, "http://127.0.0.1:" + open(port_file).read().strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--issuer")
    args = ap.parse_args()
    proc = None
    if args.issuer:
        issuer = args.issuer.rstrip("/")
    else:
        proc, issuer = start_provider(os.path.join(HERE, "example-config.json"))
    failed = 0
    try:
        run(issuer)
    except AssertionError as e:
        print(e, file=sys.stderr)
        failed = 1
    finally:
        if proc:
            proc.terminate()
            rc = proc.wait(10)
            if rc == 0:
                PASSED.append("OP exits cleanly on SIGTERM")
                print("ok   OP exits cleanly on SIGTERM")
            else:
                print(f"FAIL OP exit code {rc} after SIGTERM", file=sys.stderr)
                failed += 1
    print(f"{len(PASSED)} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def run(issuer):
    br = Browser()
    st, _, body = br.request(issuer + "/.well-known/openid-configuration")
    disc = json.loads(body)
    check("discovery", st == 200 and disc["issuer"] == issuer and all(
        k in disc for k in ("jwks_uri", "authorization_endpoint", "token_endpoint", "end_session_endpoint")))
    jwks = json.loads(br.request(disc["jwks_uri"])[2])

    # 1. full flow, client_secret_basic
    code, nonce, verifier, seen = authorize(br, disc, BASIC, password="wrong")
    st, _, body = token(br, disc, BASIC, code, verifier)
    check("token exchange (client_secret_basic)", st == 200, body)
    tok = json.loads(body)
    claims = verify_rs256(tok["id_token"], jwks)
    print(json.dumps(claims, indent=2))
    check("id token claims", claims["iss"] == issuer and claims["aud"] == BASIC["client_id"]
          and claims["sub"] == ALICE["sub"] and claims["email"] == ALICE["email"]
          and claims["email_verified"] is True and claims["name"] == ALICE["name"]
          and claims["nonce"] == nonce and "auth_time" in claims, str(claims))
    st, _, body = token(br, disc, BASIC, code, verifier)
    check("code is single-use", st == 400 and "invalid_grant" in body, body)
    first_auth_time = claims["auth_time"]

    # 2. silent SSO (session cookie), client_secret_post client
    code, nonce, verifier, seen = authorize(br, disc, POST)
    check("second authorize is silent (SSO)", not seen)
    st, _, body = token(br, disc, POST, code, verifier)
    check("token exchange (client_secret_post)", st == 200, body)
    claims = verify_rs256(json.loads(body)["id_token"], jwks)
    check("SSO keeps auth_time", claims["auth_time"] == first_auth_time)
    # wrong auth method for the client is refused (fresh code, so only client auth can fail)
    code, nonce, verifier, _ = authorize(br, disc, POST)
    st, _, body = token(br, disc, dict(POST, token_endpoint_auth_method="client_secret_basic"), code, verifier)
    check("client_secret_basic refused for a client_secret_post client", st == 401 and "invalid_client" in body,
          f"{st} {body}")
    st, _, body = token(br, disc, dict(BASIC, token_endpoint_auth_method="client_secret_post"), code, verifier)
    check("client_secret_post refused for a client_secret_basic client", st == 401 and "invalid_client" in body,
          f"{st} {body}")

    # 3. prompt=login forces re-authentication
    time.sleep(1.1)
    code, nonce, verifier, seen = authorize(br, disc, BASIC, extra={"prompt": "login"})
    check("prompt=login shows the form again", seen)
    claims = verify_rs256(json.loads(token(br, disc, BASIC, code, verifier)[2])["id_token"], jwks)
    check("prompt=login gives newer auth_time", claims["auth_time"] > first_auth_time,
          f"{claims['auth_time']} vs {first_auth_time}")

    # 4. PKCE is required
    q = {"response_type": "code", "client_id": BASIC["client_id"], "redirect_uri": BASIC["redirect_uris"][0],
         "scope": "openid", "state": "s"}
    res, url, body = br.follow(disc["authorization_endpoint"] + "?" + urllib.parse.urlencode(q),
                               stop_prefix=BASIC["redirect_uris"][0])
    check("authorize without PKCE is refused", res == "stopped" and "error=invalid_request" in url, url)

    # 5. RP-initiated logout (id_token_hint + post_logout_redirect_uri + state)
    code, nonce, verifier, _ = authorize(br, disc, BASIC)
    id_token = json.loads(token(br, disc, BASIC, code, verifier)[2])["id_token"]
    plr = BASIC["post_logout_redirect_uris"][0]
    q = {"id_token_hint": id_token, "post_logout_redirect_uri": plr, "state": "bye"}
    st, url, body = br.follow(disc["end_session_endpoint"] + "?" + urllib.parse.urlencode(q), stop_prefix=plr)
    p = parse(body)
    check("logout confirmation page", st == 200 and "logout-yes" in p.ids and p.forms, body[:300])
    f = p.forms[0]
    res, url, body = br.follow(urllib.parse.urljoin(url, f["action"]), dict(f["fields"], logout="yes"),
                               stop_prefix=plr)
    check("logout redirects to post_logout_redirect_uri with state", res == "stopped" and "state=bye" in url, url)
    _, _, _, seen = authorize(br, disc, BASIC)
    check("after logout the login form is shown again", seen)

    # 6. fault injection on the token endpoint
    code, nonce, verifier, _ = authorize(br, disc, BASIC)
    br.request(issuer + "/__admin/fault?token=500", b"")
    st, _, body = token(br, disc, BASIC, code, verifier)
    check("fault mode: token endpoint answers 500", st == 500, f"{st} {body}")
    br.request(issuer + "/__admin/fault?token=none", b"")
    st, _, body = token(br, disc, BASIC, code, verifier)
    check("fault cleared: token exchange works again", st == 200, f"{st} {body}")


if __name__ == "__main__":
    main()
