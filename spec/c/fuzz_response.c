/* libFuzzer harness over the response path of partnercustomers.core (`make fuzz`), built with
 * the module sources (csrc) and liblua5.4 into one binary (clang -fsanitize=fuzzer,address,undefined).
 *
 * The first byte of an input picks the target; the rest is what a server could send:
 *   0  JSON body          pc_json_decode: then no JSON null (a NULL light userdata) is left and no
 *                         integral float that fits a Lua integer
 *   1  header block       pc_push_headers: names non-empty, lower-case, without ':' or LF; values
 *                         strings without LF
 *   2  Retry-After value  pc_retry_after_parse (a NUL-terminated copy): -1, or finite and >= 0
 *   3  error body         byte 1 picks the kind, the rest is decoded; a table goes through
 *                         pc_push_error + pc_error_fields_from_body, then __tostring through Lua's
 *                         tostring: code and message are strings, the text is one line
 *   4  link               byte 1 picks the page it came with, the rest is the link: the Lua pager's
 *                         pager.link when lua/partnercustomers/pager.lua is there (an accepted link
 *                         passes core.url_problem and has the page's origin as libcurl reads both),
 *                         and pc_url_problem on the link as it is (accepted: https, or http to a
 *                         loopback host)
 * Everything that touches Lua runs in one lua_State under lua_pcall (a memory error is an
 * answer, not a finding); the stack is reset after each input. A broken invariant aborts. */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include "pc.h"
#include "lualib.h"

int luaopen_partnercustomers_core(lua_State *L);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef CJSON_CPATH
#define CJSON_CPATH "/usr/lib/x86_64-linux-gnu/lua/5.4/?.so"
#endif
#define NOW 1700000000.0 /* the clock Retry-After dates are read against */
#define MAX_DEPTH 300    /* beyond the decoder's 256 */

static lua_State *L;
static int have_pager;

#define BROKEN(...)                                           \
  do {                                                        \
    fprintf(stderr, "fuzz: invariant broken: " __VA_ARGS__); \
    fputc('\n', stderr);                                      \
    abort();                                                  \
  } while (0)

/* The pages a link may come with, and the base_url path prefix of each client. */
static const char *const pages[][2] = {
  {"https://api.partnercenter.microsoft.com/v1/customers?size=200", ""},
  {"http://127.0.0.1:41233/partner/customers?$skiptoken=736b69703a3130", ""},
  {"https://graph.avepointonlineservices.com/partner/external/v3/general/customers?pageIndex=2", ""},
  {"https://gateway.example.com/pc/v1/customers?size=10", "/pc"},
  {"http://localhost/v1/customers", ""},
  {"http://[::1]:8080/api/partner/customers", "/api"},
};
#define NPAGES (sizeof pages / sizeof pages[0])

/* ---- invariants ---- */

/* No JSON null left, no integral float that fits an integer, at any depth. */
static void check_normalised(lua_State *S, int idx, int depth) {
  if (depth > MAX_DEPTH) BROKEN("JSON nested deeper than %d survived decoding", MAX_DEPTH);
  int t = lua_type(S, idx);
  if (t == LUA_TLIGHTUSERDATA && lua_touserdata(S, idx) == NULL) BROKEN("a JSON null survived normalisation");
  if (t == LUA_TNUMBER && !lua_isinteger(S, idx)) {
    lua_Number d = lua_tonumber(S, idx);
    lua_Integer i;
    if (floor(d) == d && lua_numbertointeger(d, &i)) BROKEN("integral float %.17g was not made an integer", d);
  }
  if (t != LUA_TTABLE) return;
  luaL_checkstack(S, 3, NULL);
  idx = lua_absindex(S, idx);
  lua_pushnil(S);
  while (lua_next(S, idx)) {
    check_normalised(S, -1, depth + 1);
    lua_pop(S, 1);
  }
}

static void check_header_table(lua_State *S, int idx) {
  lua_pushnil(S);
  while (lua_next(S, idx)) {
    size_t kn, vn;
    if (lua_type(S, -2) != LUA_TSTRING || lua_type(S, -1) != LUA_TSTRING) BROKEN("a header that is not a string");
    const char *k = lua_tolstring(S, -2, &kn), *v = lua_tolstring(S, -1, &vn);
    if (kn == 0) BROKEN("an empty header name");
    for (size_t i = 0; i < kn; i++)
      if ((k[i] >= 'A' && k[i] <= 'Z') || k[i] == ':' || k[i] == '\n') BROKEN("header name '%s'", k);
    if (memchr(v, '\n', vn)) BROKEN("a header value with LF");
    lua_pop(S, 1);
  }
}

/* An error object after pc_error_fields_from_body, and its tostring (at the top). */
static void check_error(lua_State *S, int e) {
  static const char *const fields[] = {"kind", "message", "code", "trace_id", "correlation_id", NULL};
  for (int i = 0; fields[i]; i++) {
    int t = lua_getfield(S, e, fields[i]);
    if (t != LUA_TNIL && t != LUA_TSTRING) BROKEN("error field %s is a %s", fields[i], lua_typename(S, t));
    if (i < 2 && t != LUA_TSTRING) BROKEN("error field %s is missing", fields[i]);
    lua_pop(S, 1);
  }
  size_t n;
  const char *s = lua_tolstring(S, -1, &n);
  if (s == NULL || strncmp(s, "partnercustomers: ", 18) != 0) BROKEN("tostring(err) = %s", s ? s : "(not a string)");
  if (memchr(s, '\n', n) || memchr(s, '\r', n)) BROKEN("tostring(err) is not one line: %s", s);
}

/* The scheme, host and port of url as libcurl reads it (default ports filled in), in out. */
static int curl_origin(const char *url, char *out, size_t outlen) {
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL, *port = NULL;
  int ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
           curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
           curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
           curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK;
  if (ok) snprintf(out, outlen, "%s://%s:%ld", scheme, host, strtol(port, NULL, 10));
  for (char *p = out; ok && *p; p++) *p = (char)tolower((unsigned char)*p);
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return ok;
}

/* An URL pc_url_problem accepted: https, or http to a loopback host, as a fresh libcurl parse says. */
static void check_accepted(const char *url, const char *host) {
  char origin[512];
  if (host[0] == '\0') BROKEN("url_problem accepted %s with no host", url);
  if (!curl_origin(url, origin, sizeof origin)) BROKEN("url_problem accepted %s, which libcurl cannot parse", url);
  if (strncmp(origin, "https://", 8) == 0) return;
  if (strncmp(origin, "http://", 7) != 0) BROKEN("url_problem accepted scheme of %s", url);
  if (!pc_host_is_loopback(host)) BROKEN("url_problem accepted plain http to %s (%s)", host, url);
}

/* What the decoder gave (at the top) against lua-cjson's decoding of the same text, normalised as
 * the core promises: cjson must accept what the decoder accepts, and the trees must match (numbers
 * compared as doubles too: cjson reads every number as one, so integers past 2^53 are rounded). */
static const char cjson_key = 'c'; /* registry: the checking function below */

static void check_like_cjson(lua_State *S, const char *p, size_t n) {
  lua_rawgetp(S, LUA_REGISTRYINDEX, &cjson_key);
  lua_pushvalue(S, -2);
  lua_pushlstring(S, p, n);
  lua_call(S, 2, 1);
  if (lua_isstring(S, -1)) BROKEN("unlike lua-cjson: %s", lua_tostring(S, -1));
  lua_pop(S, 1);
}

static const char cjson_check[] =
  "local cjson = require 'cjson'\n"
  "local function norm(v)\n"
  "  if v == cjson.null then return nil end\n"
  "  if math.type(v) == 'float' then return math.tointeger(v) or v end\n"
  "  if type(v) ~= 'table' then return v end\n"
  "  local out, n = {}, #v\n"
  "  if n > 0 then for i = 1, n do out[#out + 1] = norm(v[i]) end\n"
  "  else for k, x in pairs(v) do out[k] = norm(x) end end\n"
  "  return out\n"
  "end\n"
  "local function same(a, b)\n"
  "  if type(a) == 'number' and type(b) == 'number' then return a == b or a + 0.0 == b + 0.0 end\n"
  "  if type(a) ~= type(b) then return false end\n"
  "  if type(a) ~= 'table' then return a == b end\n"
  "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
  "  for k in pairs(b) do if a[k] == nil then return false end end\n"
  "  return true\n"
  "end\n"
  "return function(ours, text)\n"
  "  local ok, theirs = pcall(cjson.decode, text)\n"
  "  if not ok then return 'it refuses what the decoder accepted: ' .. tostring(theirs) end\n"
  "  if not same(ours, norm(theirs)) then return 'another tree' end\n"
  "end\n";

/* ---- targets (each called under lua_pcall with the input as a light userdata) ---- */

typedef struct {
  const char *p; /* NUL-terminated copy */
  size_t n;
  int arg; /* the byte after the selector, for the targets that take one */
} fuzz_in;

/* The same text as plain JSON, then as each listing shape (customers checked and normalised in
 * the same pass, with a report above the value). */
static int t_json(lua_State *S) {
  const fuzz_in *in = lua_touserdata(S, 1);
  static const char *const shapes[] = {NULL, "avepoint-v3", "avepoint-odata"};
  /* a copy of exactly n bytes (no NUL after it), so that ASan sees any read past the text */
  char *text = lua_newuserdatauv(S, in->n ? in->n : 1, 0);
  memcpy(text, in->p, in->n);
  int base = lua_gettop(S);
  for (int i = 0; i < 3; i++) {
    int mode = shapes[i] ? pc_json_shape(shapes[i]) : PC_DECODE_JSON;
    if (mode < 0) BROKEN("no shape named %s", shapes[i]);
    lua_settop(S, base);
    if (!pc_json_decode(S, text, in->n, mode)) {
      if (!lua_isstring(S, -1)) BROKEN("pc_json_decode failed without a message");
      continue;
    }
    if (mode == PC_DECODE_JSON) {
      check_normalised(S, -1, 0);
      check_like_cjson(S, in->p, in->n);
      continue;
    }
    check_normalised(S, -2, 0);
    int problem = lua_getfield(S, -1, "problem") == LUA_TSTRING;
    int items = lua_getfield(S, -2, "items") == LUA_TTABLE, keys = lua_getfield(S, -3, "keys") == LUA_TTABLE;
    if (problem == (items && keys)) BROKEN("a shaped answer's report has %s", problem ? "problem and items" : "neither problem nor items");
    if (items && keys && lua_rawlen(S, -2) != lua_rawlen(S, -1)) BROKEN("a shaped answer has a key per item missing");
  }
  return 0;
}

static int t_headers(lua_State *S) {
  const fuzz_in *in = lua_touserdata(S, 1);
  pc_push_headers(S, in->n ? in->p : NULL, in->n);
  check_header_table(S, lua_gettop(S));
  return 0;
}

static int t_error(lua_State *S) {
  const fuzz_in *in = lua_touserdata(S, 1);
  if (!pc_json_decode(S, in->p, in->n, PC_DECODE_JSON) || !lua_istable(S, -1)) return 0;
  int body = lua_gettop(S);
  pc_push_error(S, (pc_kind)(in->arg % PC_E_COUNT), "HTTP 400");
  int e = lua_gettop(S);
  pc_set_int(S, "status", 400 + in->arg);
  pc_set_str(S, "method", "GET");
  pc_set_str(S, "url", pages[in->arg % NPAGES][0]);
  pc_set_int(S, "attempts", in->arg % 4);
  lua_pushvalue(S, body); /* error at -2, body at -1 */
  pc_error_fields_from_body(S);
  lua_settop(S, e);
  lua_getglobal(S, "tostring");
  lua_pushvalue(S, e);
  lua_call(S, 1, 1);
  check_error(S, e);
  return 0;
}

/* pager.link(page, link, prefix) under its own pcall: nil and why, or an URL of the page's origin. */
static void pager_link(lua_State *S, const fuzz_in *in) {
  const char *page = pages[in->arg % NPAGES][0];
  lua_rawgetp(S, LUA_REGISTRYINDEX, &have_pager);
  lua_pushstring(S, page);
  lua_pushlstring(S, in->p, in->n);
  lua_pushstring(S, pages[in->arg % NPAGES][1]);
  int st = lua_pcall(S, 3, 2, 0);
  if (st == LUA_ERRMEM) lua_error(S);
  if (st != LUA_OK) BROKEN("pager.link raised: %s", lua_tostring(S, -1));
  if (lua_type(S, -2) != LUA_TSTRING) {
    if (lua_type(S, -1) != LUA_TSTRING) BROKEN("pager.link refused a link without saying why");
    return;
  }
  size_t n;
  const char *url = lua_tolstring(S, -2, &n);
  char host[256], a[512], b[512];
  const char *why = pc_url_problem(url, host, sizeof host);
  if (why) BROKEN("pager.link gave %s, which url_problem refuses: %s", url, why);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f) BROKEN("pager.link gave %s, with a space or control", url);
  if (!curl_origin(url, a, sizeof a) || !curl_origin(page, b, sizeof b) || strcmp(a, b) != 0)
    BROKEN("pager.link gave %s for a link on %s: libcurl reads origin %s, not %s", url, page, a, b);
}

static int t_link(lua_State *S) {
  const fuzz_in *in = lua_touserdata(S, 1);
  char host[256];
  if (strlen(in->p) == in->n) { /* pc_url_problem takes a C string */
    const char *why = pc_url_problem(in->p, host, sizeof host);
    if (why == NULL) check_accepted(in->p, host);
  }
  if (have_pager) pager_link(S, in);
  return 0;
}

static void t_retry_after(const char *v) {
  double r = pc_retry_after_parse(v, NOW);
  if (!(r == -1 || (r >= 0 && isfinite(r)))) BROKEN("Retry-After '%s' read as %g", v, r);
}

/* ---- libFuzzer ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushliteral(L, CJSON_CPATH);
  lua_setfield(L, -2, "cpath");
  lua_pushliteral(L, "./lua/?.lua;./lua/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  luaL_requiref(L, "partnercustomers.core", luaopen_partnercustomers_core, 0);
  lua_pop(L, 1);
  if (luaL_dostring(L, cjson_check) != LUA_OK) {
    fprintf(stderr, "fuzz: lua-cjson for the JSON target: %s\n", lua_tostring(L, -1));
    exit(2);
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &cjson_key);
  /* the Lua layer's pager, when it is there (its require of the core finds the one above) */
  if (luaL_dostring(L, "local ok, p = pcall(require, 'partnercustomers.pager')\n"
                       "return ok and type(p) == 'table' and type(p.link) == 'function' and p.link or nil") != LUA_OK) {
    fprintf(stderr, "fuzz: %s\n", lua_tostring(L, -1));
    exit(2);
  }
  have_pager = lua_isfunction(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &have_pager);
  fprintf(stderr, "fuzz: link target: %s\n",
          have_pager ? "pager.link (lua/partnercustomers/pager.lua) and pc_url_problem" : "pc_url_problem (no pager.lua)");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const lua_CFunction targets[] = {t_json, t_headers, NULL, t_error, t_link};
  if (size < 1) return 0;
  int sel = (data[0] + 2) % 5, takes_arg = sel >= 3; /* ASCII "0".."4" select 0..4 */
  if (takes_arg && size < 2) return -1; /* libFuzzer: not worth keeping */
  fuzz_in in = {NULL, size - 1 - (size_t)takes_arg, takes_arg ? data[1] : 0};
  char *copy = malloc(in.n + 1);
  memcpy(copy, data + 1 + takes_arg, in.n);
  copy[in.n] = '\0';
  in.p = copy;
  if (sel == 2)
    t_retry_after(copy);
  else {
    lua_pushcfunction(L, targets[sel]);
    lua_pushlightuserdata(L, &in);
    int st = lua_pcall(L, 1, 0, 0);
    if (st != LUA_OK && st != LUA_ERRMEM) BROKEN("target %d raised: %s", sel, lua_tostring(L, -1));
  }
  lua_settop(L, 0);
  free(copy);
  return 0;
}
