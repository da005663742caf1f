"""An MCP client (official Python SDK) with its OAuth client provider, against the gateway: it
gets the 401 challenge, reads the protected resource metadata, registers itself with the
authorization server, signs in (the login form filled here, as a user would), gets a token for
the resource and lists and calls tools. Prints JSON: the tool names and the call's result, or the
error.

    python mcp_client.py --url http://127.0.0.1:PORT/mcp --login alice@example.com --password PW
        [--tool read_docs] [--scope "mcp:tools"] [--mode auto|legacy]

`--mode auto` (the SDK's default) probes `server/discover` and sends `Mcp-Method`/`Mcp-Name`
headers; `legacy` makes the 2025 `initialize` handshake without them. The output also lists every
exchange with the gateway (method, `Mcp-Method`, `Mcp-Name`, status), so a test can see the
challenges and the step-up, and the gateway's `/.well-known/` documents the SDK fetched, in order.
"""

import argparse
import asyncio
import json
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oidc"))
from smoke import Browser, parse  # noqa: E402  (the OP's own login-form driver)

import httpx2  # noqa: E402
from mcp.client._probe import negotiate_auto  # noqa: E402
from mcp.client.auth import OAuthClientProvider  # noqa: E402
from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata  # noqa: E402

REDIRECT = "http://127.0.0.1:9/callback"  # nothing listens: the redirect is read, not followed


class Memory:
    def __init__(self):
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, info):
        self.client = info


async def run(args):
    browser = Browser()
    landed = {}

    async def redirect_handler(url):
        landed.clear()
        status, where, body = browser.follow(url, stop_prefix=REDIRECT)
        if status != "stopped":
            form = parse(body)
            action = urllib.parse.urljoin(where, form.forms[0]["action"])
            status, where, body = browser.follow(
                action, {"login": args.login, "password": args.password}, stop_prefix=REDIRECT
            )
        landed.update(urllib.parse.parse_qsl(urllib.parse.urlsplit(where).query))

    async def callback_handler():
        return AuthorizationCodeResult(
            code=landed.get("code", ""), state=landed.get("state"), iss=landed.get("iss")
        )

    auth = OAuthClientProvider(
        server_url=args.url,
        client_metadata=OAuthClientMetadata(
            client_name="authgate-test",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            scope=args.scope,
            token_endpoint_auth_method="none",
        ),
        storage=Memory(),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    out = {"exchanges": [], "discovery": []}
    origin = "{0.scheme}://{0.netloc}/.well-known/".format(urllib.parse.urlsplit(args.url))

    async def record(response):
        request = response.request
        if str(request.url).startswith(origin):
            out["discovery"].append({"url": str(request.url), "status": response.status_code})
        if str(request.url).startswith(args.url):
            out["exchanges"].append({
                "method": request.method,
                "mcp_method": request.headers.get("mcp-method"),
                "mcp_name": request.headers.get("mcp-name"),
                "status": response.status_code,
                "challenge": response.headers.get("www-authenticate"),
            })

    hooks = {"response": [record]}
    async with httpx2.AsyncClient(auth=auth, timeout=20, event_hooks=hooks) as http:
        async with streamable_http_client(args.url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                if args.mode == "legacy":
                    await session.initialize()
                else:
                    await negotiate_auto(session)
                tools = await session.list_tools()
                out["tools"] = sorted(t.name for t in tools.tools)
                result = await session.call_tool(args.tool, {"topic": "x", "version": "1.2.3"})
                out["is_error"] = bool(result.isError) if hasattr(result, "isError") else None
                out["text"] = " ".join(
                    getattr(c, "text", "") for c in result.content
                )
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--login", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--tool", default="read_docs")
    parser.add_argument("--scope", default="mcp:tools")
    parser.add_argument("--mode", choices=["auto", "legacy"], default="auto")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
