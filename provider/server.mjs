// A real OAuth 2.0 authorization server (oidc-provider) for tests and the local demo stack.
//
// Usage: node server.mjs <config.json>        (or PROVIDER_CONFIG=<config.json> node server.mjs)
//
// Config (JSON object; every field is optional):
//   host                     listen address, default "127.0.0.1"
//   port                     listen port, default 3002; 0 picks a free port
//   issuer                   default "http://<host>:<port>" (the port actually bound)
//   clients                  list of oidc-provider client metadata objects
//   scopes                   plain OAuth 2.0 scopes the server knows,
//                            default ["openid", "offline_access", "api.read", "api.write"]
//   access_token_ttl         seconds, default 3600
//   client_credentials_ttl   seconds, default access_token_ttl
//   refresh_token_ttl        seconds, default 14 days
//   authorization_code_ttl   seconds, default 60
//   rotate_refresh_tokens    default true: every refresh answers a new refresh token and
//                            consumes the old one (reusing a consumed one revokes the grant)
//   token_endpoint_delay_ms  default 0: refresh_token grants are processed at once but their
//                            answer is held back this long (widens race windows in tests)
//
// Test-observability endpoints (this test/demo server only):
//   GET  /__stats            token endpoint counters (see emptyStats below)
//   GET  /demo/catalog.xml   a demo YML catalog (1,000 offers) for a bearer token this server issued
//   POST /__stats/reset      zero the counters
//   POST /__config           JSON body {"token_endpoint_delay_ms": N} changes the delay at runtime
//
// Its own sign-in and consent pages (no scripts, no debug details): any login name with
// any password signs in; the consent page names the app asking and the scopes it asks for, and
// Continue grants them (Cancel answers access_denied).

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

import Provider, { errors } from 'oidc-provider';

class ConfigError extends Error {}

const DEFAULT_SCOPES = ['openid', 'offline_access', 'api.read', 'api.write'];

function loadConfig() {
  const path = process.argv[2] || process.env.PROVIDER_CONFIG;
  if (!path) {
    return {};
  }
  const parsed = JSON.parse(readFileSync(path, 'utf8'));
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError(`${path}: the config must be a JSON object`);
  }
  return parsed;
}

function seconds(value, fallback, name) {
  if (value === undefined || value === null) {
    return fallback;
  }
  if (!Number.isInteger(value) || value <= 0) {
    throw new ConfigError(`${name} must be a positive integer (seconds)`);
  }
  return value;
}

function delayMs(value) {
  if (value === undefined || value === null) {
    return 0;
  }
  if (!Number.isInteger(value) || value < 0) {
    throw new ConfigError('token_endpoint_delay_ms must be a non-negative integer');
  }
  return value;
}

function emptyStats() {
  return {
    token_requests: {
      total: 0,
      by_grant_type: {},
      by_outcome: {},
      by_grant_type_and_outcome: {},
      by_client: {},
    },
    introspection_requests: { total: 0, active: 0, inactive: 0, error: 0 },
    revocation_requests: { total: 0, success: 0, error: 0 },
    authorization_requests: 0,
    grants_revoked: 0,
  };
}

function bump(counters, key) {
  counters[key] = (counters[key] || 0) + 1;
}

async function readJsonBody(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function signingKey() {
  // A fresh RSA key per process: ID tokens (openid scope) are signed with it.
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'test-rs256' };
}

function buildProvider(issuer, config, state) {
  const accessTokenTtl = seconds(config.access_token_ttl, 3600, 'access_token_ttl');
  const clientCredentialsTtl = seconds(config.client_credentials_ttl, accessTokenTtl, 'client_credentials_ttl');
  const refreshTokenTtl = seconds(config.refresh_token_ttl, 14 * 24 * 60 * 60, 'refresh_token_ttl');
  const codeTtl = seconds(config.authorization_code_ttl, 60, 'authorization_code_ttl');
  const scopes = config.scopes ?? DEFAULT_SCOPES;
  if (!Array.isArray(scopes) || !scopes.every((s) => typeof s === 'string' && s)) {
    throw new ConfigError('scopes must be a list of non-empty strings');
  }

  const provider = new Provider(issuer, {
    clients: config.clients ?? [],
    scopes,
    claims: { openid: ['sub'] },
    // Every login name is an account (the sign-in page takes any name and password).
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    jwks: { keys: [signingKey()] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      // A public client may introspect only its own tokens; an authenticated client any token.
      introspection: {
        enabled: true,
        allowedPolicy: async (ctx, client, token) => client.clientAuthMethod !== 'none'
          || token.clientId === ctx.oidc.client.clientId,
      },
      // A client revokes only its own tokens (a public client's attempt on another's is ignored).
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => {
          if (token.clientId === client.clientId) {
            return true;
          }
          if (client.clientAuthMethod === 'none') {
            return false;
          }
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        },
      },
      clientCredentials: { enabled: true },
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // PKCE (S256 only) is required for public clients and accepted from confidential ones.
    pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' },
    // Every code-flow client allowed the refresh_token grant gets a refresh token, whether or
    // not offline_access was requested (and consented with prompt=consent).
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: config.rotate_refresh_tokens ?? true,
    // Tokens outlive the provider's browser session (no logout coupling in tests).
    expiresWithSession: async () => false,
    ttl: {
      AccessToken: accessTokenTtl,
      ClientCredentials: clientCredentialsTtl,
      RefreshToken: refreshTokenTtl,
      AuthorizationCode: codeTtl,
      Grant: Math.max(refreshTokenTtl, accessTokenTtl),
      Session: 24 * 60 * 60,
      Interaction: 60 * 60,
      IdToken: 60 * 60,
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      const esc = (v) => String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
      ctx.body = `<!DOCTYPE html><html><head><title>oops! something went wrong</title></head><body>${
        Object.entries(out).map(([k, v]) => `<pre><strong>${esc(k)}</strong>: ${esc(v)}</pre>`).join('')
      }</body></html>`;
    },
  });

  const tokenPath = new URL(provider.urlFor('token')).pathname;
  const introspectionPath = new URL(provider.urlFor('introspection')).pathname;
  const revocationPath = new URL(provider.urlFor('revocation')).pathname;

  provider.on('grant.revoked', () => {
    state.stats.grants_revoked += 1;
  });
  provider.on('authorization.accepted', () => {
    state.stats.authorization_requests += 1;
  });

  provider.use(async (ctx, next) => {
    const interaction = /^\/interaction\/([\w-]+)(\/abort)?$/.exec(ctx.path);
    if (interaction) {
      await serveInteraction(ctx, provider, interaction[2] ? 'abort' : ctx.method);
      return;
    }
    if (ctx.path === '/demo/catalog.xml' && ctx.method === 'GET') {
      await serveDemoCatalog(ctx, provider);
      return;
    }
    if (ctx.path === '/__stats' && ctx.method === 'GET') {
      ctx.set('cache-control', 'no-store');
      ctx.body = state.stats;
      return;
    }
    if (ctx.path === '/__stats/reset' && ctx.method === 'POST') {
      state.stats = emptyStats();
      ctx.status = 204;
      return;
    }
    if (ctx.path === '/__config' && ctx.method === 'POST') {
      try {
        const body = await readJsonBody(ctx.req);
        if ('token_endpoint_delay_ms' in body) {
          state.tokenDelayMs = delayMs(body.token_endpoint_delay_ms);
        }
      } catch (err) {
        ctx.status = 400;
        ctx.body = { error: 'invalid_request', error_description: String(err.message) };
        return;
      }
      ctx.body = { token_endpoint_delay_ms: state.tokenDelayMs };
      return;
    }

    if (ctx.method !== 'POST' || ![tokenPath, introspectionPath, revocationPath].includes(ctx.path)) {
      await next();
      return;
    }

    await next();

    const failed = ctx.status >= 400;
    const error = failed ? (ctx.body?.error ?? `http_${ctx.status}`) : undefined;
    const { stats } = state;
    if (ctx.path === tokenPath) {
      const grantType = ctx.oidc?.params?.grant_type ?? ctx.oidc?.body?.grant_type ?? 'unknown';
      const outcome = failed ? error : 'success';
      const t = stats.token_requests;
      t.total += 1;
      bump(t.by_grant_type, grantType);
      bump(t.by_outcome, outcome);
      t.by_grant_type_and_outcome[grantType] ??= {};
      bump(t.by_grant_type_and_outcome[grantType], outcome);
      bump(t.by_client, ctx.oidc?.client?.clientId ?? 'unknown');
      if (grantType === 'refresh_token' && state.tokenDelayMs > 0) {
        await sleep(state.tokenDelayMs);
      }
    } else if (ctx.path === introspectionPath) {
      const i = stats.introspection_requests;
      i.total += 1;
      if (failed) {
        i.error += 1;
      } else if (ctx.body?.active) {
        i.active += 1;
      } else {
        i.inactive += 1;
      }
    } else {
      const r = stats.revocation_requests;
      r.total += 1;
      r[failed ? 'error' : 'success'] += 1;
    }
  });

  return provider;
}

async function main() {
  const config = loadConfig();
  const host = config.host ?? '127.0.0.1';
  const port = config.port ?? 3002;
  const state = { stats: emptyStats(), tokenDelayMs: delayMs(config.token_endpoint_delay_ms) };

  // Bind first so that port 0 works and the issuer names the port actually in use.
  let handler = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  const server = createServer((req, res) => handler(req, res));
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const bound = server.address().port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const issuer = config.issuer ?? `http://${urlHost}:${bound}`;

  const provider = buildProvider(issuer, config, state);
  // oidc-provider validates static clients lazily; check them now so a bad config fails at start.
  for (const client of config.clients ?? []) {
    try {
      await provider.Client.find(String(client.client_id));
    } catch (err) {
      throw new ConfigError(`client ${JSON.stringify(client.client_id)}: ${err.message}: ${err.error_description ?? ''}`);
    }
  }
  handler = provider.callback();

  const shutdown = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);

  console.log(`provider listening on ${issuer}`);
}

main().catch((err) => {
  console.error(`provider failed to start: ${err instanceof ConfigError ? err.message : err.stack}`);
  process.exit(1);
});

// A protected product feed for the local demo: a YML catalog served only for a valid access token
// issued by this provider, with an ETag so conditional requests get 304.
const DEMO_OFFERS = 1000;
const demoCatalog = (() => {
  const offers = [];
  for (let i = 1; i <= DEMO_OFFERS; i += 1) {
    offers.push(`<offer id="${i}" available="true"><name>Demo product ${i}</name>` +
      `<price>${(i * 1.5).toFixed(2)}</price><currencyId>EUR</currencyId><categoryId>1</categoryId></offer>`);
  }
  return '<?xml version="1.0" encoding="UTF-8"?>\n<yml_catalog date="2026-11-28 00:00"><shop>' +
    '<name>Demo shop</name><company>Demo</company><url>http://127.0.0.1/</url>' +
    '<currencies><currency id="EUR" rate="1"/></currencies><categories><category id="1">Demo</category></categories>' +
    `<offers>${offers.join('')}</offers></shop></yml_catalog>\n`;
})();
const demoEtag = '"demo-catalog-1"';

async function serveDemoCatalog(ctx, provider) {
  const header = ctx.get('authorization') || '';
  const token = header.startsWith('Bearer ') ? header.slice(7) : '';
  const found = token
    ? (await provider.AccessToken.find(token)) ?? (await provider.ClientCredentials.find(token))
    : undefined;
  if (!found || found.isExpired) {
    ctx.status = 401;
    ctx.set('www-authenticate', 'Bearer error="invalid_token"');
    return;
  }
  ctx.set('etag', demoEtag);
  ctx.set('cache-control', 'no-store');
  if (ctx.get('if-none-match') === demoEtag) {
    ctx.status = 304;
    return;
  }
  ctx.type = 'application/xml';
  ctx.body = demoCatalog;
}

// ------------------------------------------------------------------ sign-in and consent pages

const SCOPE_DESCRIPTIONS = {
  openid: 'Confirm who you are',
  offline_access: 'Stay connected while you are away (a refresh token)',
  'api.read': 'Read your data',
  'api.write': 'Create and change your data',
};
const PAGE_HEADERS = {
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};
const PAGE_STYLE = 'body{font-family:sans-serif;max-width:26em;margin:3em auto;line-height:1.5}'
  + 'input,button{display:block;width:100%;margin:.4em 0;padding:.5em;box-sizing:border-box}'
  + 'button{background:#2d6cdf;color:#fff;border:0;font-weight:bold;cursor:pointer}dt{font-family:monospace}';

const escapeHtml = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(ctx, title, body, abortUrl) {
  ctx.set(PAGE_HEADERS);
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>`
    + `<style>${PAGE_STYLE}</style></head><body><h1>${escapeHtml(title)}</h1>${body}`
    + (abortUrl ? `<p><a href="${escapeHtml(abortUrl)}">Cancel</a></p>` : '')
    + '</body></html>';
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function serveInteraction(ctx, provider, action) {
  ctx.set('cache-control', 'no-store');
  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch (err) {
    ctx.status = 400;
    page(ctx, 'Sign-in expired', `<p>${escapeHtml(err.error_description ?? err.message)}</p>`
      + '<p>Go back to the app and start again.</p>');
    return;
  }
  const { uid, prompt, params, session, grantId } = details;
  const abortUrl = `/interaction/${uid}/abort`;
  const client = await provider.Client.find(String(params.client_id));
  const appName = client?.clientName || String(params.client_id);

  if (action === 'abort') {
    const result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
    ctx.status = 303;
    ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false }));
    return;
  }
  if (action === 'POST') {
    const form = await readForm(ctx.req);
    let result;
    if (prompt.name === 'login' && form.get('prompt') === 'login' && form.get('login')) {
      result = { login: { accountId: form.get('login') } };
    } else if (prompt.name === 'consent' && form.get('prompt') === 'consent') {
      const grant = grantId
        ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) {
        grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      }
      if (prompt.details.missingOIDCClaims) {
        grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      }
      for (const [indicator, scope] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scope.join(' '));
      }
      result = { consent: { grantId: await grant.save() } };
    } else {
      ctx.status = 400;
      page(ctx, 'Try again', '<p>That form does not belong to this step.</p>', abortUrl);
      return;
    }
    ctx.status = 303;
    ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true }));
    return;
  }

  if (prompt.name === 'login') {
    page(ctx, 'Sign in', `<p>Sign in to continue to <strong id="client-name">${escapeHtml(appName)}</strong>.`
      + ' Any name and any password work on this demo server.</p>'
      + `<form autocomplete="off" action="/interaction/${escapeHtml(uid)}" method="post">`
      + '<input type="hidden" name="prompt" value="login">'
      + '<input required type="text" name="login" placeholder="Login name" autofocus>'
      + '<input required type="password" name="password" placeholder="Password">'
      + '<button type="submit">Sign in</button></form>', abortUrl);
    return;
  }
  if (prompt.name === 'consent') {
    const requested = String(params.scope ?? '').split(' ').filter(Boolean);
    const scopes = requested.map((scope) => `<dt>${escapeHtml(scope)}</dt>`
      + `<dd>${escapeHtml(SCOPE_DESCRIPTIONS[scope] ?? 'Access named by the app')}</dd>`).join('');
    page(ctx, 'Allow access?', `<p><strong id="client-name">${escapeHtml(appName)}</strong>`
      + ` asks for access to your account (signed in as ${escapeHtml(session?.accountId ?? '')}):</p>`
      + `<dl id="scopes">${scopes || '<dt>no scopes</dt><dd>Only to confirm that you allow it</dd>'}</dl>`
      + `<form autocomplete="off" action="/interaction/${escapeHtml(uid)}" method="post">`
      + '<input type="hidden" name="prompt" value="consent">'
      + '<button autofocus type="submit">Continue</button></form>', abortUrl);
    return;
  }
  ctx.status = 501;
  page(ctx, 'Not supported', `<p>This demo server has no page for ${escapeHtml(prompt.name)}.</p>`, abortUrl);
}
