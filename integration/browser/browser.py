#!/usr/bin/env python3
"""Headless Chromium driver for authgate's OIDC integration tests.

Debian `chromium` + `chromium-driver` (see install.sh) driven by PyPI selenium
(requirements.txt). Each Browser gets a throwaway profile dir, so no state leaks
between runs. When the OpenID Provider's login form shows up (input#login,
input#password, button#submit — see ../oidc/provider.mjs) it is filled
automatically if credentials were given.

CLI (prints one JSON document on stdout, diagnostics on stderr):

    browser.py [--login USER --password PW] [--timeout S] [--no-auto-login]
               [--all-cookies] [--screenshot-dir DIR] ACTION...

    ACTION is a sequence of:
      open URL          navigate the current tab, settle, auto-login
      tabs URL...  --   open each URL in its own new tab at once (no waiting),
                        then settle + auto-login each tab in order
      click ID          click the element with that id (e.g. a form's submit button)
      fill ID VALUE     type VALUE into input#ID
      login             fill the login form now (even with --no-auto-login)
      wait-url PREFIX   wait until the current URL starts with PREFIX
      sleep SECONDS
    A bare URL as the first action means `open URL`.

Output:
    {"ok": true, "steps": [SNAPSHOT, ...], "final": SNAPSHOT}
    SNAPSHOT = {"action": "...", "url": final URL, "status": HTTP status of the
      final top-level document or null, "title": ..., "text": body innerText,
      "cookies": [{name, value, domain, path, httpOnly, secure, sameSite, expiry?}]
        for the final origin, "logins": times the login form was submitted in
      this step, "login_form": true if the page is (still) the login form,
      "hops": [{"url", "status", "location"?}] top-level document requests of the
      step in order (redirects included), "tab": window handle}
    a `tabs` step has "tabs": [SNAPSHOT per tab] instead.
    On error: {"ok": false, "error": "...", "steps": [...], "final": SNAPSHOT}
    and exit status 1.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                        WebDriverException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = os.environ.get("AUTHGATE_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AUTHGATE_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager try to download anything


def log(*a):
    print("[browser]", *a, file=sys.stderr, flush=True)


class Browser:
    def __init__(self, login=None, password=None, timeout=20.0, auto_login=True,
                 all_cookies=False, screenshot_dir=None, window_size="1280,900"):
        self.login_user, self.password = login, password
        self.timeout, self.auto_login = timeout, auto_login
        self.all_cookies, self.screenshot_dir = all_cookies, screenshot_dir
        self.profile = tempfile.mkdtemp(prefix="authgate-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
                    "--password-store=basic", "--disable-extensions", "--disable-background-networking",
                    "--disable-sync", "--disable-component-update", "--disable-features=Translate,MediaRouter",
                    f"--window-size={window_size}"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        self.driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(timeout)
        self.driver.execute_cdp_cmd("Network.enable", {})
        self._events = {}  # window handle -> list of perf events not yet consumed
        self._shot = 0

    def close(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------- internals
    def _drain_perf(self):
        """Move performance-log events into per-tab buckets (log is global to the session)."""
        try:
            entries = self.driver.get_log("performance")
        except WebDriverException:
            return
        for e in entries:
            msg = json.loads(e["message"])["message"]
            if msg.get("method") not in ("Network.requestWillBeSent", "Network.responseReceived"):
                continue
            p = msg["params"]
            if p.get("type") != "Document":
                continue
            self._events.setdefault(p.get("frameId"), []).append(msg)

    def _hops(self, handle):
        """Top-level document requests of tab `handle` since the last call."""
        self._drain_perf()
        hops = []
        for msg in self._events.pop(handle, []):
            p = msg["params"]
            if msg["method"] == "Network.requestWillBeSent":
                rr = p.get("redirectResponse")
                if rr and hops and hops[-1]["url"] == rr["url"] and hops[-1]["status"] is None:
                    hops[-1]["status"] = rr["status"]
                    hops[-1]["location"] = p["request"]["url"]
                hops.append({"url": p["request"]["url"], "method": p["request"]["method"], "status": None})
            else:
                r = p["response"]
                for h in reversed(hops):
                    if h["url"] == r["url"] and h["status"] is None:
                        h["status"] = r["status"]
                        break
                else:
                    hops.append({"url": r["url"], "status": r["status"]})
        return hops

    def _is_login_form(self):
        d = self.driver
        try:
            return bool(d.find_elements(By.ID, "login") and d.find_elements(By.ID, "password")
                        and d.find_elements(By.ID, "submit"))
        except WebDriverException:
            return False

    def settle(self, quiet=0.6, until_prefix=None):
        """Wait until the document is complete and the URL has not changed for `quiet` s."""
        d = self.driver
        deadline = time.monotonic() + self.timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            try:
                url = d.current_url
                ready = d.execute_script("return document.readyState") == "complete"
            except WebDriverException:
                url, ready = None, False
            now = time.monotonic()
            if url != last or not ready:
                last, since = url, now
            elif now - since >= quiet and (until_prefix is None or url.startswith(until_prefix)):
                return url
            time.sleep(0.1)
        raise TimeoutError(f"page did not settle within {self.timeout}s (url={last})")

    def fill_login(self):
        if not self.login_user:
            raise RuntimeError("login form shown but no --login/--password given")
        d = self.driver
        d.find_element(By.ID, "login").clear()
        d.find_element(By.ID, "login").send_keys(self.login_user)
        d.find_element(By.ID, "password").send_keys(self.password or "")
        btn = d.find_element(By.ID, "submit")
        before = d.current_url
        btn.click()
        self._wait_left(btn, before)
        log("login form submitted at", before)

    def _wait_left(self, element, before_url):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                element.is_enabled()  # raises once the page was replaced
                if self.driver.current_url != before_url:
                    return
            except StaleElementReferenceException:
                return
            except WebDriverException:
                return
            time.sleep(0.05)

    def _settle_and_login(self, until_prefix=None):
        """Settle; fill the login form whenever it appears (max 3 times). Returns #logins."""
        logins = 0
        while True:
            url = self.settle(until_prefix=None if self.auto_login and self.login_user else until_prefix)
            if self.auto_login and self.login_user and self._is_login_form() and logins < 3:
                # if the previous submit showed the form again the password was wrong
                if logins and self.driver.find_elements(By.ID, "error"):
                    return logins
                self.fill_login()
                logins += 1
                continue
            if until_prefix and not url.startswith(until_prefix):
                self.settle(until_prefix=until_prefix)
            return logins

    def snapshot(self, action, logins=0):
        d = self.driver
        handle = d.current_window_handle
        hops = self._hops(handle)
        status = None
        for h in reversed(hops):
            if h.get("status") is not None and h["url"] == d.current_url:
                status = h["status"]
                break
        try:
            text = d.execute_script("return document.body ? document.body.innerText : ''")
        except WebDriverException:
            text = None
        if self.all_cookies:
            cookies = d.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
        else:
            cookies = d.get_cookies()
        snap = {"action": action, "tab": handle, "url": d.current_url, "status": status,
                "title": d.title, "text": text, "cookies": cookies, "logins": logins,
                "login_form": self._is_login_form(), "hops": hops}
        if self.screenshot_dir:
            os.makedirs(self.screenshot_dir, exist_ok=True)
            self._shot += 1
            path = os.path.join(self.screenshot_dir, f"{self._shot:02d}.png")
            d.save_screenshot(path)
            snap["screenshot"] = path
        return snap

    # ------------------------------------------------------------- actions
    def open(self, url, until_prefix=None):
        self._hops(self.driver.current_window_handle)  # forget older events
        self.driver.get(url)
        return self.snapshot(f"open {url}", self._settle_and_login(until_prefix))

    def click(self, element_id):
        d = self.driver
        el = d.find_element(By.ID, element_id)
        before = d.current_url
        el.click()
        self._wait_left(el, before)
        return self.snapshot(f"click {element_id}", self._settle_and_login())

    def fill(self, element_id, value):
        el = self.driver.find_element(By.ID, element_id)
        el.clear()
        el.send_keys(value)
        return self.snapshot(f"fill {element_id}")

    def login(self):
        self.fill_login()
        return self.snapshot("login", 1 + self._settle_and_login())

    def wait_url(self, prefix):
        self.settle(until_prefix=prefix)
        return self.snapshot(f"wait-url {prefix}")

    def tabs(self, urls):
        """Open every URL in a new tab without waiting (all sign-ins start at once),
        then settle/auto-login the tabs one after the other."""
        d = self.driver
        handles = []
        for url in urls:
            d.switch_to.new_window("tab")
            d.execute_script("window.location.href = arguments[0];", url)  # non-blocking
            handles.append(d.current_window_handle)
        snaps = []
        for h, url in zip(handles, urls):
            d.switch_to.window(h)
            snaps.append(self.snapshot(f"tab {url}", self._settle_and_login()))
        return {"action": "tabs", "tabs": snaps, **{k: snaps[-1][k] for k in ("url", "status", "tab")}}


def parse_actions(tokens):
    acts, i = [], 0
    if tokens and tokens[0].startswith(("http://", "https://")):
        tokens = ["open"] + tokens
    while i < len(tokens):
        t = tokens[i]
        if t in ("open", "click", "wait-url", "sleep"):
            acts.append((t, tokens[i + 1]))
            i += 2
        elif t == "fill":
            acts.append((t, tokens[i + 1], tokens[i + 2]))
            i += 3
        elif t == "login":
            acts.append((t,))
            i += 1
        elif t == "tabs":
            j = i + 1
            while j < len(tokens) and tokens[j] != "--":
                j += 1
            acts.append((t, tokens[i + 1:j]))
            i = j + 1
        else:
            raise SystemExit(f"unknown action {t!r}")
    return acts


def run(browser, actions, steps):
    for act in actions:
        name = act[0]
        log("action", *[a if isinstance(a, str) else " ".join(a) for a in act])
        if name == "open":
            steps.append(browser.open(act[1]))
        elif name == "click":
            steps.append(browser.click(act[1]))
        elif name == "fill":
            steps.append(browser.fill(act[1], act[2]))
        elif name == "login":
            steps.append(browser.login())
        elif name == "wait-url":
            steps.append(browser.wait_url(act[1]))
        elif name == "sleep":
            time.sleep(float(act[1]))
        elif name == "tabs":
            steps.append(browser.tabs(act[1]))
    return steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--login")
    ap.add_argument("--password")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--no-auto-login", action="store_true")
    ap.add_argument("--all-cookies", action="store_true", help="report every cookie, not only the final origin's")
    ap.add_argument("--screenshot-dir")
    ap.add_argument("actions", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    actions = parse_actions(a.actions)
    if not actions:
        ap.error("no actions")
    out = {"ok": True, "steps": []}
    with Browser(a.login, a.password, a.timeout, not a.no_auto_login, a.all_cookies, a.screenshot_dir) as b:
        try:
            run(b, actions, out["steps"])
        except Exception as e:  # report what we have, as JSON
            out.update(ok=False, error=f"{type(e).__name__}: {e}")
            try:
                out["final"] = b.snapshot("error")
            except Exception:
                pass
        if "final" not in out and out["steps"]:
            out["final"] = out["steps"][-1]
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
