#!/usr/bin/env node
// A real OpenID Provider (npm oidc-provider) for authgate integration tests.
//
//   node provider.mjs --config op.json [--port 0] [--port-file FILE] [--host 127.0.0.1]
//
// Plain http on 127.0.0.1, issuer http://127.0.0.1:PORT. See README.md for the
// config format, the login page ids and the fault-injection admin endpoint.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    config: { type: 'string' },
    port: { type: 'string', default: '0' },
    'port-file': { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
  },
});
if (!args.config) {
  console.error('usage: node provider.mjs --config FILE [--port N] [--port-file FILE] [--host H]');
  process.exit(2);
}

const cfg = JSON.parse(fs.readFileSync(args.config, 'utf8'));
const accounts = cfg.accounts || [];
const log = (...a) => console.error('[op]', ...a);

// ---------------------------------------------------------------- fault mode
// token endpoint fault: "none" | "500" | "hang" | "delay:MS"
// initial value from env OP_FAULT_TOKEN or config "fault_token"; change at
// run time with POST /__admin/fault?token=500 (or ?token=none).
let tokenFault = process.env.OP_FAULT_TOKEN || cfg.fault_token || 'none';
const hanging = new Set();

// ---------------------------------------------------------------- accounts
function accountByLogin(login) {
  return accounts.find((a) => a.email === login || a.sub === login);
}
async function findAccount(ctx, sub) {
  const a = accounts.find((x) => x.sub === sub);
  if (!a) return undefined;
  return {
    accountId: a.sub,
    async claims() {
      const c = { sub: a.sub };
      if (a.email !== undefined) c.email = a.email;
      if (a.email_verified !== undefined) c.email_verified = a.email_verified;
      if (a.name !== undefined) c.name = a.name;
      Object.assign(c, a.extra_claims || {});
      return c;
    },
  };
}

// ---------------------------------------------------------------- HTML
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (ch) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[ch]));
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body>${body}</body></html>`;

function loginPage(uid, { error, login, clientId, reason } = {}) {
  return page('Sign in', `
<h1 id="title">Sign in</h1>
<p id="client">client: ${esc(clientId)}</p>
${reason ? `<p id="reason">${esc(reason)}</p>` : ''}
${error ? `<p id="error">${esc(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
  <label>Username <input id="login" name="login" type="text" value="${esc(login)}" autofocus></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <button id="submit" type="submit">Sign in</button>
</form>`);
}

// ---------------------------------------------------------------- provider
function makeJwk() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `k-${crypto.randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
}

const SCOPES = ['openid', 'email', 'profile', 'offline_access'];

// ---------------------------------------------------------------- MCP / OAuth resource servers
// Optional config "mcp": {"resources": [...], "scopes": [...], "registration": true,
//   "default_resource": null, "access_token_ttl": 3600}. See README.md.
const mcp = cfg.mcp ? {
  resources: cfg.mcp.resources || [],
  scopes: cfg.mcp.scopes || [],
  registration: cfg.mcp.registration !== false,
  defaultResource: cfg.mcp.default_resource || undefined,
  accessTokenTTL: cfg.mcp.access_token_ttl || undefined,
} : null;
if (mcp) {
  const bad = mcp.resources.filter((r) => { try { return new URL(r).hash !== ''; } catch { return true; } });
  if (bad.length) { console.error('mcp.resources must be absolute URLs without fragment:', bad); process.exit(2); }
  if (mcp.defaultResource && !mcp.resources.includes(mcp.defaultResource)) {
    console.error('mcp.default_resource must be one of mcp.resources'); process.exit(2);
  }
}
// all scope values the OP accepts (client "scope" metadata at /reg is checked against this)
const ALL_SCOPES = [...SCOPES, ...(mcp ? mcp.scopes.filter((s) => !SCOPES.includes(s)) : [])];

function makeProvider(issuer) {
  const clients = (cfg.clients || []).map((c) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    require_auth_time: true, // always put auth_time in the ID token
    ...c,
  }));
  const ttl = { AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 3600,
    Session: 86400, Grant: 86400, RefreshToken: 86400, ...(cfg.ttl || {}) };
  const logoutConfirm = cfg.logout_confirm === true;

  const provider = new Provider(issuer, {
    clients,
    findAccount,
    jwks: { keys: [makeJwk()] },
    cookies: {
      keys: [crypto.randomBytes(32).toString('hex')],
      // plain http: oidc-provider only sets `secure` when the request is https
      long: { httpOnly: true, sameSite: 'lax' },
      short: { httpOnly: true, sameSite: 'lax' },
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    scopes: ALL_SCOPES,
    // MCP mode: a registered client may later ask for more of the resource's scopes. The MCP SDK
    // registers with the scope of the first challenge and steps up from there (403
    // insufficient_scope, SEP-2350); a client's own `scope` metadata would cap it, as most
    // authorization servers' dynamic registration does not.
    ...(mcp ? {
      extraClientMetadata: {
        properties: ['authgate_step_up'],
        validator(ctx, key, value, metadata) {
          const unknown = String(metadata.scope || '').split(' ').filter((v) => v && !ALL_SCOPES.includes(v));
          if (unknown.length) {
            throw new errors.InvalidClientMetadata(`scope must only contain supported scopes: ${unknown.join(' ')}`);
          }
          delete metadata.scope;
        },
      },
    } : {}),
    conformIdTokenClaims: false, // put scope-derived claims (email, name) in the ID token
    pkce: { required: () => true }, // S256 is the only method oidc-provider v9 supports
    responseTypes: ['code'],
    // 'none' (public clients, PKCE) only when the mcp block is configured
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', ...(mcp ? ['none'] : [])],
    enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
    ttl,
    features: {
      devInteractions: { enabled: false },
      // RFC 7591 open dynamic client registration at /reg (no initial access token)
      registration: { enabled: !!(mcp && mcp.registration), initialAccessToken: false },
      // RFC 8707: resource=<configured resource> -> JWT access token with aud=resource
      resourceIndicators: {
        enabled: true,
        async defaultResource(ctx, client, oneOf) {
          if (oneOf) return oneOf;
          return mcp?.defaultResource;
        },
        // token request without resource= reuses the resource of the authorization request
        async useGrantedResource() { return true; },
        async getResourceServerInfo(ctx, resourceIndicator) {
          if (!mcp || !mcp.resources.includes(resourceIndicator)) {
            throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
          }
          return {
            scope: mcp.scopes.join(' '),
            audience: resourceIndicator,
            accessTokenFormat: 'jwt',
            accessTokenTTL: mcp.accessTokenTTL || ttl.AccessToken,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          // form = <form id="op.logoutForm" ...> with hidden xsrf; auto-submit with
          // logout=yes unless config asks for a visible confirmation step.
          ctx.body = page('Sign out', `
<h1 id="title">Sign out?</h1>
${form}
<button id="logout-yes" type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button id="logout-no" type="submit" form="op.logoutForm">No, stay signed in</button>
${logoutConfirm ? '' : '<script>document.getElementById("logout-yes").click();</script>'}`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Signed out', '<h1 id="title">Signed out</h1><p id="logged-out">You are signed out.</p>');
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    // Auto-consent: every client (from the config or registered at /reg) is treated as
    // first-party: grant all requested scopes/claims (and resource-server scopes for the
    // requested resource indicators) and never show a consent page.
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
      if (!grant) {
        grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.account.accountId });
      }
      const requested = String(oidc.params.scope || 'openid').split(' ').filter((s) => ALL_SCOPES.includes(s));
      grant.addOIDCScope(requested.join(' '));
      // resource-server scopes (RFC 8707): grant every requested scope the resource offers
      for (const [indicator, rs] of Object.entries(oidc.resourceServers || {})) {
        const rsScopes = requested.filter((s) => rs.scopes.has(s));
        if (rsScopes.length) grant.addResourceScope(indicator, rsScopes.join(' '));
      }
      if (oidc.params.claims) {
        try {
          const c = JSON.parse(oidc.params.claims);
          grant.addOIDCClaims([...Object.keys(c.id_token || {}), ...Object.keys(c.userinfo || {})]);
        } catch { /* ignore */ }
      }
      await grant.save();
      return grant;
    },
    // MCP clients register grant_types [authorization_code, refresh_token] but rarely ask for
    // offline_access: with the mcp block, issue a refresh token whenever the client may use one.
    async issueRefreshToken(ctx, client, code) {
      if (!client.grantTypeAllowed('refresh_token')) return false;
      return code.scopes.has('offline_access') || !!mcp;
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<h1 id="title">Error</h1><p id="error">${esc(out.error)}</p><p id="error-description">${esc(out.error_description)}</p>`);
    },
  });
  provider.on('server_error', (ctx, err) => log('server_error', err));
  provider.on('registration_create.success', (ctx, client) => log('registered client', client.clientId,
    client.tokenEndpointAuthMethod, JSON.stringify(client.redirectUris)));
  provider.on('registration_create.error', (ctx, err) => log('registration_create.error', err.message, err.error_description || ''));
  provider.on('grant.error', (ctx, err) => log('grant.error', err.message, err.error_description || ''));
  provider.on('authorization.error', (ctx, err) => log('authorization.error', err.message, err.error_description || ''));
  provider.on('end_session.error', (ctx, err) => log('end_session.error', err.message, err.error_description || ''));
  return provider;
}

// ---------------------------------------------------------------- interactions
async function readForm(req) {
  const chunks = [];
  for await (const ch of req) chunks.push(ch);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}
function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(body);
}

async function handleInteraction(provider, req, res, url) {
  const m = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!m) return send(res, 404, page('Not found', '<p id="error">not found</p>'));
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;

  if (prompt.name === 'consent') {
    // normally unreachable (loadExistingGrant grants everything); auto-grant anyway
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [ind, sc] of Object.entries(d.missingResourceScopes)) grant.addResourceScope(ind, sc.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  if (prompt.name !== 'login') {
    return send(res, 400, page('Error', `<p id="error">unsupported prompt ${esc(prompt.name)}</p>`));
  }

  if (req.method === 'GET' && !m[2]) {
    return send(res, 200, loginPage(uid, { clientId: params.client_id, reason: prompt.reasons.join(' ') }));
  }
  if (req.method === 'POST' && m[2]) {
    const form = await readForm(req);
    const login = form.get('login') || '';
    const acct = accountByLogin(login);
    if (!acct || form.get('password') !== acct.password) {
      log('login failed for', JSON.stringify(login));
      return send(res, 200, loginPage(uid, { clientId: params.client_id, login, error: 'Invalid username or password' }));
    }
    log('login ok', acct.sub);
    return provider.interactionFinished(req, res, {
      login: { accountId: acct.sub, amr: ['pwd'], ts: Math.floor(Date.now() / 1000) },
    }, { mergeWithLastSubmission: false });
  }
  return send(res, 405, page('Error', '<p id="error">method not allowed</p>'));
}

function strictClientAuth(req) {
  if (cfg.strict_client_auth === false) return null;
  const body = new URLSearchParams(req.body);
  const auth = req.headers.authorization;
  let clientId; let used;
  if (auth && /^basic /i.test(auth)) {
    const dec = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
    try { clientId = decodeURIComponent(dec.slice(0, dec.indexOf(':')).replace(/\+/g, ' ')); } catch { return null; }
    used = 'client_secret_basic';
  } else if (body.has('client_secret')) {
    clientId = body.get('client_id');
    used = 'client_secret_post';
  } else {
    return null; // let oidc-provider produce its own error
  }
  const client = (cfg.clients || []).find((c) => c.client_id === clientId);
  const registered = client?.token_endpoint_auth_method || 'client_secret_basic';
  if (client && registered !== used) {
    return `client ${clientId} is registered for ${registered} but used ${used}`;
  }
  return null;
}

// ---------------------------------------------------------------- server
let provider;
let callback;
const server = http.createServer(async (req, res) => {
  const t0 = Date.now();
  const url = new URL(req.url, 'http://x');
  res.on('finish', () => log(`${req.method} ${url.pathname} ${res.statusCode} ${Date.now() - t0}ms`));
  try {
    if (url.pathname === '/__admin/fault') {
      if (req.method === 'POST') {
        const body = await readForm(req);
        tokenFault = url.searchParams.get('token') || body.get('token') || 'none';
      }
      return send(res, 200, JSON.stringify({ token: tokenFault }), 'application/json');
    }
    if (url.pathname === '/__admin/health') return send(res, 200, '{"ok":true}', 'application/json');
    if (url.pathname.startsWith('/interaction/')) return await handleInteraction(provider, req, res, url);
    if (url.pathname === '/token' && req.method === 'POST') {
      // Buffer the body (oidc-provider then uses req.body) so we can enforce the
      // client's registered auth method: oidc-provider itself treats
      // client_secret_basic and client_secret_post as interchangeable.
      const chunks = [];
      for await (const ch of req) chunks.push(ch);
      req.body = Buffer.concat(chunks).toString('utf8');
      const reject = strictClientAuth(req);
      if (reject) {
        log('token client auth rejected:', reject);
        return send(res, 401, JSON.stringify({ error: 'invalid_client', error_description: reject }), 'application/json');
      }
    }
    if (url.pathname === '/token' && tokenFault !== 'none') {
      log('token fault', tokenFault);
      if (tokenFault === '500') {
        return send(res, 500, '{"error":"server_error","error_description":"injected fault"}', 'application/json');
      }
      const ms = tokenFault === 'hang' ? 3_600_000 : Number(tokenFault.replace(/^delay:/, '')) || 0;
      await new Promise((resolve) => {
        const t = setTimeout(resolve, ms);
        const h = { t, resolve };
        hanging.add(h);
        req.on('close', () => { clearTimeout(t); hanging.delete(h); resolve(); });
      });
      if (tokenFault === 'hang' || res.destroyed) return undefined;
    }
    return callback(req, res);
  } catch (err) {
    log('handler error', err?.stack || err);
    if (!res.headersSent) send(res, err?.statusCode || 500, page('Error', `<p id="error">${esc(err?.message)}</p>`));
    else res.end();
  }
  return undefined;
});

server.listen(Number(args.port), args.host, () => {
  const { port } = server.address();
  const issuer = `http://${args.host}:${port}`;
  provider = makeProvider(issuer);
  callback = provider.callback();
  if (args['port-file']) {
    const tmp = `${args['port-file']}.tmp.${process.pid}`;
    fs.writeFileSync(tmp, `${port}\n`);
    fs.renameSync(tmp, path.resolve(args['port-file']));
  }
  log(`listening issuer=${issuer} token_fault=${tokenFault}`);
});

function shutdown(sig) {
  log(`${sig}: shutting down`);
  for (const h of hanging) { clearTimeout(h.t); h.resolve(); }
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
