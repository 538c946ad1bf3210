/* The transport: easy handles of the client's pool on its multi handle. It sets a transfer's
 * options, collects what the server sends, builds header lines and holds the URL rule; it knows
 * nothing of OAuth, retries or batches.
 *
 * Memory rules (see INTERNALS.md): everything malloc'd lives in the client userdata (pc_xfer), so
 * a Lua error unwinding through the engine leaks nothing; libcurl callbacks only append to those
 * buffers and never call Lua. */
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <math.h>
#include <string.h>
#include <strings.h>
#include "engine.h"

const char *const pc_method_names[] = {"GET", "POST", "PUT", "DELETE", NULL};

/* ---- libcurl callbacks (no Lua in here) ---- */

/* Called with decoded bytes, so the cap also stops a compression bomb. */
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

/* ---- the URL rule ---- */

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

/* ---- header lines ---- */

int pc_header_name_ok(const char *s, size_t n) {
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
int pc_header_value_ok(const char *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0') return 0;
  return 1;
}

/* The one place header lines are built: "name: value", or 0 when the value cannot be a header
 * value or memory runs out (nothing added). */
int pc_header_add(lua_State *L, pc_xfer *x, const char *name, const char *v, size_t vn) {
  if (!pc_header_value_ok(v, vn)) return 0;
  lua_pushfstring(L, "%s: %s", name, v);
  struct curl_slist *n = curl_slist_append(x->hdrs, lua_tostring(L, -1));
  lua_pop(L, 1);
  if (n == NULL) return 0;
  x->hdrs = n;
  return 1;
}

/* Pushes the option string at key k of the client's options, or returns NULL (nothing pushed). */
/* ---- a transfer's options ---- */

int pc_xfer_prepare(pc_client *c, pc_xfer *x) {
  if (x->easy == NULL) {
    x->easy = curl_easy_init();
    if (x->easy == NULL) return 0;
  } else
    curl_easy_reset(x->easy); /* keeps live connections and the caches */
  pc_buf_reset(&x->body, PC_BUF_KEEP);
  pc_buf_reset(&x->rhdrs, PC_BUF_KEEP);
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  x->over_limit = x->oom = x->headers_over = x->headers_done = x->headers_cut = 0;
  x->errbuf[0] = '\0';
  x->max_bytes = c->max_response_bytes;
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

void pc_transport_set(lua_State *L, int ci, pc_client *c, const pc_req *r, pc_xfer *x) {
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
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85: the string form; the bitmask is deprecated there */
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
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
  default: curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, pc_method_names[r->method]); break;
  }
  if (r->method != M_GET && (r->body || r->method == M_POST)) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->bodylen : 0));
  }
}
