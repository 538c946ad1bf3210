#!/usr/bin/env node
// The benchmark's API server: a fast local stand-in for the AvePoint v3 customer listing, its token
// endpoint, Partner Center's organization endpoint and its Entra-style token endpoints.
// Built-in modules only. Answers are rendered once (a page the first time it is asked for, then
// kept), never per request, so that the client, not this server, is what a run measures.
//
//   node bench/server.js [--customers N] [--page-size P] [--orgs N] [--delay-ms D] [--rate R]
//                        [--burst B] [--h2 --cert C.pem --key K.pem] [--max-lifetime S]
//                        [--seed N] [--status mixed|int|string|label]
//
// Prints the port as its first stdout line (then a JSON line with the settings), listens on
// 127.0.0.1 only, and stops when its stdin closes or after --max-lifetime seconds (default 600).
// Client secret: env BENCH_SERVER_SECRET (default "bench-secret"); env BENCH_SERVER_TOKEN, when
// set, is also accepted as a bearer token everywhere (besides the tokens the server issues).
//
// Endpoints (see bench/README.md):
//   POST /connect/token                                   client_credentials -> {access_token, expires_in, token_type}
//   GET  /partner/external/v3/general/customers?pageIndex=&pageSize=   the sandbox's v3 shape
//   POST /{tenant}/oauth2/v2.0/token, /{tenant}/oauth2/token           Entra-style (v2, v1)
//   GET  /v1/customers/{id}/organization                  [ {organization} ]
//   GET  /_bench/stats, POST /_bench/reset, GET /_bench/org-ids        (admin: not counted, never limited)
'use strict';
const http = require('http');
const http2 = require('http2');
const crypto = require('crypto');
const fs = require('fs');

// ---------------------------------------------------------------------------------------------
// Options

function usage(msg) {
  process.stderr.write(`bench/server.js: ${msg}\n`);
  process.exit(2);
}

const opts = {
  customers: 1000, 'page-size': 100, orgs: 0, 'delay-ms': 0, rate: 0, burst: 0,
  'max-lifetime': 600, seed: 1, status: 'mixed', h2: false, cert: null, key: null,
};
const INT_OPTS = new Set(['customers', 'page-size', 'orgs', 'seed']);
const NUM_OPTS = new Set(['delay-ms', 'rate', 'burst', 'max-lifetime']);
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (!a.startsWith('--')) usage(`unexpected argument ${a}`);
    a = a.slice(2);
    let value = null;
    const eq = a.indexOf('=');
    if (eq >= 0) { value = a.slice(eq + 1); a = a.slice(0, eq); }
    if (!(a in opts)) usage(`unknown option --${a}`);
    if (a === 'h2') { opts.h2 = true; continue; }
    if (value === null) {
      if (i + 1 >= argv.length) usage(`--${a} needs a value`);
      value = argv[++i];
    }
    if (INT_OPTS.has(a)) {
      if (!/^\d+$/.test(value)) usage(`--${a} must be a non-negative integer`);
      opts[a] = Number(value);
    } else if (NUM_OPTS.has(a)) {
      const n = Number(value);
      if (!Number.isFinite(n) || n < 0) usage(`--${a} must be a non-negative number`);
      opts[a] = n;
    } else {
      opts[a] = value;
    }
  }
  if (opts['page-size'] < 1 || opts['page-size'] > 100) usage('--page-size must be 1..100');
  if (!['mixed', 'int', 'string', 'label'].includes(opts.status)) usage('--status: mixed, int, string or label');
  if (opts.h2 && !(opts.cert && opts.key)) usage('--h2 needs --cert and --key');
  if (!opts.h2 && (opts.cert || opts.key)) usage('--cert and --key need --h2');
  if (opts['max-lifetime'] <= 0) usage('--max-lifetime must be > 0');
}
const SECRET = process.env.BENCH_SERVER_SECRET || 'bench-secret';
const STATIC_TOKEN = process.env.BENCH_SERVER_TOKEN || null;

// ---------------------------------------------------------------------------------------------
// Data: customer i (and organization i) depends on (seed, i) only, so any page can be rendered
// alone, in any order, and a page is the same whenever it is rendered.

function rng(seed, index, salt) {
  // mulberry32 seeded from a 32-bit mix of (seed, index, salt)
  let s = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35) ^ salt) >>> 0;
  return function next(n) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0);
    return n === undefined ? u : u % n; // 0..n-1
  };
}
const hex8 = (u) => u.toString(16).padStart(8, '0');
function guid(r) {
  const a = hex8(r()), b = hex8(r()), c = hex8(r()), d = hex8(r());
  return `${a}-${b.slice(0, 4)}-4${b.slice(5, 8)}-${'89ab'[r(4)]}${c.slice(1, 4)}-${c.slice(4, 8)}${d}`;
}
const pick = (r, list) => list[r(list.length)];

// The sandbox's vocabulary (lua/partnercustomers/sandbox/data.lua)
const LABELS = ['N/A', 'Working', 'Failed', 'Waiting for Configuration', 'Multiple Issues Found',
  'Finished with Exception', 'No Backup Update'];
const LABEL_VARIANTS = [['n/a'], ['working', 'WORKING'], ['failed', 'FAILED'],
  ['waiting for configuration', 'Waiting For Configuration'],
  ['multiple issues found', 'Multiple issues found'],
  ['finished with exception', 'Finished With Exception'],
  ['No backup updates', 'no backup update', 'No Backup Updates']];
const ASCII_ORGS = ['Contoso Ltd', 'Fabrikam, Inc.', 'Northwind Traders', 'Tailspin Toys',
  'Adventure Works Cycles', 'Woodgrove Bank', 'Litware, Inc.', 'Proseware', 'Wide World Importers',
  'Alpine Ski House', 'Coho Winery', 'Blue Yonder Airlines', 'Trey Research', 'Lucerne Publishing',
  "Margie's Travel", 'The "Quoted" Company', 'Humongous Insurance', 'Fourth Coffee', 'Relecloud',
  'VanArsdel Ltd', 'A. Datum Corporation', 'Best For You Organics', 'AvePoint test'];
const INTL_ORGS = ['Müller & Söhne GmbH', 'Bäckerei Weiß KG', 'Grüne Energie Köln AG',
  'Société Générale de Développement', 'Café Crème SARL', 'Hôtel Les Âmes', '株式会社さくら技研',
  '東京データ合同会社', 'Ελληνικά Συστήματα Α.Ε.', 'Ωμέγα Λογισμικό', 'Fjällräven Konsult AB',
  'Łódź Software Sp. z o.o.', 'Ñandú Soluciones S.L.'];
const COUNTRIES = ['United States', 'Germany', 'France', 'Japan', 'Greece', 'Vietnam', 'Afghanistan',
  'United Kingdom', "Côte d'Ivoire", 'Türkiye', 'Australia', 'Canada', 'Singapore'];
const MAILBOXES = ['admin', 'it', 'owner', 'ops', 'm.schmidt', 'j.dupont', 'backup-admin'];

function slug(name, index) {
  const s = name.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, 14);
  return /[a-z]{3}/.test(s) ? s : `customer${index}`;
}

// jobStatus as the sandbox's styles send it; "mixed" cycles integer, numeric string, label and
// another spelling, so that any four consecutive customers show every form.
function status(r, code, index) {
  let form = { int: 0, string: 1, label: 2 }[opts.status];
  if (form === undefined) form = (index + opts.seed) % 4;
  if (form === 0) return code;
  if (form === 1) return String(code);
  if (form === 2) return LABELS[code];
  return pick(r, LABEL_VARIANTS[code]);
}

// Customer i (0-based), keys sorted as the sandbox's encoder sorts them.
function customer(i) {
  const r = rng(opts.seed, i, 0x0c);
  let org = r(100) < 30 ? pick(r, INTL_ORGS) : pick(r, ASCII_ORGS);
  if (r(100) < 25) org = `${org} ${1 + r(99)}`;
  const id = guid(r);
  const code = r(7);
  const mode = r(3);
  const email = r(100) < 12 ? null : `${pick(r, MAILBOXES)}@${slug(org, i)}.example`;
  const country = r(100) < 12 ? null : pick(r, COUNTRIES);
  const roll = r(100);
  const n = roll < 10 ? 0 : roll < 85 ? 1 : 2 + r(3);
  const tenants = [];
  const base = slug(org, i);
  for (let k = 1; k <= n; k++) {
    const name = r(100) < 8 ? null : (k === 1 ? base : `${base}-${k}`);
    tenants.push({ id: guid(r), name });
  }
  return {
    countryOrRegion: country, id, jobStatus: status(r, code, i), managementMode: mode,
    organization: org, ownerEmail: email, tenants,
  };
}

const ADDRESSES = [
  ['%d Harbor Road', 'US', '98101', 'Seattle', 'WA'], ['%d Elm Street', 'US', '02134', 'Boston', 'MA'],
  ['%d Queen Street West', 'CA', 'M5H 2M9', 'Toronto', 'ON'], ['Keizersgracht %d', 'NL', '1015 CJ', 'Amsterdam', ''],
  ['Königsallee %d', 'DE', '40212', 'Düsseldorf', 'NW'], ['丸の内%d丁目', 'JP', '100-0005', '東京都千代田区', '東京都'],
  ['ul. Floriańska %d', 'PL', '31-019', 'Kraków', 'małopolskie'], ['Avenida Paulista %d', 'BR', '01310-100', 'São Paulo', 'SP'],
];
const PC_MAILBOXES = ['admin', 'it', 'security', 'noc', 'm365-alerts'];

// Organization k (0-based) of the Partner Center side: its tenant id and its pre-rendered answer
// (a JSON array of one organization, as GET /v1/customers/{id}/organization answers). As in the
// sandbox, technicalNotificationMails is sometimes null or absent, sometimes two addresses.
function organization(k) {
  const r = rng(opts.seed, k, 0x5043);
  const id = guid(r);
  const a = pick(r, ADDRESSES);
  const name = r(100) < 30 ? pick(r, INTL_ORGS) : pick(r, ASCII_ORGS);
  const domain = `${slug(name, k)}${k}.onmicrosoft.com`;
  const org = {
    city: a[3], countryLetterCode: a[1], displayName: name, postalCode: a[2], state: a[4],
    street: a[0].replace('%d', String(1 + r(120))),
  };
  const cycle = k % 6;
  if (cycle === 2) org.technicalNotificationMails = null;
  else if (cycle !== 4) {
    org.technicalNotificationMails = [`${pick(r, PC_MAILBOXES)}@${domain}`];
    if (cycle === 5) org.technicalNotificationMails.push(`backup-${pick(r, PC_MAILBOXES)}@${domain}`);
  }
  return { id, body: Buffer.from(JSON.stringify([org])) };
}

// v3 pages: rendered on first request (all pages of --page-size at start when there are at most
// 200,000 customers) and kept.
const pages = new Map();
function page(index, size) {
  const key = size * 1e9 + index;
  let body = pages.get(key);
  if (body) return body;
  const data = [];
  const first = (index - 1) * size;
  for (let i = first; i < Math.min(first + size, opts.customers); i++) data.push(customer(i));
  body = Buffer.from(JSON.stringify({
    data, metadata: { pageIndex: index, pageSize: size, totalCount: opts.customers },
  }));
  pages.set(key, body);
  return body;
}
const PAGE_COUNT = Math.ceil(opts.customers / opts['page-size']);
if (opts.customers <= 200000) for (let p = 1; p <= PAGE_COUNT; p++) page(p, opts['page-size']);

const orgs = new Map(); // tenant id -> answer
const orgIds = [];
for (let k = 0; k < opts.orgs; k++) {
  const o = organization(k);
  orgs.set(o.id, o.body);
  orgIds.push(o.id);
}
const ORG_IDS_BODY = Buffer.from(JSON.stringify(orgIds));

// ---------------------------------------------------------------------------------------------
// Counters

function fresh() {
  return {
    requests: 0,          // every request but /_bench/*
    api_requests: 0,      // v3 and organization requests (what --rate and --delay-ms apply to)
    token_requests: 0,
    ok: 0,                // 2xx answers to API requests
    status429: 0,
    other_errors: 0,      // API answers other than 2xx and 429
    connections: 0,       // TCP connections accepted ('connection' events), admin ones included
    api_connections: 0,   // connections (or h2 sessions) that carried at least one non-admin request
    h2_sessions: 0,
    h2_requests: 0,
    h1_requests: 0,
    max_inflight: 0,
    started: Date.now() / 1000,
  };
}
let stats = fresh();
let inflight = 0;
let carriers = new WeakSet();

// Token bucket over API requests: `rate` per second, holding at most `burst` (default: one
// second's worth). An API request that finds it empty is answered 429 with Retry-After: 1.
const RATE = opts.rate;
const BURST = RATE > 0 ? (opts.burst > 0 ? opts.burst : Math.max(1, RATE)) : 0;
let bucket = BURST;
let bucketAt = process.hrtime.bigint();
function admit() {
  if (RATE <= 0) return true;
  const now = process.hrtime.bigint();
  bucket = Math.min(BURST, bucket + Number(now - bucketAt) / 1e9 * RATE);
  bucketAt = now;
  if (bucket >= 1) { bucket -= 1; return true; }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Answers

const JSON_TYPE = 'application/json; charset=utf-8';
const tokens = new Map(); // issued access token -> "avepoint" | "partnercenter"

function send(res, status, body, headers) {
  const h = { 'content-type': JSON_TYPE, 'content-length': body.length };
  if (headers) Object.assign(h, headers);
  res.writeHead(status, h);
  res.end(body);
}
const jbody = (v) => Buffer.from(JSON.stringify(v));

function readBody(req, cb) {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => { size += c.length; if (size <= 65536) chunks.push(c); });
  req.on('end', () => cb(Buffer.concat(chunks).toString('utf8')));
}

function issue(kind) {
  const t = crypto.randomBytes(24).toString('base64url');
  tokens.set(t, kind);
  return t;
}

// client_secret in the form (post) or HTTP Basic
function clientOk(req, form) {
  let secret = form.get('client_secret');
  const auth = req.headers.authorization;
  if (auth && auth.startsWith('Basic ')) {
    const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    secret = decodeURIComponent(decoded.slice(decoded.indexOf(':') + 1).replace(/\+/g, ' '));
  }
  return secret === SECRET;
}

function tokenEndpoint(req, res, kind, v1) {
  stats.token_requests++;
  readBody(req, (text) => {
    const form = new URLSearchParams(text);
    if (form.get('grant_type') !== 'client_credentials') {
      return send(res, 400, jbody({ error: 'unsupported_grant_type' }));
    }
    if (!clientOk(req, form)) return send(res, 401, jbody({ error: 'invalid_client' }));
    const t = issue(kind);
    const answer = v1
      ? { token_type: 'Bearer', expires_in: '3600', ext_expires_in: '3600', access_token: t }
      : { access_token: t, expires_in: 3600, token_type: 'Bearer' };
    if (kind === 'partnercenter' && !v1) answer.ext_expires_in = 3600;
    send(res, 200, jbody(answer), { 'cache-control': 'no-store', pragma: 'no-cache' });
  });
}

function authorized(req, kind) {
  const a = req.headers.authorization;
  if (!a || !a.startsWith('Bearer ')) return false;
  const t = a.slice(7);
  return t === STATIC_TOKEN || tokens.get(t) === kind;
}

const V3_PATH = '/partner/external/v3/general/customers';
const ORG_RE = /^\/v1\/customers\/([^/]+)\/organization$/;
const INVALID_TOKEN = Buffer.from('{"error":"invalid_token"}');
const THROTTLED_V3 = Buffer.from('{"error":"too_many_requests","error_description":"rate limit exceeded"}');
const THROTTLED_PC = Buffer.from('{"statusCode":429,"message":"Rate limit is exceeded. Try again in 1 seconds."}');

function pageParam(params, name, dflt, max) {
  const raw = params.get(name);
  if (raw === null) return dflt;
  if (!/^\d{1,9}$/.test(raw)) return null;
  const n = Number(raw);
  return n >= 1 && n <= max ? n : null;
}

// An API answer: after --delay-ms (a timer, never a busy wait).
function later(res, status, body, headers) {
  const go = () => {
    if (status >= 200 && status < 300) stats.ok++;
    else if (status === 429) stats.status429++;
    else stats.other_errors++;
    inflight--;
    send(res, status, body, headers);
  };
  if (opts['delay-ms'] > 0) setTimeout(go, opts['delay-ms']); else go();
}

function pcHeaders(req) {
  return {
    'ms-requestid': req.headers['ms-requestid'] || crypto.randomUUID(),
    'ms-correlationid': req.headers['ms-correlationid'] || crypto.randomUUID(),
    'ms-cv': 'bench.0',
  };
}

function api(req, res, kind, answer) {
  stats.api_requests++;
  inflight++;
  if (inflight > stats.max_inflight) stats.max_inflight = inflight;
  if (!admit()) {
    const headers = { 'retry-after': '1' };
    if (kind === 'partnercenter') Object.assign(headers, pcHeaders(req));
    return later(res, 429, kind === 'partnercenter' ? THROTTLED_PC : THROTTLED_V3, headers);
  }
  if (!authorized(req, kind)) {
    return later(res, 401, INVALID_TOKEN, { 'www-authenticate': 'Bearer error="invalid_token"' });
  }
  const [status, body, headers] = answer();
  later(res, status, body, headers);
}

function v3(req, res, query) {
  api(req, res, 'avepoint', () => {
    const params = new URLSearchParams(query);
    const index = pageParam(params, 'pageIndex', 1, Number.MAX_SAFE_INTEGER);
    const size = pageParam(params, 'pageSize', 100, 100);
    if (index === null || size === null) {
      return [400, jbody({ error: 'invalid_request', error_description: 'bad pageIndex or pageSize' })];
    }
    if ((index - 1) * size >= opts.customers) {
      return [200, jbody({ data: [], metadata: { pageIndex: index, pageSize: size, totalCount: opts.customers } })];
    }
    return [200, page(index, size)];
  });
}

function organizationAnswer(req, res, id) {
  api(req, res, 'partnercenter', () => {
    const body = orgs.get(id.toLowerCase());
    if (body) return [200, body, pcHeaders(req)];
    return [404, jbody({ code: 600039, description: 'Customer not found', data: [], source: 'PartnerFD' }),
      pcHeaders(req)];
  });
}

function admin(req, res, path) {
  if (req.method === 'GET' && path === '/_bench/stats') {
    const s = Object.assign({}, stats, { now: Date.now() / 1000, rate: RATE, burst: BURST,
      delay_ms: opts['delay-ms'], customers: opts.customers, orgs: opts.orgs, h2: opts.h2 });
    return send(res, 200, jbody(s));
  }
  if (req.method === 'POST' && path === '/_bench/reset') {
    stats = fresh();
    carriers = new WeakSet();
    bucket = BURST;
    bucketAt = process.hrtime.bigint();
    return send(res, 200, jbody({ reset: true }));
  }
  if (req.method === 'GET' && path === '/_bench/org-ids') return send(res, 200, ORG_IDS_BODY);
  send(res, 404, jbody({ error: 'not_found' }));
}

function handle(req, res) {
  const url = req.url;
  const q = url.indexOf('?');
  const path = q >= 0 ? url.slice(0, q) : url;
  if (path.startsWith('/_bench/')) return admin(req, res, path);

  stats.requests++;
  const carrier = req.stream ? req.stream.session : req.socket;
  if (carrier && !carriers.has(carrier)) { carriers.add(carrier); stats.api_connections++; }
  if (req.httpVersionMajor === 2) stats.h2_requests++; else stats.h1_requests++;

  if (req.method === 'GET' && path === V3_PATH) return v3(req, res, q >= 0 ? url.slice(q + 1) : '');
  if (req.method === 'GET') {
    const m = ORG_RE.exec(path);
    if (m) return organizationAnswer(req, res, decodeURIComponent(m[1]));
  }
  if (req.method === 'POST') {
    if (path === '/connect/token') return tokenEndpoint(req, res, 'avepoint', false);
    if (/^\/[^/]+\/oauth2\/v2\.0\/token$/.test(path)) return tokenEndpoint(req, res, 'partnercenter', false);
    if (/^\/[^/]+\/oauth2\/token$/.test(path)) return tokenEndpoint(req, res, 'partnercenter', true);
  }
  send(res, 404, jbody({ error: 'not_found' }));
}

// ---------------------------------------------------------------------------------------------
// Listening, stopping

let server;
if (opts.h2) {
  server = http2.createSecureServer({
    cert: fs.readFileSync(opts.cert), key: fs.readFileSync(opts.key), allowHTTP1: true,
  }, handle);
  server.on('session', () => { stats.h2_sessions++; });
} else {
  server = http.createServer(handle);
  server.keepAliveTimeout = 65000;
  server.headersTimeout = 66000;
  server.requestTimeout = 0;
}
server.on('connection', () => { stats.connections++; });

function stop(why) {
  process.stderr.write(`bench/server.js: stopping (${why}); ${JSON.stringify(stats)}\n`);
  process.exit(0);
}

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
  process.stdout.write(`${JSON.stringify({ customers: opts.customers, page_size: opts['page-size'],
    pages_rendered: pages.size, orgs: opts.orgs, delay_ms: opts['delay-ms'], rate: RATE, burst: BURST,
    h2: opts.h2 })}\n`);
});
setTimeout(() => stop('max lifetime'), opts['max-lifetime'] * 1000);
process.stdin.on('end', () => stop('stdin closed'));
process.stdin.on('error', () => stop('stdin error'));
process.stdin.resume();
