#!/usr/bin/env python3
"""Writes the hand-made seed corpus under fuzz/corpus/<target>/ (except `decide`, whose seeds
are libFuzzer-found inputs: its input is an `arbitrary`-decoded structure, not text).

Run from anywhere: python3 fuzz/scripts/make_seeds.py. Fixture tokens and the JWKS are read from
wasm-tests/tests/fixtures/mod.rs, so the seeds follow when the fixtures are regenerated."""

import base64
import json
import re
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent.parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"

fixtures_rs = (ROOT / "wasm-tests/tests/fixtures/mod.rs").read_text()
consts = {
    name: json.loads(value)
    for name, value in re.findall(r'pub const (\w+): &str = ("(?:[^"\\]|\\.)*");', fixtures_rs)
}
TOKENS = {k: v for k, v in consts.items() if k.startswith("TOKEN_")}
JWKS = json.loads(consts["JWKS"])
ISSUER = consts["ISSUER"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, claims: dict, sig: bytes = b"sig") -> str:
    return ".".join(b64(json.dumps(p, separators=(",", ":")).encode()) for p in (header, claims)) + "." + b64(sig)


def write(target: str, name: str, data):
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = json.dumps(data, indent=1).encode()
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# --- tokens: jwt_inspect and jwt_verify -------------------------------------------------------
claims = {"iss": ISSUER, "aud": "gateway", "sub": "alice", "exp": 4102444800, "iat": 1000000000}
extra_tokens = {
    "alg_none": unsigned({"alg": "none"}, claims, b""),
    "crit": unsigned({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]}, claims),
    "embedded_jwk": unsigned({"alg": "ES256", "jwk": {"kty": "EC"}}, claims),
    "jku": unsigned({"alg": "RS256", "jku": "https://evil.test/jwks"}, claims),
    "hs256_kid_rsa": unsigned({"alg": "HS256", "kid": "rsa-1"}, claims),
    "duplicate_member": b64(b'{"alg":"RS256","alg":"none"}') + "." + b64(json.dumps(claims).encode()) + ".c2ln",
    "four_parts": "a.b.c.d",
}
for name, token in {**{k.lower(): v for k, v in TOKENS.items()}, **extra_tokens}.items():
    write("jwt_inspect", name, token)
    write("jwt_verify", name, token)

# --- JWKS: jwks_parse -------------------------------------------------------------------------
write("jwks_parse", "fixture_jwks.json", JWKS)
for key in JWKS["keys"]:
    write("jwks_parse", f"single_{key['kid']}.json", {"keys": [key]})
rsa = next(k for k in JWKS["keys"] if k["kty"] == "RSA")
write("jwks_parse", "rsa_no_alg_no_kid.json", {"keys": [{k: v for k, v in rsa.items() if k not in ("alg", "kid")}]})
write("jwks_parse", "rsa_e3.json", {"keys": [{**rsa, "e": "Aw", "kid": "e3"}]})
write("jwks_parse", "rsa_short.json", {"keys": [{**rsa, "n": rsa["n"][:40], "kid": "short"}]})
write("jwks_parse", "unknown_kty.json", {"keys": [{"kty": "XYZ", "kid": "x"}, {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]})

# --- configurations: config_parse -------------------------------------------------------------
readme_example = {
    "jwt_providers": {"corp": {
        "issuer": "https://idp.example.com/realms/corp", "audiences": ["gateway"],
        "remote_jwks": {"cluster": "idp", "uri": "https://idp.example.com/realms/corp/certs",
                        "timeout_ms": 2000, "cache_duration_s": 600},
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        "from_cookies": ["session"], "clock_skew_s": 60, "require_expiration": True,
        "forward": False, "claim_to_headers": [{"claim": "tenant.id", "header": "x-tenant"}],
        "subject_claims": {"subject": "sub", "email": "email", "roles": "realm_access.roles",
                           "scopes": "scope"}}},
    "api_keys": {"headers": ["x-api-key"], "forward": False, "keys": [
        {"id": "ci", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
         "principal": "svc:ci", "scopes": ["deploy", "read"], "expires_at": "2027-01-01T00:00:00Z",
         "active": True}]},
    "opaque_tokens": "reject",
    "rules": [
        {"match": {"path": "/status"}, "public": True},
        {"match": {"prefix": "/v1/", "methods": ["POST"], "hosts": ["*.example.com"]},
         "requires_any": ["jwt:corp", "api_key"], "require_scopes": ["llm:invoke"],
         "require_roles": ["user"], "enterprise": True, "session_reply": "api"}],
    "enterprise": {"cluster": "authz", "authority": "authz.internal", "path": "/api/authorize",
                   "timeout_ms": 5000, "dialect": "authgate", "failure_mode": "deny",
                   "status_on_error": 503,
                   "cache": {"allow_ttl_s": 60, "deny_ttl_s": 10, "max_entries": 10000},
                   "max_response_bytes": 65536},
    "failed_auth_backoff": {"after_failures": 5, "base_s": 2, "max_s": 300, "slots": 16384},
    "client_ip": {"from": "source"},
    "health_path": "/health",
    "cors": {"bypass_preflight": True},
    "identity_headers": {"prefix": "x-auth-"},
    "session": {"reauth_url": "https://sso.example.com/reauth",
                "message": "Your session has expired. Open {reauth_url} to sign in again, then retry.",
                "sandbox_status": 200, "hold_companion": False, "redirect_html": False},
}
write("config_parse", "readme_example.json", readme_example)
envoy_yaml = (ROOT / "envoy/envoy.yaml").read_text()
match = re.search(r"value: \|\n((?:\s{20}.*\n)+)", envoy_yaml)
if match:
    write("config_parse", "envoy_yaml.json", "\n".join(l[20:] for l in match.group(1).splitlines()))
write("config_parse", "body_hold.json", '{"role": "body_hold"}')
write("config_parse", "local_jwks_string.json", {
    "jwt_providers": {"corp": {"issuer": ISSUER, "audiences": ["gateway"], "local_jwks": json.dumps(JWKS)}},
    "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:corp"]}], "health_path": "/health"})
write("config_parse", "openfga_xff.json", {
    "jwt_providers": {"corp": {"issuer": ISSUER, "local_jwks": JWKS}},
    "opaque_tokens": "enterprise",
    "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:corp", "opaque_token"], "enterprise": True,
               "session_reply": "anthropic"}],
    "enterprise": {"cluster": "fga", "authority": "fga:8080", "dialect": "openfga", "failure_mode": "allow_stale",
                   "openfga": {"store_id": "01HSTORE", "authorization_model_id": "m1",
                               "user": "user:{subject.id}", "relation": "can_{request.method}",
                               "object": "route:{request.host}{request.path}"}},
    "client_ip": {"from": "x-forwarded-for", "trusted_hops": 2}})
write("config_parse", "bad_provider_case.json",
      '{"jwt_providers": {"corp": {"issuer": "x", "local_jwks": {"keys": []}}}, "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:Corp"]}]}')

# --- authorization answers: authz_answer (2 bytes pick the status, then the body) ----------------
ok = b"\x00\x00"
write("authz_answer", "allow_headers", ok + json.dumps({"authorized": True, "headers": {"x-tenant": "acme", "Host": "evil", "x-bad": "a\nb"}, "cache_ttl_s": 30}).encode())
write("authz_answer", "deny_reason", ok + json.dumps({"authorized": False, "reason": "no seat\u0007 left"}).encode())
write("authz_answer", "expired", ok + json.dumps({"authorized": False, "session": {"status": "expired", "reauth_url": "https://sso.example.com/re"}}).encode())
write("authz_answer", "openfga_allowed", ok + b'{"allowed": true, "resolution": ""}')
write("authz_answer", "timeout", b"\x05\x00upstream request timeout")
write("authz_answer", "status_403", b"\x06\x00{}")
write("authz_answer", "other_status", b"\x07\x2a{\"authorized\": true}")
write("authz_answer", "not_json", ok + b"<html>bad gateway</html>")

# --- request bodies: llm_reply (1 flag byte, then the body) -------------------------------------
bodies = {
    "chat": {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]},
    "chat_stream_usage": {"model": "gpt-5", "stream": True, "stream_options": {"include_usage": True}, "messages": []},
    "completions_stream": {"model": "gpt-3.5-turbo-instruct", "prompt": "x", "stream": True},
    "responses": {"model": "o4", "input": "hello", "stream": True},
    "anthropic": {"model": "claude-sonnet-4", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
    "anthropic_stream": {"model": "claude-sonnet-4", "stream": True, "messages": []},
    "hostile_model": {"model": "m\n\ndata: [DONE]\u2028\"", "stream": True},
    "stream_not_bool": {"model": 7, "stream": "yes"},
}
for i, (name, body) in enumerate(bodies.items()):
    write("llm_reply", name, bytes([i * 3 % 16]) + json.dumps(body).encode())
write("llm_reply", "not_json_hint", b"\x0f{not json")

# --- Montgomery differential: rsa_modpow (8 bytes e, 1 byte n length, n, base) ------------------
def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


n = unb64(rsa["n"])
signature = unb64(TOKENS["TOKEN_RS256"].split(".")[2])
# The target takes moduli up to 64 bytes: the low 64 bytes of rsa-1's n (still odd).
write("rsa_modpow", "rs256_like", struct.pack("<Q", 65537) + bytes([64]) + n[-64:] + signature[-64:])
write("rsa_modpow", "e3_small", struct.pack("<Q", 3) + bytes([9]) + bytes.fromhex("c30000000000000011") + b"\x05" * 9)
write("rsa_modpow", "e_max_top_limb_small", struct.pack("<Q", 2**64 - 1) + bytes([13]) + bytes.fromhex("01ffffffffffffffffffffffff") + b"\xff" * 13)
