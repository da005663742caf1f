#!/usr/bin/env python3
"""Verifies browser.py against the real OP (../oidc/provider.mjs).

    python3 integration/browser/selfcheck.py     # needs selenium (requirements.txt),
                                                 # chromium + chromedriver (install.sh),
                                                 # and `npm ci --prefix integration/oidc`

Starts the OP on a free port and a tiny "relying party" echo server (stdlib
http.server) whose /cb page shows the query string, then drives headless Chromium
through: login via the form, SSO, several tabs at once, prompt=login, clicking a
button on the final page (RP-initiated logout), and the CLI. Ends with
'N passed, N failed'.
"""
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import browser  # noqa: E402

PASSED, FAILED = [], []


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f"  {detail}"), flush=True)


class Echo(http.server.BaseHTTPRequestHandler):
    op = None  # issuer, set later

    def log_message(self, fmt, *a):
        pass

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        body = f"""<!DOCTYPE html><html><head><title>echo {u.path}</title></head><body>
<p id="path">{u.path}</p><pre id="query">{json.dumps(q, sort_keys=True)}</pre>
<form method="get" action="{Echo.op}/session/end">
  <input type="hidden" name="client_id" value="rp">
  <input type="hidden" name="post_logout_redirect_uri" value="http://{self.headers['Host']}/signed-out">
  <input type="hidden" name="state" value="bye">
  <button id="logout" type="submit">Sign out</button>
</form></body></html>"""
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Set-Cookie", "rp_seen=1; Path=/; HttpOnly; SameSite=Lax")
        self.end_headers()
        self.wfile.write(body.encode())


def authorize_url(issuer, rp, state, prompt=None):
    q = {"response_type": "code", "client_id": "rp", "redirect_uri": f"{rp}/cb", "scope": "openid email profile",
         "state": state, "nonce": "n-" + state, "code_challenge_method": "S256",
         "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}
    if prompt:
        q["prompt"] = prompt
    return f"{issuer}/auth?" + urllib.parse.urlencode(q)


def query_of(snap):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(snap["url"]).query))


def main():
    echo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    rp = f"http://127.0.0.1:{echo.server_address[1]}"
    threading.Thread(target=echo.serve_forever, daemon=True).start()

    tmp = tempfile.mkdtemp()
    cfg = {"clients": [{"client_id": "rp", "client_secret": "rp-secret", "redirect_uris": [f"{rp}/cb"],
                        "post_logout_redirect_uris": [f"{rp}/signed-out"],
                        "token_endpoint_auth_method": "client_secret_basic"}],
           "accounts": [{"sub": "alice", "email": "alice@example.com", "email_verified": True,
                         "name": "Alice Example", "password": "alice-pw"}]}
    json.dump(cfg, open(f"{tmp}/op.json", "w"))
    op = subprocess.Popen(["node", os.path.join(HERE, "..", "oidc", "provider.mjs"), "--config", f"{tmp}/op.json",
                           "--host", "127.0.0.2", "--port", "0", "--port-file", f"{tmp}/port"], stderr=open(f"{tmp}/op.log", "w"))
    for _ in range(100):
        if os.path.exists(f"{tmp}/port"):
            break
        time.sleep(0.1)
    # OP on 127.0.0.2, RP on 127.0.0.1: cookies ignore ports, so a different host keeps
    # the OP's cookies (_session, _interaction...) out of the RP's jar, and makes the
    # OP -> RP redirect cross-site as in production (SameSite matters).
    issuer = "http://127.0.0.2:" + open(f"{tmp}/port").read().strip()
    Echo.op = issuer
    t0 = time.monotonic()
    try:
        with browser.Browser(login="alice@example.com", password="alice-pw", timeout=20) as b:
            print(f"browser started in {time.monotonic() - t0:.1f}s", flush=True)
            s = b.open(authorize_url(issuer, rp, "s1"))
            q = query_of(s)
            check("login via form lands on redirect_uri with code+state",
                  s["url"].startswith(f"{rp}/cb") and q.get("state") == "s1" and "code" in q and s["logins"] == 1,
                  json.dumps(s)[:600])
            check("status of final page known", s["status"] == 200, s["status"])
            check("hops show the 303s", [h["status"] for h in s["hops"]].count(303) >= 2, s["hops"])
            check("page text has the query", '"state": "s1"' in s["text"], s["text"])
            check("cookies of final origin", [c["name"] for c in s["cookies"]] == ["rp_seen"], s["cookies"])

            b.all_cookies = True
            s = b.snapshot("all cookies")
            b.all_cookies = False
            names = sorted((c["domain"], c["name"]) for c in s["cookies"])
            check("all-cookies shows the OP session cookies on 127.0.0.2",
                  ("127.0.0.2", "_session") in names and ("127.0.0.1", "rp_seen") in names, names)
            s = b.open(authorize_url(issuer, rp, "s2"))
            check("second sign-in is silent (SSO)", s["logins"] == 0 and query_of(s).get("state") == "s2", s["url"])

            s = b.open(authorize_url(issuer, rp, "s3", prompt="login"))
            check("prompt=login shows the form again", s["logins"] == 1 and query_of(s).get("state") == "s3", s["url"])

            s = b.click("logout")
            check("click button on final page -> RP-initiated logout -> post_logout_redirect_uri",
                  s["url"].startswith(f"{rp}/signed-out") and query_of(s).get("state") == "bye", json.dumps(s)[:600])

        # several tabs at once, in a fresh browser (not signed in)
        with browser.Browser(login="alice@example.com", password="alice-pw", timeout=20) as b:
            s = b.tabs([authorize_url(issuer, rp, f"t{i}") for i in range(3)])
            states = [query_of(t).get("state") for t in s["tabs"]]
            check("three tabs each end on redirect_uri with their own state", states == ["t0", "t1", "t2"],
                  [t["url"] for t in s["tabs"]])
            check("each tab filled its own login form (forms were shown before any login)",
                  [t["logins"] for t in s["tabs"]] == [1, 1, 1], [t["logins"] for t in s["tabs"]])
            check("tab statuses known", all(t["status"] == 200 for t in s["tabs"]), [t["status"] for t in s["tabs"]])

        # without credentials the login form is reported, not filled
        with browser.Browser(timeout=20, auto_login=False) as b:
            s = b.open(authorize_url(issuer, rp, "x"))
            check("no-auto-login reports the login form", s["login_form"] and s["url"].startswith(issuer), s["url"])
            b.login_user, b.password = "alice@example.com", "wrong"
            s = b.login()
            check("wrong password: still on the form with #error", s["login_form"] and "Invalid" in s["text"], s["text"])

        # the CLI
        t1 = time.monotonic()
        r = subprocess.run([sys.executable, os.path.join(HERE, "browser.py"), "--login", "alice", "--password",
                            "alice-pw", "open", authorize_url(issuer, rp, "cli"), "click", "logout"],
                           capture_output=True, text=True, timeout=120)
        out = json.loads(r.stdout)
        check("CLI: open + login (by sub) + click, JSON out", r.returncode == 0 and out["ok"]
              and query_of(out["steps"][0]).get("state") == "cli"
              and out["final"]["url"].startswith(f"{rp}/signed-out"), r.stdout[:800] + r.stderr[-800:])
        print(f"CLI run took {time.monotonic() - t1:.1f}s", flush=True)
        r = subprocess.run([sys.executable, os.path.join(HERE, "browser.py"), "--timeout", "5", "--login", "alice",
                            "--password", "alice-pw", "click", "nope"], capture_output=True, text=True, timeout=60)
        out = json.loads(r.stdout)
        check("CLI: error gives ok=false JSON and exit 1", r.returncode == 1 and not out["ok"] and "error" in out,
              r.stdout[:400])
    finally:
        op.terminate()
        op.wait(10)
        echo.shutdown()
    print(f"{len(PASSED)} passed, {len(FAILED)} failed")
    if FAILED:
        print(open(f"{tmp}/op.log").read()[-3000:], file=sys.stderr)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
