/* The transfer engine: a batch of requests run on the client's curl multi handle, each with its
 * own retry state. A single request is a batch of one.
 *
 * Memory rules (see STYLE.md): everything malloc'd lives in the client userdata (pc_xfer), so a Lua
 * error unwinding through here leaks nothing; libcurl callbacks only append to those buffers and
 * never call Lua. Lua hooks (clock, sleep, on_event) run between libcurl calls, never inside them. */
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "pc.h"

enum { M_GET, M_POST, M_PUT, M_DELETE };
static const char *const method_names[] = {"GET", "POST", "PUT", "DELETE", NULL};

typedef enum { R_WAITING, R_RUNNING, R_DONE } pc_rstate;

/* How a request may be retried (per request, decided by whoever builds it):
 * IDEMPOTENT: after a connection failure, a timeout before the request was sent, 408/429/5xx;
 * UNSENT: only when the request cannot have reached the server (no connection made) or the server
 *   asked for it (429, 503) -- a refresh grant, which the server redeems when it reads it;
 * NEVER: one attempt. */
typedef enum { RETRY_IDEMPOTENT, RETRY_UNSENT, RETRY_NEVER } pc_retry;
static const char *const retry_names[] = {"idempotent", "unsent", "never", NULL};

/* Per-request state of a batch; lives in a userdata on the Lua stack (no pointers to free). */
typedef struct {
  int method;
  int decode;
  int sensitive; /* a credential exchange: its bodies never go into errors or responses */
  int loopback;  /* http(s) to a loopback host: never through a proxy */
  int body_fn;   /* the body is built anew for each attempt by a function */
  pc_retry retry;
  const char *url, *body, *scope; /* strings pinned by the batch's private table */
  size_t bodylen;
  int attempts; /* every attempt made */
  int retries;  /* attempts that were retries counted against max_retries */
  int renewed;  /* a 401 has already led to a new token */
  int token_job; /* a token request the engine added for job_scope (not one of the caller's) */
  const char *job_scope;
  lua_Integer token_gen; /* the generation of the token the last attempt carried */
  int awaiting_token;    /* due, but waits for its scope's token job (not a time to wake for) */
  int origin;            /* its slot in the client's origins while it runs */
  double not_before;
  pc_rstate state;
} pc_req;

/* ---- buffers and libcurl callbacks (no Lua in here) ---- */

/* Called with decoded bytes, so the cap also stops a compression bomb. */
static size_t write_cb(char *p, size_t size, size_t nmemb, void *ud) {
  pc_xfer *x = ud;
  size_t n = size * nmemb;
  if (x->body.len + n > x->max_bytes) {
    x->over_limit = 1;
    return 0;
  }
  if (!pc_buf_append(&x->body, p, n)) {
    x->oom = 1;
    return 0;
  }
  return n;
}

static size_t header_cb(char *p, size_t size, size_t nmemb, void *ud) {
  pc_xfer *x = ud;
  size_t n = size * nmemb;
  /* a new status line starts a new response (1xx, a proxy's CONNECT answer): keep the last */
  if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) x->rhdrs.len = 0, x->headers_done = 0;
  if ((n == 2 && p[0] == '\r' && p[1] == '\n') || (n == 1 && p[0] == '\n')) x->headers_done = 1;
  if (x->rhdrs.len + n > PC_HEADERS_MAX) { /* absurd header block */
    x->headers_over = 1;
    return 0;
  }
  if (!pc_buf_append(&x->rhdrs, p, n)) {
    x->oom = 1;
    return 0;
  }
  return n;
}

void pc_xfer_release(pc_client *c, pc_xfer *x) {
  if (x->easy) {
    if (x->added && c->multi) curl_multi_remove_handle(c->multi, x->easy);
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
  }
  x->added = 0;
  x->req = -1;
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  pc_buf_free(&x->body);
  pc_buf_free(&x->rhdrs);
}

/* ---- request validation (misuse raises, before anything starts) ---- */

int pc_host_is_loopback(const char *host) {
  unsigned char a[16];
  if (strcasecmp(host, "localhost") == 0) return 1;
  if (strcmp(host, "[::1]") == 0 || strcmp(host, "::1") == 0) return 1;
  if (inet_pton(AF_INET, host, a) == 1) return a[0] == 127;
  return 0;
}

static int has_part(CURLU *u, CURLUPart part) {
  char *v = NULL;
  int has = curl_url_get(u, part, &v, 0) == CURLUE_OK;
  curl_free(v);
  return has;
}

/* The one loopback rule (the Lua layer asks core.url_problem): the host as libcurl normalises
 * it (so "127.1" is 127.0.0.1 and "127.0.0.08" is a name), then 127.0.0.0/8, ::1 or localhost.
 * Returns NULL when url may be used, or the reason it may not. No Lua calls inside:
 * the CURLU handle is freed before the caller raises. */
const char *pc_url_problem(const char *url, char *host, size_t hostlen) {
  const char *why = NULL;
  char *scheme = NULL, *h = NULL;
  CURLU *u = curl_url();
  host[0] = '\0';
  if (u == NULL) return "out of memory";
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
    why = "is not a valid absolute URL";
  else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
           curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK)
    why = "has no scheme or host";
  else if (has_part(u, CURLUPART_USER) || has_part(u, CURLUPART_PASSWORD) || has_part(u, CURLUPART_OPTIONS))
    why = "carries credentials (user:password@), which do not belong in a URL";
  else {
    snprintf(host, hostlen, "%s", h);
    if (strcasecmp(scheme, "https") == 0)
      why = NULL;
    else if (strcasecmp(scheme, "http") == 0)
      why = pc_host_is_loopback(h) ? NULL : "uses plain http:// to a host that is not loopback (use https://)";
    else
      why = "must use https:// (or http:// to a loopback host)";
  }
  curl_free(scheme);
  curl_free(h);
  curl_url_cleanup(u);
  return why;
}

static int valid_header_name(const char *s, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    int alnum = (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
    if (!(alnum || (ch && strchr("!#$%&'*+-.^_`|~", ch)))) return 0;
  }
  return 1;
}

/* A header value may hold no CR, LF or NUL: they would end the header, inject others or smuggle
 * a request. The one check, used for the caller's headers and for bearer tokens alike. */
static int valid_header_value(const char *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0') return 0;
  return 1;
}

static int str_field(lua_State *L, int t, const char *k, int required) {
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TNIL && !required) return 0;
  if (ty != LUA_TSTRING) luaL_error(L, "partnercustomers: request field '%s' must be a string", k);
  return 1;
}

static int name_index(const char *s, const char *const names[]) {
  for (int i = 0; names[i]; i++)
    if (strcmp(names[i], s) == 0) return i;
  return -1;
}

static void check_field_names(lua_State *L, int t) {
  static const char *const fields[] = {"method", "url", "headers", "body", "scope", "decode", "sensitive", "retry", NULL};
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "partnercustomers: request fields must be named");
    const char *k = lua_tostring(L, -1);
    int known = 0;
    for (int i = 0; fields[i]; i++) known |= strcmp(fields[i], k) == 0;
    if (!known) luaL_error(L, "partnercustomers: unknown request field '%s'", k);
  }
}

/* The request's headers (field of t), checked, as a list of {name, value} in private table p. */
static void parse_headers(lua_State *L, int t, int p) {
  lua_newtable(L);
  int list = lua_gettop(L), n = 0;
  int ty = lua_getfield(L, t, "headers");
  if (ty != LUA_TNIL) {
    if (ty != LUA_TTABLE) luaL_error(L, "partnercustomers: request field 'headers' must be a table");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      size_t kn, vn;
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "partnercustomers: headers must map names to string values");
      const char *k = lua_tolstring(L, -2, &kn), *v = lua_tolstring(L, -1, &vn);
      if (!valid_header_name(k, kn)) luaL_error(L, "partnercustomers: invalid header name");
      if (!valid_header_value(v, vn))
        luaL_error(L, "partnercustomers: header '%s' has a value with CR, LF or NUL", k);
      if (strcasecmp(k, "ms-requestid") == 0 || strcasecmp(k, "ms-correlationid") == 0) {
        lua_pushvalue(L, -1);
        lua_setfield(L, p, strcasecmp(k, "ms-requestid") == 0 ? "request_id" : "correlation_id");
      }
      lua_pushvalue(L, -2);
      lua_rawseti(L, list, ++n);
      lua_rawseti(L, list, ++n);
    }
  }
  lua_pop(L, 1);
  lua_setfield(L, p, "headers");
}

/* method, url, body (a string, or a function that builds it for each attempt) and retry. */
static void parse_target(lua_State *L, int t, int p, pc_req *r) {
  r->method = M_GET;
  if (str_field(L, t, "method", 0)) {
    r->method = name_index(lua_tostring(L, -1), method_names);
    if (r->method < 0) luaL_error(L, "partnercustomers: unsupported method '%s'", lua_tostring(L, -1));
  }
  lua_pop(L, 1);
  str_field(L, t, "url", 1);
  char host[256];
  const char *why = pc_url_problem(lua_tostring(L, -1), host, sizeof host);
  if (why) {
    pc_push_safe_url(L, lua_tostring(L, -1));
    luaL_error(L, "partnercustomers: URL %s %s", lua_tostring(L, -1), why);
  }
  r->loopback = pc_host_is_loopback(host);
  r->url = lua_tostring(L, -1);
  lua_setfield(L, p, "url");
  int ty = lua_getfield(L, t, "body");
  if (ty == LUA_TFUNCTION) {
    r->body_fn = 1;
    lua_setfield(L, p, "body_fn");
  } else if (ty == LUA_TSTRING) {
    r->body = lua_tolstring(L, -1, &r->bodylen);
    lua_setfield(L, p, "body");
  } else if (ty != LUA_TNIL)
    luaL_error(L, "partnercustomers: request field 'body' must be a string or a function");
  else
    lua_pop(L, 1);
  if (r->method == M_GET && ty != LUA_TNIL) luaL_error(L, "partnercustomers: a GET request cannot have a body");
  r->retry = RETRY_IDEMPOTENT;
  if (str_field(L, t, "retry", 0)) {
    int i = name_index(lua_tostring(L, -1), retry_names);
    if (i < 0) luaL_error(L, "partnercustomers: request field 'retry' must be \"idempotent\", \"unsent\" or \"never\"");
    r->retry = (pc_retry)i;
  }
  lua_pop(L, 1);
}

/* Validates request table at index t and builds its private table (pushed): the strings the
 * engine points at, and the header list. Misuse raises, before anything starts. */
static void parse_request(lua_State *L, int ci, int t, pc_req *r) {
  t = lua_absindex(L, t);
  if (!lua_istable(L, t)) luaL_error(L, "partnercustomers: a request must be a table");
  check_field_names(L, t);
  memset(r, 0, sizeof *r);
  lua_createtable(L, 0, 5);
  int p = lua_gettop(L);
  parse_target(L, t, p, r);
  if (str_field(L, t, "scope", 0)) {
    r->scope = lua_tostring(L, -1);
    if (!pc_has_credentials(L, ci))
      luaL_error(L, "partnercustomers: a request with a scope needs credentials on the client");
    lua_setfield(L, p, "scope");
  } else
    lua_pop(L, 1);
  if (lua_getfield(L, t, "decode") == LUA_TSTRING) {
    r->decode = pc_json_shape(lua_tostring(L, -1));
    if (r->decode < 0) luaL_error(L, "partnercustomers: request field 'decode' names no known answer shape");
  } else
    r->decode = lua_isnil(L, -1) ? PC_DECODE_JSON : lua_toboolean(L, -1);
  lua_getfield(L, t, "sensitive");
  r->sensitive = lua_toboolean(L, -1);
  lua_pop(L, 2);
  parse_headers(L, t, p);
}

/* ---- starting an attempt ---- */

/* The one place header lines are built: "name: value", or 0 when the value cannot be a header
 * value or memory runs out (nothing added). */
static int add_header(lua_State *L, pc_xfer *x, const char *name, const char *v, size_t vn) {
  if (!valid_header_value(v, vn)) return 0;
  lua_pushfstring(L, "%s: %s", name, v);
  struct curl_slist *n = curl_slist_append(x->hdrs, lua_tostring(L, -1));
  lua_pop(L, 1);
  if (n == NULL) return 0;
  x->hdrs = n;
  return 1;
}

/* Pushes the option string at key k of the client's options, or returns NULL (nothing pushed). */
static const char *opt_string(lua_State *L, int ci, const char *k) {
  lua_getiuservalue(L, ci, PC_UV_OPTS);
  lua_getfield(L, -1, k);
  lua_remove(L, -2);
  if (lua_isstring(L, -1)) return lua_tostring(L, -1);
  lua_pop(L, 1);
  return NULL;
}

/* Builds x's header list for request r (private table at pi). Returns NULL, or why not with
 * *kind set: a bearer token a header cannot carry is an auth error. */
static const char *build_headers(lua_State *L, int ci, pc_req *r, int pi, pc_xfer *x, pc_kind *kind) {
  int top = lua_gettop(L), ok = 1;
  *kind = PC_E_NETWORK;
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  lua_getfield(L, pi, "headers");
  for (lua_Integer i = 1; ok && lua_rawgeti(L, top + 1, i) == LUA_TSTRING; i += 2) {
    size_t vn;
    lua_rawgeti(L, top + 1, i + 1);
    const char *v = lua_tolstring(L, -1, &vn);
    ok = add_header(L, x, lua_tostring(L, -2), v, vn);
    lua_pop(L, 2);
  }
  lua_settop(L, top);
  if (!ok) return "out of memory building headers";
  if (r->scope) {
    r->token_gen = pc_token_push(L, ci, r->scope);
    size_t n;
    const char *tok = lua_tolstring(L, -1, &n);
    if (tok && !valid_header_value(tok, n)) {
      lua_settop(L, top);
      *kind = PC_E_AUTH;
      return "the bearer token contains CR, LF or NUL, which a header cannot carry";
    }
    if (tok) {
      lua_pushfstring(L, "Bearer %s", tok);
      ok = add_header(L, x, "Authorization", lua_tostring(L, -1), lua_rawlen(L, -1));
    }
    lua_settop(L, top);
  }
  /* no 100-continue round trip for small POST bodies */
  if (ok && r->method != M_GET) ok = add_header(L, x, "Expect", "", 0);
  return ok ? NULL : "out of memory building headers";
}

/* For a body built per attempt: calls the builder (the caller's code, or the token request's)
 * and pins what it returns. Returns NULL, or why there is no body (an auth error). */
static const char *build_body(lua_State *L, pc_req *r, int pi) {
  if (!r->body_fn) return NULL;
  lua_getfield(L, pi, "body_fn");
  lua_call(L, 0, 2);
  if (lua_type(L, -2) != LUA_TSTRING) {
    lua_pop(L, 2);
    return "cannot build the request body (the client assertion could not be signed)";
  }
  lua_pop(L, 1);
  r->body = lua_tolstring(L, -1, &r->bodylen);
  lua_setfield(L, pi, "body"); /* pinned until the next attempt replaces it */
  return NULL;
}

/* Seconds left before the call's deadline (at least 1 ms: libcurl reads 0 as no limit). */
static double remaining(lua_State *L, int ci, pc_client *c) {
  if (c->deadline == HUGE_VAL) return HUGE_VAL;
  return fmax(0.001, c->deadline - pc_clock(L, ci));
}

/* ca_file adds trust anchors to the system's (CURLOPT_CAINFO would replace the default bundle on
 * builds without a CA path); for HTTPS proxies as well. Runs inside libcurl: no Lua. */
static CURLcode add_ca_file(CURL *e, void *ssl_ctx, void *ud) {
  (void)e;
  X509_STORE *store = SSL_CTX_get_cert_store((SSL_CTX *)ssl_ctx);
  return X509_STORE_load_locations(store, (const char *)ud, NULL) == 1 ? CURLE_OK : CURLE_SSL_CACERT_BADFILE;
}

static void set_transport(lua_State *L, int ci, pc_client *c, pc_req *r, pc_xfer *x) {
  CURL *e = x->easy;
  curl_easy_setopt(e, CURLOPT_URL, r->url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)x);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)x);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)x);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* every encoding this libcurl decodes */
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(fmin(c->timeout, remaining(L, ci, c)) * 1000));
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_timeout * 1000));
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)ceil(c->low_speed_time));
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_response_bytes);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect must not carry the bearer elsewhere */
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  /* over HTTP/2, wait for a connection being made to the origin and multiplex on it */
  curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
  curl_easy_setopt(e, CURLOPT_SHARE, c->share);
  int top = lua_gettop(L);
  if (opt_string(L, ci, "ua")) curl_easy_setopt(e, CURLOPT_USERAGENT, lua_tostring(L, -1));
  if (opt_string(L, ci, "ca_file")) { /* pinned by the options table for the client's life */
    curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, add_ca_file);
    curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, (void *)lua_tostring(L, -1));
  }
  /* loopback never goes through a proxy, whatever the options or the environment say:
   * plain http:// would carry the credentials to the proxy in clear text */
  if (r->loopback) curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
  else if (opt_string(L, ci, "proxy")) curl_easy_setopt(e, CURLOPT_PROXY, lua_tostring(L, -1));
  lua_settop(L, top); /* libcurl copied the strings */
  switch (r->method) {
  case M_GET: curl_easy_setopt(e, CURLOPT_HTTPGET, 1L); break;
  case M_POST: curl_easy_setopt(e, CURLOPT_POST, 1L); break;
  default: curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method_names[r->method]); break;
  }
  if (r->method != M_GET && (r->body || r->method == M_POST)) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->bodylen : 0));
  }
}

/* Prepares x for request k (private table at index pi) and adds it to the multi handle.
 * Returns NULL, or a message with *kind on failure (nothing added). */
static const char *start_attempt(lua_State *L, int ci, pc_client *c, pc_req *r, int k, int pi, pc_xfer *x,
                                 pc_kind *kind) {
  if (x->easy == NULL) {
    x->easy = curl_easy_init();
    if (x->easy == NULL) return "curl_easy_init failed";
  } else
    curl_easy_reset(x->easy); /* keeps live connections and the caches */
  pc_buf_reset(&x->body, PC_BUF_KEEP);
  pc_buf_reset(&x->rhdrs, PC_BUF_KEEP);
  x->over_limit = x->oom = x->headers_over = x->headers_done = x->headers_cut = 0;
  x->errbuf[0] = '\0';
  x->max_bytes = c->max_response_bytes;
  const char *why = build_headers(L, ci, r, pi, x, kind);
  if (why == NULL && (why = build_body(L, r, pi)) != NULL) *kind = PC_E_AUTH;
  if (why) return why;
  set_transport(L, ci, c, r, x);
  if (curl_multi_add_handle(c->multi, x->easy) != CURLM_OK) return "curl_multi_add_handle failed";
  x->added = 1;
  x->req = k;
  r->state = R_RUNNING;
  r->attempts++;
  return NULL;
}

/* ---- finishing an attempt ---- */

static double backoff(pc_client *c, lua_State *L, int ci, int retry) {
  double step = fmin(c->backoff_max, c->backoff_base * pow(2, retry - 1));
  return step / 2 + step / 2 * pc_random(L, ci); /* jitter keeps at least half of the step */
}

/* Adds to error e the ids of the response (headers at hi, or 0), else those the body gave, else
 * the ones we sent (private table at pi). */
static void add_ids(lua_State *L, int e, int hi, int pi) {
  static const char *const rid[] = {"ms-requestid", "request-id", "x-ms-request-id", "x-request-id", NULL};
  static const char *const cid[] = {"ms-correlationid", "x-ms-correlation-id", "client-request-id", NULL};
  static const char *const cv[] = {"ms-cv", NULL};
  const char *const *names[3] = {rid, cid, cv};
  const char *fields[3] = {"request_id", "correlation_id", "cv"};
  for (int f = 0; f < 3; f++) {
    int found = 0;
    for (int i = 0; hi && !found && names[f][i]; i++) {
      if (lua_getfield(L, hi, names[f][i]) == LUA_TSTRING) {
        lua_setfield(L, e, fields[f]);
        found = 1;
      } else
        lua_pop(L, 1);
    }
    if (found || f == 2) continue;
    int from_body = lua_getfield(L, e, fields[f]) != LUA_TNIL;
    lua_pop(L, 1);
    if (!from_body && lua_getfield(L, pi, fields[f]) == LUA_TSTRING) lua_setfield(L, e, fields[f]);
    else if (!from_body) lua_pop(L, 1);
  }
}

typedef struct {
  pc_kind kind;
  int retryable;
} pc_class;

/* What a failed transfer means, and whether request r may be tried again. Whether the request
 * was sent decides it, not whether a connection was made: a reused keep-alive connection reports
 * no connect time, yet the server got the request. */
static pc_class classify_curl(CURLcode rc, pc_xfer *x, const pc_req *r) {
  pc_class k = {PC_E_NETWORK, 0};
  long sent = 0;
  curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &sent);
  int idempotent = r->retry == RETRY_IDEMPOTENT, maybe = r->retry != RETRY_NEVER;
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    /* after the request went out, a retry would cost another whole timeout, and a server
     * may have acted on it */
    k.kind = PC_E_TIMEOUT;
    k.retryable = maybe && sent == 0;
    break;
  case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY: case CURLE_COULDNT_CONNECT:
    k.retryable = maybe; /* never reached the server */
    break;
  case CURLE_SEND_ERROR: case CURLE_RECV_ERROR: case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
    k.retryable = idempotent; /* a dropped exchange: the server may have read the request */
    break;
  case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION: case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER: case CURLE_SSL_CACERT_BADFILE: case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH: case CURLE_SSL_CRL_BADFILE: case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_ENGINE_NOTFOUND: case CURLE_SSL_ENGINE_SETFAILED: case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_USE_SSL_FAILED: case CURLE_SSL_SHUTDOWN_FAILED:
    k.kind = PC_E_TLS;
    break;
  case CURLE_FILESIZE_EXCEEDED: k.kind = PC_E_LIMIT; break;
  case CURLE_WRITE_ERROR: if (x->over_limit || x->headers_over) k.kind = PC_E_LIMIT; break;
  /* libcurl's own size limits (a header line over 100 KiB, a URL or header it cannot hold) */
  case CURLE_OUT_OF_MEMORY: if (!x->oom) k.kind = PC_E_LIMIT; break;
  case CURLE_BAD_CONTENT_ENCODING: k.kind = PC_E_DECODE; break;
  case CURLE_UNSUPPORTED_PROTOCOL: case CURLE_WEIRD_SERVER_REPLY: k.kind = PC_E_PROTOCOL; break;
  default: break;
  }
  return k;
}

static int retryable_status(const pc_req *r, long s) {
  if (r->retry == RETRY_NEVER) return 0;
  if (r->retry == RETRY_UNSENT) return s == 429 || s == 503; /* the server says it did not act */
  return s == 408 || s == 429 || s == 500 || s == 502 || s == 503 || s == 504;
}

/* ---- pacing per origin (AIMD: a throttling answer halves the window and pauses the origin,
 * each clean answer widens it by 1/window, so by one per window of answers) ---- */

/* The slot of url's origin (scheme://host:port, up to the path), made if needed. */
static int origin_slot(pc_client *c, const char *url, double now) {
  const char *p = strstr(url, "://");
  size_t n = p ? (size_t)(p + 3 - url) + strcspn(p + 3, "/?#") : strlen(url);
  if (n >= sizeof c->origins[0].name) n = sizeof c->origins[0].name - 1;
  int oldest = 0;
  for (int i = 0; i < PC_ORIGINS; i++) {
    pc_origin *o = &c->origins[i];
    if (o->name[0] && strlen(o->name) == n && memcmp(o->name, url, n) == 0) {
      o->used = now;
      return i;
    }
    if (o->running == 0 && o->used < c->origins[oldest].used) oldest = i;
  }
  pc_origin *o = &c->origins[oldest];
  memcpy(o->name, url, n);
  o->name[n] = '\0';
  o->window = c->nxfers, o->paused_until = -HUGE_VAL, o->used = now;
  return oldest;
}

static void emit_pace(lua_State *L, int ci, pc_origin *o, const char *reason) {
  lua_createtable(L, 0, 4);
  pc_set_str(L, "type", "pace");
  pc_set_str(L, "origin", o->name);
  pc_set_int(L, "window", (lua_Integer)o->window);
  pc_set_str(L, "reason", reason);
  pc_emit(L, ci);
}

/* An answer from origin slot i: throttled (429, 503: pause every request of the origin until
 * `until`) or clean (2xx). */
static void pace(lua_State *L, int ci, pc_client *c, int i, int throttled, double until) {
  pc_origin *o = &c->origins[i];
  int before = (int)o->window;
  if (throttled) {
    o->window = fmax(1, o->window / 2);
    o->paused_until = fmax(o->paused_until, until);
  } else
    o->window = fmin(c->nxfers, o->window + 1 / o->window);
  if ((int)o->window != before) emit_pace(L, ci, o, throttled ? "throttled" : "clean answers");
}

typedef struct {
  lua_State *L;
  int ci, pi, res, terr; /* client, private tables, results, token errors by scope */
  pc_client *c;
  pc_req *rq;
  int n, done, running; /* n: the caller's requests (token jobs come after them) */
  int total, cap, rqi;  /* requests and token jobs; room in rq; rq's stack index */
  int jobs;             /* { [scope] = index of its running token job } */
  int limit; /* transfers at once for this call (its parallel, at most max_parallel) */
  int blocked; /* a due request waits for a free handle or for a token */
} pc_batch;

static void push_pi(pc_batch *b, int k) { lua_rawgeti(b->L, b->pi, k + 1); }

/* Common fields of an error about request k; error table at the top. */
static void decorate_error(pc_batch *b, int k, int hi) {
  lua_State *L = b->L;
  pc_req *r = &b->rq[k];
  pc_set_str(L, "method", method_names[r->method]);
  pc_push_safe_url(L, r->url);
  lua_setfield(L, -2, "url");
  pc_set_int(L, "attempts", r->attempts);
  int e = lua_gettop(L);
  push_pi(b, k);
  add_ids(L, e, hi, e + 1);
  lua_pop(L, 1);
  /* any field may quote a server's words: make sure none of our secrets is among them */
  pc_redact_table(L, b->ci, -1);
}

/* A token job's result pair (at the top, popped): the token cached, or its error kept for the
 * requests that wait for that scope. */
static void job_done(pc_batch *b, int k) {
  lua_State *L = b->L;
  const char *scope = b->rq[k].job_scope;
  lua_pushnil(L);
  lua_setfield(L, b->jobs, scope);
  if (!pc_token_accept(L, b->ci, scope, -1)) lua_setfield(L, b->terr, scope);
  lua_pop(L, 1);
}

/* Stores the value at the top (a response or an error) as request k's result. */
static void finish(pc_batch *b, int k, int ok) {
  lua_State *L = b->L;
  lua_createtable(L, 2, 0);
  lua_rotate(L, -2, 1);
  lua_rawseti(L, -2, ok ? 1 : 2);
  b->rq[k].state = R_DONE;
  if (b->rq[k].token_job) {
    job_done(b, k);
    return;
  }
  lua_rawseti(L, b->res, k + 1);
  b->done++;
}

static void emit_retry(pc_batch *b, int k, double wait, const char *reason, long status) {
  lua_State *L = b->L;
  pc_req *r = &b->rq[k];
  lua_createtable(L, 0, 7);
  pc_set_str(L, "type", "retry");
  pc_set_str(L, "method", method_names[r->method]);
  pc_push_safe_url(L, r->url);
  lua_setfield(L, -2, "url");
  pc_set_int(L, "attempt", r->attempts);
  pc_set_num(L, "wait", wait);
  pc_set_str(L, "reason", reason);
  if (status > 0) pc_set_int(L, "status", status);
  pc_emit(L, b->ci);
}

static void schedule(pc_batch *b, int k, double now, double wait) {
  b->rq[k].not_before = now + wait;
  b->rq[k].state = R_WAITING;
}

static void emit_request(pc_batch *b, int k, pc_xfer *x, CURLcode rc, long status) {
  lua_State *L = b->L;
  pc_req *r = &b->rq[k];
  double elapsed = 0;
  curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &elapsed);
  lua_createtable(L, 0, 7);
  pc_set_str(L, "type", "request");
  pc_set_str(L, "method", method_names[r->method]);
  pc_push_safe_url(L, r->url);
  lua_setfield(L, -2, "url");
  if (status > 0) pc_set_int(L, "status", status);
  pc_set_int(L, "attempt", r->attempts);
  pc_set_num(L, "elapsed", elapsed);
  if (rc != CURLE_OK) pc_set_str(L, "error", curl_easy_strerror(rc));
  pc_emit(L, b->ci);
}

/* A transfer that failed below HTTP: retried, or finished with a typed error. */
static void failed_transfer(pc_batch *b, int k, pc_xfer *x, CURLcode rc, double now) {
  lua_State *L = b->L;
  pc_client *c = b->c;
  pc_req *r = &b->rq[k];
  pc_class cl = classify_curl(rc, x, r);
  if (x->oom) cl.kind = PC_E_NETWORK, cl.retryable = 0;
  double wait = cl.retryable && r->retries < c->max_retries ? backoff(c, L, b->ci, r->retries + 1) : 0;
  if (cl.retryable && r->retries < c->max_retries && now + wait < c->deadline) {
    r->retries++;
    emit_retry(b, k, wait, curl_easy_strerror(rc), 0);
    schedule(b, k, now, wait);
    return;
  }
  if (x->headers_cut) cl.kind = PC_E_PROTOCOL;
  if (x->headers_over)
    lua_pushfstring(L, "response headers larger than %d KiB", PC_HEADERS_MAX / 1024);
  else if (x->headers_cut)
    lua_pushliteral(L, "the connection closed before the end of the response headers");
  else if (cl.kind == PC_E_LIMIT && (x->over_limit || rc == CURLE_FILESIZE_EXCEEDED))
    lua_pushfstring(L, "response larger than max_response_bytes (%I)", (LUAI_UACINT)c->max_response_bytes);
  else if (x->oom)
    lua_pushliteral(L, "out of memory");
  else
    lua_pushstring(L, x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
  pc_push_error(L, cl.kind, lua_tostring(L, -1));
  lua_remove(L, -2);
  pc_set_str(L, "curl_code", curl_easy_strerror(rc));
  decorate_error(b, k, 0);
  finish(b, k, 0);
}

/* A 2xx answer: the response, or a decode error. Headers table at hi (replaced by the result). */
static void succeeded(pc_batch *b, int k, pc_xfer *x, long status, int hi) {
  lua_State *L = b->L;
  pc_req *r = &b->rq[k];
  /* the ids the Lua layer copies into its own errors come from here: no secret among them */
  pc_redact_table(L, b->ci, hi);
  lua_createtable(L, 0, 6);
  pc_set_int(L, "status", status);
  lua_pushvalue(L, hi);
  lua_setfield(L, -2, "headers");
  pc_set_int(L, "attempts", r->attempts);
  lua_pushstring(L, r->url);
  lua_setfield(L, -2, "url");
  int ok = 1;
  if (r->decode && x->body.len > 0) {
    pc_json_rc jr = pc_json_decode(L, x->body.p, x->body.len, r->decode);
    if (jr != PC_JSON_OK) {
      lua_pushfstring(L, jr == PC_JSON_TOO_MANY ? "%s" : "response is not valid JSON (%s)", lua_tostring(L, -1));
      pc_push_error(L, jr == PC_JSON_TOO_MANY ? PC_E_LIMIT : PC_E_DECODE, lua_tostring(L, -1));
      pc_set_int(L, "status", status);
      decorate_error(b, k, hi);
      ok = 0;
    } else {
      if (r->decode >= PC_DECODE_SHAPE) lua_setfield(L, -3, "shaped");
      lua_setfield(L, -2, "data");
    }
  }
  if (ok && !r->sensitive) {
    lua_pushlstring(L, x->body.p ? x->body.p : "", x->body.len);
    lua_setfield(L, -2, "body");
  }
  lua_replace(L, hi);
  lua_settop(L, hi);
  finish(b, k, ok);
}

/* Pushes the message of an HTTP error; ra is the Retry-After asked for (or -1). */
static void push_http_message(lua_State *L, pc_client *c, long status, double ra) {
  if (ra > c->retry_after_cap)
    lua_pushfstring(L, "HTTP %d: the server asked to wait %f s, more than retry_after_cap (%f s)", (int)status,
                    (lua_Number)fmin(ra, 1e15), (lua_Number)c->retry_after_cap);
  else
    lua_pushfstring(L, "HTTP %d", (int)status);
}

/* A non-2xx answer that will not be retried: a typed error with what the body says. */
static void http_error(pc_batch *b, int k, pc_xfer *x, long status, double ra, int hi) {
  lua_State *L = b->L;
  pc_client *c = b->c;
  int over_cap = ra > c->retry_after_cap && retryable_status(&b->rq[k], status);
  pc_kind kind = PC_E_HTTP;
  if (status == 401 || status == 403) kind = PC_E_AUTH;
  else if (status == 429) kind = PC_E_THROTTLED;
  push_http_message(L, c, status, over_cap ? ra : -1);
  pc_push_error(L, kind, lua_tostring(L, -1));
  lua_remove(L, -2);
  pc_set_int(L, "status", status);
  if (ra >= 0) pc_set_num(L, "retry_after", ra);
  if (x->body.len > 0 && pc_json_decode(L, x->body.p, x->body.len, PC_DECODE_JSON)) {
    if (lua_istable(L, -1)) pc_error_fields_from_body(L);
    lua_pop(L, 1);
  } else if (x->body.len > 0)
    lua_pop(L, 1); /* not JSON: the message stays "HTTP n" */
  if (over_cap) { /* our explanation beats the server's text */
    push_http_message(L, c, status, ra);
    lua_setfield(L, -2, "message");
  }
  if (!b->rq[k].sensitive && x->body.len > 0) pc_set_body(L, b->ci, x->body.p, x->body.len);
  decorate_error(b, k, hi);
  lua_replace(L, hi);
  lua_settop(L, hi);
  finish(b, k, 0);
}

/* Decides what request k's finished attempt on x means: done, or another attempt later. */
static void complete(pc_batch *b, int k, pc_xfer *x, CURLcode rc) {
  lua_State *L = b->L;
  pc_client *c = b->c;
  pc_req *r = &b->rq[k];
  long status = 0;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
  double now = pc_clock(L, b->ci);
  /* a connection closed inside the header block: libcurl may report the partial answer as done */
  if (rc == CURLE_OK && !x->headers_done) rc = CURLE_PARTIAL_FILE, x->headers_cut = 1;
  emit_request(b, k, x, rc, status);
  if (rc != CURLE_OK) {
    failed_transfer(b, k, x, rc, now);
    return;
  }
  pc_push_headers(L, x->rhdrs.p, x->rhdrs.len);
  int hi = lua_gettop(L);
  if (status >= 200 && status < 300) {
    pace(L, b->ci, c, r->origin, 0, 0);
    succeeded(b, k, x, status, hi);
    return;
  }
  if (status == 401 && r->scope && !r->renewed && pc_token_renewable(L, b->ci)) {
    /* the token may have been revoked or expired early: a new one, once */
    r->renewed = 1;
    pc_token_drop(L, b->ci, r->scope, r->token_gen); /* only the token this request carried */
    emit_retry(b, k, 0, "HTTP 401: renewing the token", status);
    schedule(b, k, now, 0);
    lua_settop(L, hi - 1);
    return;
  }
  lua_getfield(L, hi, "retry-after");
  double ra = pc_retry_after_parse(lua_tostring(L, -1), pc_wall_clock(L, b->ci));
  lua_pop(L, 1);
  int again = retryable_status(r, status) && !(ra > c->retry_after_cap) && r->retries < c->max_retries;
  double wait = again ? fmax(backoff(c, L, b->ci, r->retries + 1), ra) : 0;
  if (status == 429 || status == 503) /* pause the origin, not only this request */
    pace(L, b->ci, c, r->origin, 1, now + fmin(fmax(wait, ra), c->retry_after_cap));
  if (again && now + wait < c->deadline) { /* a wait past the deadline: the answer stands */
    r->retries++;
    char reason[64];
    snprintf(reason, sizeof reason, "HTTP %ld", status);
    emit_retry(b, k, wait, reason, status);
    schedule(b, k, now, wait);
    lua_settop(L, hi - 1);
    return;
  }
  http_error(b, k, x, status, ra, hi);
}

/* ---- the loop ---- */

static pc_xfer *free_xfer(pc_batch *b) {
  if (b->running >= b->limit) return NULL;
  for (int i = 0; i < b->c->nxfers; i++)
    if (!b->c->xfers[i].added) return &b->c->xfers[i];
  return NULL;
}

/* Adds a token job for scope: the grant's token request, run beside the other transfers. */
static void add_token_job(pc_batch *b, const char *scope) {
  lua_State *L = b->L;
  if (b->total == b->cap) { /* grow rq: nothing holds a pointer into it across this call */
    int cap = b->cap * 2;
    pc_req *rq = lua_newuserdatauv(L, sizeof(pc_req) * (size_t)cap, 0);
    memcpy(rq, b->rq, sizeof(pc_req) * (size_t)b->total);
    lua_replace(L, b->rqi);
    b->rq = rq, b->cap = cap;
  }
  int k = b->total;
  pc_token_push_request(L, b->ci, scope);
  parse_request(L, b->ci, -1, &b->rq[k]);
  lua_pushstring(L, scope);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "job_scope"); /* pinned by the job's private table */
  b->rq[k].job_scope = lua_tostring(L, -1);
  lua_pop(L, 1);
  lua_rawseti(L, b->pi, k + 1);
  lua_pop(L, 1);
  b->rq[k].token_job = 1;
  b->rq[k].state = R_WAITING;
  b->rq[k].not_before = -HUGE_VAL;
  lua_pushinteger(L, k);
  lua_setfield(L, b->jobs, scope);
  b->total++;
}

/* Whether request k may start now as far as its token goes: 1 yes; 0 not yet (a token job runs);
 * -1 it was finished with the error that refused its token. Starts renewals early: a token
 * past its renewal time is still used while the new one is fetched. */
static int token_ready(pc_batch *b, int k) {
  lua_State *L = b->L;
  const char *scope = b->rq[k].scope;
  if (scope == NULL) return 1;
  pc_token_state st = pc_token_state_of(L, b->ci, scope);
  if (st == PC_TOKEN_FRESH) return 1;
  int job = lua_getfield(L, b->jobs, scope) != LUA_TNIL;
  lua_pop(L, 1);
  if (st == PC_TOKEN_NONE && lua_getfield(L, b->terr, scope) != LUA_TNIL) {
    finish(b, k, 0); /* one refused token request answers every request with that scope */
    return -1;
  }
  if (st == PC_TOKEN_NONE) lua_pop(L, 1);
  if (!job && pc_token_has_provider(L, b->ci)) {
    if (pc_token_from_provider(L, b->ci, scope)) return 1;
    lua_setfield(L, b->terr, scope);
    return st == PC_TOKEN_RENEW ? 1 : token_ready(b, k);
  }
  if (!job && pc_token_renewable(L, b->ci)) add_token_job(b, scope);
  return st == PC_TOKEN_RENEW;
}

/* Starts every waiting request that is due, as far as free handles allow. */
static void start_due(pc_batch *b) {
  lua_State *L = b->L;
  double now = pc_clock(L, b->ci);
  b->blocked = 0;
  for (int k = 0; k < b->total; k++) {
    if (b->rq[k].state != R_WAITING || b->rq[k].not_before > now) continue;
    if (now >= b->c->deadline) {
      pc_push_error(L, PC_E_TIMEOUT, "the call's deadline passed before this request could start");
      decorate_error(b, k, 0);
      finish(b, k, 0);
      continue;
    }
    int ready = token_ready(b, k);
    if (ready >= 0) b->rq[k].awaiting_token = ready == 0;
    if (ready <= 0) {
      b->blocked |= ready == 0;
      continue;
    }
    int oi = origin_slot(b->c, b->rq[k].url, now);
    pc_origin *o = &b->c->origins[oi];
    if (now < o->paused_until) { /* the origin is throttled: every request of it waits */
      b->rq[k].not_before = o->paused_until;
      continue;
    }
    if (o->running >= (int)o->window) {
      b->blocked = 1;
      continue;
    }
    pc_xfer *x = free_xfer(b);
    if (x == NULL) {
      b->blocked = 1;
      return;
    }
    push_pi(b, k);
    pc_kind kind = PC_E_NETWORK;
    const char *fail = start_attempt(L, b->ci, b->c, &b->rq[k], k, lua_gettop(L), x, &kind);
    lua_pop(L, 1);
    if (fail) {
      pc_push_error(L, kind, fail);
      decorate_error(b, k, 0);
      finish(b, k, 0);
      continue;
    }
    b->running++;
    b->rq[k].origin = oi;
    o->running++;
  }
}

static double next_due(pc_batch *b) {
  double t = HUGE_VAL;
  for (int k = 0; k < b->total; k++)
    if (b->rq[k].state == R_WAITING && !b->rq[k].awaiting_token && b->rq[k].not_before < t) t = b->rq[k].not_before;
  return t;
}

static void drain_messages(pc_batch *b) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(b->c->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *e = m->easy_handle;
    CURLcode rc = m->data.result; /* read before the handle is removed */
    char *priv = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
    pc_xfer *x = (pc_xfer *)(void *)priv;
    curl_multi_remove_handle(b->c->multi, e);
    x->added = 0;
    b->running--;
    int k = x->req;
    x->req = -1;
    b->c->origins[b->rq[k].origin].running--;
    complete(b, k, x, rc);
  }
}

/* Waits for socket activity, at most until the next retry is due and never longer than one
 * slice, then lets Lua's interrupt hook run (Ctrl-C stops a call within a slice). */
static void wait_for_transfers(pc_batch *b) {
  double wait = b->blocked ? PC_WAIT_SLICE : next_due(b) - pc_clock(b->L, b->ci);
  if (wait > PC_WAIT_SLICE) wait = PC_WAIT_SLICE;
  curl_multi_poll(b->c->multi, NULL, 0, wait < 0 ? 0 : (int)(wait * 1000), NULL);
  pc_interruptible(b->L);
}

void pc_run(lua_State *L, int ci, int ri, int parallel) {
  ci = lua_absindex(L, ci);
  ri = lua_absindex(L, ri);
  pc_batch b = {0};
  b.L = L;
  b.ci = ci;
  b.c = pc_check_client(L, ci);
  b.n = (int)luaL_len(L, ri);
  b.limit = parallel > 0 && parallel < b.c->nxfers ? parallel : b.c->nxfers;
  luaL_checkstack(L, 24, NULL);
  lua_createtable(L, b.n, 0);
  b.pi = lua_gettop(L);
  b.cap = b.n + 4;
  b.total = b.n;
  b.rq = lua_newuserdatauv(L, sizeof(pc_req) * (size_t)b.cap, 0);
  b.rqi = lua_gettop(L);
  for (int k = 0; k < b.n; k++) {
    lua_rawgeti(L, ri, k + 1);
    parse_request(L, ci, -1, &b.rq[k]);
    lua_rawseti(L, b.pi, k + 1);
    lua_pop(L, 1);
    b.rq[k].state = R_WAITING;
  }
  lua_createtable(L, b.n, 0);
  b.res = lua_gettop(L);
  lua_newtable(L);
  b.terr = lua_gettop(L);
  lua_newtable(L);
  b.jobs = lua_gettop(L);

  while (b.done < b.n) {
    start_due(&b);
    if (b.done >= b.n) break;
    if (b.running > 0) {
      int still = 0;
      curl_multi_perform(b.c->multi, &still);
      drain_messages(&b);
      start_due(&b); /* refill freed slots before waiting: no slot idles for a round trip */
      if (b.running > 0 && b.done < b.n) wait_for_transfers(&b);
    } else if (b.done < b.n) {
      double wait = next_due(&b) - pc_clock(L, ci);
      if (wait > 0) pc_sleep(L, ci, wait);
    }
  }
  lua_pushvalue(L, b.res);
  lua_replace(L, b.pi);
  lua_settop(L, b.pi);
}
