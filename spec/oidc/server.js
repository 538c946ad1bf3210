// A real OAuth 2.0 authorization server for spec/oidc_spec.lua: oidc-provider (OpenID Certified) on
// 127.0.0.1, with the client credentials grant and token introspection (RFC 7662) for a resource
// server: the sandbox (partnercustomers sandbox --introspection-url ISSUER/token/introspection).
//
//   node spec/oidc/server.js [--clients FILE] [--client JSON]... [--port N] [--lifetime SECONDS]
//                            [--ttl SECONDS] [--clock-tolerance SECONDS] [--ignore-stdin]
//
// Prints exactly one line on stdout once it listens:
//   oidc-provider listening on http://127.0.0.1:PORT
// (the issuer is that URL; the token endpoint is ISSUER/token). Everything else goes to stderr.
// It stops by itself after --lifetime seconds (or $OIDC_LIFETIME; default 60) and when its stdin
// closes (unless --ignore-stdin), so that a test run that dies cannot leave it behind.
//
// Clients: --clients FILE holds a JSON array of client metadata (RFC 7591 names); --client takes one
// object. Defaults: grant_types ["client_credentials"], no redirect URIs nor response types, scope
// "api.read elements.customers.read.all partner.customers.read.all" (the sandbox's AvePoint scopes).
// Two extensions, removed before oidc-provider sees the metadata:
//   "certificates": ["cert.pem", ...]  -> "jwks" with the RSA public key of each certificate, with
//       kid = upper-case hex SHA-1 thumbprint, x5t (base64url SHA-1) and x5t#S256, as the client's
//       assertion header names them;
//   "introspection": true -> a resource server: it may introspect the tokens of every client (HTTP
//       Basic or client_secret_post at ISSUER/token/introspection) and gets none itself. Nobody else
//       may: any other caller is told {"active": false}.
//
// Endpoints besides oidc-provider's own (/token, /token/introspection, /jwks, discovery...):
//   GET /_test/token-requests   what the token endpoint received, one entry per POST /token:
//                               {status, client_id, auth ("post"|"basic"|"assertion"|"none"), scope,
//                               error, error_detail, assertion = {alg, typ, kid, x5t, x5t#S256, aud,
//                               iss, sub, jti, iat, nbf, exp}}; never a secret, a token or an assertion.
//   POST /_test/revoke          every client credentials token issued so far becomes invalid
//                               -> {"revoked": N}
//
// The device authorization grant (RFC 8628) is on: ISSUER/device/auth, the user's pages at
// ISSUER/device (oidc-provider's own), and the token endpoint's device_code grant. A device client
// needs grant_types ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"] and a scope
// with offline_access. The sign-in itself is this server's interaction page, GET /interaction/UID:
// it signs the user "device-user" in and consents to every scope asked for, through oidc-provider's
// interaction API, without a form.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

// Only the "listening" line goes to stdout: the test reads that line and nothing else, and a pipe
// nobody reads must never fill up. oidc-provider's notices use console.info.
console.log = console.info = console.debug = console.error;

// api.read: a scope of this server only (the sandbox refuses it); the other two are the sandbox's
const SCOPES = ['api.read', 'elements.customers.read.all', 'partner.customers.read.all'];

function fail(message) {
  console.error(`oidc server: ${message}`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      clients: { type: 'string' },
      client: { type: 'string', multiple: true, default: [] },
      port: { type: 'string', default: '0' },
      lifetime: { type: 'string', default: process.env.OIDC_LIFETIME || '60' },
      ttl: { type: 'string', default: '300' },
      'clock-tolerance': { type: 'string', default: '0' },
      'ignore-stdin': { type: 'boolean', default: false },
    },
    strict: true,
  }));
} catch (err) {
  fail(err.message);
}

function number(name, min) {
  const n = Number(args[name]);
  if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer >= ${min}`);
  return n;
}
const port = number('port', 0);
const lifetime = number('lifetime', 1);
const ttl = number('ttl', 1);
const clockTolerance = number('clock-tolerance', 0);

// A certificate's RSA public key as a JWK, named the way the client's assertion header names it.
function certificateJwk(path) {
  let x509;
  try {
    x509 = new crypto.X509Certificate(fs.readFileSync(path));
  } catch (err) {
    fail(`cannot read the certificate ${path}: ${err.message}`);
  }
  const jwk = x509.publicKey.export({ format: 'jwk' });
  if (jwk.kty !== 'RSA') fail(`${path}: an RSA certificate is needed, not ${jwk.kty}`);
  const sha1 = crypto.createHash('sha1').update(x509.raw).digest();
  const sha256 = crypto.createHash('sha256').update(x509.raw).digest();
  return {
    kty: jwk.kty,
    n: jwk.n,
    e: jwk.e,
    use: 'sig',
    kid: sha1.toString('hex').toUpperCase(),
    x5t: sha1.toString('base64url'),
    'x5t#S256': sha256.toString('base64url'),
  };
}

const introspectors = new Set();

function clientMetadata(input) {
  if (input === null || typeof input !== 'object' || Array.isArray(input) || typeof input.client_id !== 'string') {
    fail('every client must be a JSON object with a client_id');
  }
  const { certificates, introspection, ...md } = input;
  if (certificates !== undefined) {
    if (!Array.isArray(certificates)) fail(`client ${md.client_id}: certificates must be an array of paths`);
    md.jwks = { keys: certificates.map(certificateJwk) };
  }
  if (introspection) introspectors.add(md.client_id);
  md.grant_types ??= introspection ? [] : ['client_credentials'];
  md.response_types ??= [];
  md.redirect_uris ??= [];
  if (!introspection) md.scope ??= SCOPES.join(' ');
  return md;
}

const clients = [];
if (args.clients) {
  let list;
  try {
    list = JSON.parse(fs.readFileSync(args.clients, 'utf8'));
  } catch (err) {
    fail(`cannot read the clients file ${args.clients}: ${err.message}`);
  }
  if (!Array.isArray(list)) fail('the clients file must hold a JSON array');
  clients.push(...list);
}
for (const json of args.client) {
  try {
    clients.push(JSON.parse(json));
  } catch (err) {
    fail(`--client: ${err.message}`);
  }
}

// The provider's own signing key (ID tokens, JWKS endpoint): made at start, never written anywhere.
const signingKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  .export({ format: 'jwk' });
signingKey.use = 'sig';
signingKey.kid = crypto.randomUUID();

const tokenRequests = [];
const issued = []; // the ClientCredentials tokens saved, for /_test/revoke
let provider;

function json(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

const DEVICE_USER = 'device-user';

// One step of an interaction: the login, then the consent to every scope asked for.
async function interact(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: DEVICE_USER } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: `unexpected prompt ${prompt.name}` };
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://127.0.0.1').pathname;
  if (path.startsWith('/interaction/') && req.method === 'GET') {
    interact(req, res).catch((err) => json(res, 500, { error: 'server_error', error_description: err.message }));
    return;
  }
  if (path === '/_test/token-requests' && req.method === 'GET') {
    json(res, 200, tokenRequests);
    return;
  }
  if (path === '/_test/revoke' && req.method === 'POST') {
    const tokens = issued.splice(0);
    Promise.all(tokens.map((t) => t.destroy())).then(
      () => json(res, 200, { revoked: tokens.length }),
      (err) => json(res, 500, { error: 'server_error', error_description: err.message }),
    );
    return;
  }
  if (path === '/token' && req.method === 'POST') {
    const record = { status: null };
    tokenRequests.push(record);
    req.pcRecord = record;
    res.on('finish', () => { record.status = res.statusCode; });
  }
  provider.callback()(req, res);
});

// What the token endpoint saw (filled in from oidc-provider's grant events).
function recordTokenRequest(ctx, err) {
  const record = ctx.req.pcRecord;
  if (!record) return;
  const params = ctx.oidc?.params || {};
  record.client_id = ctx.oidc?.client?.clientId ?? null;
  if (/^basic /i.test(ctx.get('authorization'))) record.auth = 'basic';
  else if (params.client_assertion) record.auth = 'assertion';
  else if (params.client_secret) record.auth = 'post';
  else record.auth = 'none';
  record.scope = params.scope ?? null;
  if (err) {
    record.error = err.error ?? 'server_error';
    record.error_detail = err.error_detail ?? err.cause?.message ?? null;
  }
  if (params.client_assertion) {
    try {
      const [h, p] = params.client_assertion.split('.', 2)
        .map((part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')));
      record.assertion = {
        alg: h.alg, typ: h.typ, kid: h.kid, x5t: h.x5t, 'x5t#S256': h['x5t#S256'],
        aud: p.aud, iss: p.iss, sub: p.sub, jti: p.jti, iat: p.iat, nbf: p.nbf, exp: p.exp,
      };
    } catch {
      record.assertion = 'malformed';
    }
  }
}

function stop(code) {
  server.close();
  process.exit(code);
}

server.on('error', (err) => fail(err.message));
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  try {
    provider = new Provider(issuer, {
      clients: clients.map(clientMetadata),
      clientAuthMethods: ['none', 'client_secret_post', 'client_secret_basic', 'private_key_jwt'],
      enabledJWA: { clientAuthSigningAlgValues: ['RS256', 'PS256'] },
      clockTolerance,
      scopes: ['openid', 'offline_access', ...SCOPES],
      jwks: { keys: [signingKey] },
      cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
      ttl: { ClientCredentials: ttl, AccessToken: ttl },
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        introspection: {
          enabled: true,
          // only the resource servers may ask what a token is, and they may ask about any client's
          // token (oidc-provider's default lets every authenticated client introspect any token)
          allowedPolicy: async (ctx, client) => introspectors.has(client.clientId),
        },
        revocation: { enabled: true },
        deviceFlow: { enabled: true },
      },
    });
  } catch (err) {
    fail(`oidc-provider refused the configuration: ${err.message}`);
  }
  provider.on('client_credentials.saved', (token) => issued.push(token));
  provider.on('grant.success', (ctx) => recordTokenRequest(ctx));
  provider.on('grant.error', (ctx, err) => recordTokenRequest(ctx, err));
  provider.on('server_error', (ctx, err) => {
    console.error('server_error', err);
    recordTokenRequest(ctx, err);
  });
  // oidc-provider checks a static client's metadata when it is first used: check them all now, so
  // that a mistake stops the server before it says it listens
  Promise.all(clients.map((c) => provider.Client.find(c.client_id))).then(() => {
    process.stdout.write(`oidc-provider listening on ${issuer}\n`);
  }, (err) => fail(`client metadata refused: ${err.error_description || err.message}`));
});

setTimeout(() => stop(0), lifetime * 1000);
if (!args['ignore-stdin']) {
  process.stdin.on('end', () => stop(0));
  process.stdin.on('error', () => stop(0));
  process.stdin.resume();
}
process.on('SIGTERM', () => stop(0));
process.on('SIGINT', () => stop(0));
