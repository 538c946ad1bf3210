/* partnercustomers.core: the client userdata, its options and the module table.
 * The client follows liolib's pattern: create the userdata marked closed, set its metatable,
 * then acquire the libcurl handles and store them at once; one idempotent release serves
 * close, __gc and __close. */
#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "pc.h"

/* ---- lifecycle ---- */

static void release(pc_client *c) {
  for (int i = 0; i < PC_MAX_PARALLEL; i++) pc_xfer_release(c, &c->xfers[i]);
  if (c->multi) curl_multi_cleanup(c->multi);
  c->multi = NULL;
  pc_poll_close(c); /* after the multi handle: its cleanup may still report sockets */
  if (c->share) curl_share_cleanup(c->share);
  c->share = NULL;
  pc_cert_free(&c->cert);
  c->closed = 1;
}

static int l_gc(lua_State *L) {
  pc_client *c = luaL_checkudata(L, 1, PC_CLIENT_MT);
  if (!c->busy) release(c); /* a running client is on the stack, so never collected while busy */
  return 0;
}

/* close() and __close: a client running a request (a close from one of its hooks, or a
 * to-be-closed variable ending in one) is refused and left as it was. */
static int l_close(lua_State *L) {
  pc_client *c = luaL_checkudata(L, 1, PC_CLIENT_MT);
  if (c->busy) return luaL_error(L, "partnercustomers: cannot close a client while it runs a request");
  release(c);
  return 0;
}

static int l_tostring(lua_State *L) {
  pc_client *c = luaL_checkudata(L, 1, PC_CLIENT_MT);
  if (c->closed)
    lua_pushliteral(L, "partnercustomers.client (closed)");
  else
    lua_pushfstring(L, "partnercustomers.client (%p)", (void *)c);
  return 1;
}

/* ---- options ---- */

typedef enum { O_NUM, O_INT, O_STR, O_FN, O_TABLE } pc_otype;
typedef struct {
  const char *name;
  pc_otype type;
  double min, max;
} pc_opt;

static const pc_opt options[] = {
  {"timeout", O_NUM, 0.001, 86400}, {"connect_timeout", O_NUM, 0.001, 3600},
  {"low_speed_time", O_NUM, 1, 3600}, {"max_retries", O_INT, 0, 10},
  {"max_parallel", O_INT, 1, PC_MAX_PARALLEL}, {"max_response_bytes", O_INT, 1, 1e12},
  {"retry_after_cap", O_NUM, 0, 86400}, {"backoff_base", O_NUM, 0, 3600},
  {"backoff_max", O_NUM, 0, 86400}, {"ca_file", O_STR, 0, 0}, {"proxy", O_STR, 0, 0},
  {"user_agent", O_STR, 0, 0}, {"clock", O_FN, 0, 0}, {"sleep", O_FN, 0, 0},
  {"random", O_FN, 0, 0}, {"on_event", O_FN, 0, 0}, {"access_token", O_STR, 0, 0},
  {"token", O_FN, 0, 0}, {"client_credentials", O_TABLE, 0, 0}, {"refresh_token", O_TABLE, 0, 0},
  {"jti", O_FN, 0, 0},
  {NULL, 0, 0, 0},
};

static const char *const otype_names[] = {"a number", "an integer", "a string", "a function", "a table"};

static const pc_opt *find_option(const char *k) {
  for (const pc_opt *o = options; o->name; o++)
    if (strcmp(o->name, k) == 0) return o;
  return NULL;
}

static int check_type(lua_State *L, int idx, const pc_opt *o) {
  switch (o->type) {
  case O_NUM: return lua_type(L, idx) == LUA_TNUMBER && lua_tonumber(L, idx) >= o->min && lua_tonumber(L, idx) <= o->max;
  case O_INT: return lua_isinteger(L, idx) && lua_tointeger(L, idx) >= o->min && lua_tointeger(L, idx) <= o->max;
  case O_STR: return lua_type(L, idx) == LUA_TSTRING && lua_rawlen(L, idx) > 0;
  case O_FN: return lua_type(L, idx) == LUA_TFUNCTION;
  default: return lua_type(L, idx) == LUA_TTABLE;
  }
}

static double num_opt(lua_State *L, int o, const char *k, double dflt) {
  lua_getfield(L, o, k);
  double v = lua_isnil(L, -1) ? dflt : lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* The two OAuth grants the core performs, flattened into the options with `grant` set:
 * client_credentials = { token_url, client_id, client_secret, audience? }
 * refresh_token = { token_url, client_id, client_secret?, refresh_token, audience?, on_refresh_token? } */
typedef struct {
  const char *key;
  int type; /* LUA_TSTRING or LUA_TFUNCTION */
  int required;
} pc_field;

static const pc_field cc_fields[] = {
  {"token_url", LUA_TSTRING, 1}, {"client_id", LUA_TSTRING, 1}, {"client_secret", LUA_TSTRING, 0},
  {"certificate", LUA_TTABLE, 0}, {"client_auth", LUA_TSTRING, 0}, {"audience", LUA_TSTRING, 0}, {NULL, 0, 0},
};
static const pc_field rt_fields[] = {
  {"token_url", LUA_TSTRING, 1}, {"client_id", LUA_TSTRING, 1}, {"client_secret", LUA_TSTRING, 0},
  {"refresh_token", LUA_TSTRING, 1}, {"audience", LUA_TSTRING, 0}, {"on_refresh_token", LUA_TFUNCTION, 0},
  {NULL, 0, 0},
};

static void read_grant(lua_State *L, const char *grant, int t, int o) {
  const pc_field *fields = strcmp(grant, "refresh_token") == 0 ? rt_fields : cc_fields;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    int ok = 0;
    for (const pc_field *f = fields; f->key; f++)
      ok |= lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), f->key) == 0;
    if (!ok) luaL_error(L, "partnercustomers: unknown field in option '%s'", grant);
  }
  for (const pc_field *f = fields; f->key; f++) {
    int ty = lua_getfield(L, t, f->key);
    if (ty == LUA_TNIL && !f->required) {
      lua_pop(L, 1);
      continue;
    }
    if (ty != f->type || (ty == LUA_TSTRING && lua_rawlen(L, -1) == 0))
      luaL_error(L, "partnercustomers: option '%s.%s' must be %s", grant, f->key,
                 f->type == LUA_TSTRING ? "a non-empty string" : f->type == LUA_TTABLE ? "a table" : "a function");
    lua_setfield(L, o, f->key);
  }
  if (strcmp(grant, "client_credentials") == 0) {
    lua_getfield(L, o, "client_secret");
    lua_getfield(L, o, "certificate");
    if (lua_isnil(L, -1) == lua_isnil(L, -2))
      luaL_error(L, "partnercustomers: option 'client_credentials' needs exactly one of 'client_secret' and 'certificate'");
    lua_pop(L, 2);
    if (lua_getfield(L, o, "client_auth") == LUA_TSTRING) {
      const char *ca = lua_tostring(L, -1);
      if (strcmp(ca, "post") != 0 && strcmp(ca, "basic") != 0)
        luaL_error(L, "partnercustomers: option 'client_credentials.client_auth' must be \"post\" or \"basic\"");
      lua_getfield(L, o, "client_secret");
      if (lua_isnil(L, -1))
        luaL_error(L, "partnercustomers: option 'client_credentials.client_auth' applies to a client_secret only");
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (lua_getfield(L, o, "audience") == LUA_TSTRING && strcmp(lua_tostring(L, -1), "scope") != 0 &&
      strcmp(lua_tostring(L, -1), "resource") != 0)
    luaL_error(L, "partnercustomers: option '%s.audience' must be \"scope\" or \"resource\"", grant);
  lua_pop(L, 1);
  lua_pushstring(L, grant);
  lua_setfield(L, o, "grant");
}

/* certificate = { key = "key.pem", cert = "cert.pem" } or { pfx = "app.pfx" }, with password, alg
 * ("RS256" or "PS256") and x5t_s256 (boolean). Loaded once, into the client, after every other
 * option is read (the expiry check uses the client's clock). */
static void load_certificate(lua_State *L, pc_client *c, int ci, int t) {
  static const char *const keys[] = {"key", "cert", "pfx", "password", "alg", "x5t_s256", NULL};
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    int ok = 0;
    for (int i = 0; keys[i]; i++) ok |= lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), keys[i]) == 0;
    if (!ok) luaL_error(L, "partnercustomers: unknown field in option 'certificate'");
  }
  pc_cert_files f = {0};
  const char **slot[4] = {&f.key, &f.cert, &f.pfx, &f.password};
  for (int i = 0; i < 4; i++) {
    int ty = lua_getfield(L, t, keys[i]); /* the strings stay pinned by the table */
    if (ty != LUA_TNIL && (ty != LUA_TSTRING || lua_rawlen(L, -1) == 0))
      luaL_error(L, "partnercustomers: option 'certificate.%s' must be a non-empty string", keys[i]);
    *slot[i] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  if (f.pfx ? (f.key || f.cert) : !(f.key && f.cert))
    luaL_error(L, "partnercustomers: option 'certificate' takes either 'pfx', or 'key' and 'cert'");
  int ps256 = 0;
  if (lua_getfield(L, t, "alg") != LUA_TNIL) {
    const char *alg = lua_tostring(L, -1);
    if (alg == NULL || (strcmp(alg, "RS256") != 0 && strcmp(alg, "PS256") != 0))
      luaL_error(L, "partnercustomers: option 'certificate.alg' must be \"RS256\" or \"PS256\"");
    ps256 = strcmp(alg, "PS256") == 0;
  }
  lua_pop(L, 1);
  lua_getfield(L, t, "x5t_s256");
  int s256 = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (f.password) { /* a secret like the others: kept out of every message */
    lua_getiuservalue(L, ci, PC_UV_OPTS);
    lua_pushstring(L, f.password);
    lua_setfield(L, -2, "cert_password");
    lua_pop(L, 1);
  }
  double now = pc_wall_clock(L, ci);
  char err[512];
  const char *why = pc_cert_load(&c->cert, &f, now, err, sizeof err);
  if (why) {
    lua_pushstring(L, why);
    luaL_error(L, "partnercustomers: option %s", lua_tostring(L, -1));
  }
  c->cert.alg_ps256 = ps256;
  c->cert.with_x5t_s256 = s256;
}

/* Validates every option of the caller's table (index 1) and copies it into o; the caller's table
 * is never modified. Returns how many kinds of credentials were given. */
static int copy_options(lua_State *L, int o) {
  int credentials = 0;
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "partnercustomers: option names must be strings");
    const char *k = lua_tostring(L, -2);
    const pc_opt *opt = find_option(k);
    if (opt == NULL) luaL_error(L, "partnercustomers: unknown option '%s'", k);
    if (!check_type(L, -1, opt)) {
      if (opt->type == O_NUM || opt->type == O_INT)
        luaL_error(L, "partnercustomers: option '%s' must be %s between %f and %f", k, otype_names[opt->type],
                   (lua_Number)opt->min, (lua_Number)opt->max);
      luaL_error(L, "partnercustomers: option '%s' must be %s%s", k, otype_names[opt->type],
                 opt->type == O_STR ? " (not empty)" : "");
    }
    if (strcmp(k, "access_token") == 0 || strcmp(k, "token") == 0 || opt->type == O_TABLE)
      credentials++;
    if (opt->type == O_TABLE)
      read_grant(L, k, lua_gettop(L), o);
    else {
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2);
      lua_rawset(L, o);
    }
    lua_pop(L, 1);
  }
  return credentials;
}

/* The string options that end up in headers or URLs: no NUL, CR or LF; token_url by the URL rule. */
static void check_strings(lua_State *L, int o, int credentials) {
  if (lua_getfield(L, o, "access_token") == LUA_TSTRING && strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
    luaL_error(L, "partnercustomers: option 'access_token' contains NUL");
  if (lua_type(L, -1) == LUA_TSTRING && strpbrk(lua_tostring(L, -1), "\r\n"))
    luaL_error(L, "partnercustomers: option 'access_token' contains CR or LF");
  lua_pop(L, 1);
  if (credentials > 1)
    luaL_error(L, "partnercustomers: give only one of 'access_token', 'token', 'client_credentials' and 'refresh_token'");
  if (lua_getfield(L, o, "token_url") == LUA_TSTRING) {
    char host[256];
    const char *why = pc_url_problem(lua_tostring(L, -1), host, sizeof host);
    if (why) {
      lua_getfield(L, o, "grant");
      luaL_error(L, "partnercustomers: option '%s.token_url' %s", lua_tostring(L, -1), why);
    }
  }
  lua_pop(L, 1);
  for (const char *k = "proxy"; k; k = strcmp(k, "proxy") == 0 ? "ca_file" : NULL) {
    if (lua_getfield(L, o, k) == LUA_TSTRING && strpbrk(lua_tostring(L, -1), "\r\n"))
      luaL_error(L, "partnercustomers: option '%s' contains CR or LF", k);
    lua_pop(L, 1);
  }
}

static void read_numbers(lua_State *L, pc_client *c, int o) {
  c->timeout = num_opt(L, o, "timeout", 30);
  c->connect_timeout = num_opt(L, o, "connect_timeout", 10);
  c->low_speed_time = num_opt(L, o, "low_speed_time", 30);
  c->max_retries = (int)num_opt(L, o, "max_retries", 3);
  c->nxfers = (int)num_opt(L, o, "max_parallel", 8);
  c->max_response_bytes = (size_t)num_opt(L, o, "max_response_bytes", 64.0 * 1024 * 1024);
  c->retry_after_cap = num_opt(L, o, "retry_after_cap", 120);
  c->backoff_base = num_opt(L, o, "backoff_base", 0.5);
  c->backoff_max = num_opt(L, o, "backoff_max", 30);
  c->rng = (unsigned long long)(pc_real_now() * 1e6) ^ (uintptr_t)c ^ 0x9E3779B97F4A7C15ULL;
  if (c->rng == 0) c->rng = 1;
}

/* User-Agent: the caller's product first, then ours and libcurl's (option "ua" of o). */
static void set_user_agent(lua_State *L, int o) {
  const char *ua = NULL;
  if (lua_getfield(L, o, "user_agent") == LUA_TSTRING) {
    ua = lua_tostring(L, -1);
    if (strpbrk(ua, "\r\n")) luaL_error(L, "partnercustomers: option 'user_agent' contains CR or LF");
  }
  lua_pop(L, 1);
  curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
  lua_pushfstring(L, "%s%spartnercustomers/%s libcurl/%s", ua ? ua : "", ua ? " " : "", PC_VERSION, vi->version);
  lua_setfield(L, o, "ua");
}

/* Acquires the libcurl handles, storing each at once (an error leaves a closed client to __gc). */
static void acquire(lua_State *L, pc_client *c) {
  c->multi = curl_multi_init();
  if (c->multi == NULL) luaL_error(L, "partnercustomers: curl_multi_init failed");
  c->closed = 0;
  if (!pc_poll_open(c)) luaL_error(L, "partnercustomers: cannot make the client's descriptor (epoll_create1)");
  c->share = curl_share_init();
  if (c->share == NULL) luaL_error(L, "partnercustomers: curl_share_init failed");
  /* DNS answers and TLS sessions outlive a single easy handle; connections live in the multi */
  curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)c->nxfers);
  /* the connection cache keeps one connection per slot: none is closed between waves */
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->nxfers);
  curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
}

static int l_new(lua_State *L) {
  lua_settop(L, 1);
  if (lua_isnil(L, 1)) lua_newtable(L), lua_replace(L, 1);
  luaL_checktype(L, 1, LUA_TTABLE);

  pc_client *c = lua_newuserdatauv(L, sizeof *c, PC_UV_COUNT);
  memset(c, 0, sizeof *c);
  c->closed = 1;
  c->epfd = -1;
  c->timer_due = HUGE_VAL;
  c->deadline = HUGE_VAL;
  for (int i = 0; i < PC_MAX_PARALLEL; i++) c->xfers[i].req = -1;
  luaL_setmetatable(L, PC_CLIENT_MT);
  int ci = lua_gettop(L);
  lua_newtable(L);
  int o = lua_gettop(L);
  lua_pushvalue(L, o);
  lua_setiuservalue(L, ci, PC_UV_OPTS);
  lua_newtable(L);
  lua_setiuservalue(L, ci, PC_UV_TOKENS);

  int credentials = copy_options(L, o);
  check_strings(L, o, credentials);
  if (lua_getfield(L, o, "certificate") == LUA_TTABLE) load_certificate(L, c, ci, lua_gettop(L));
  lua_pop(L, 1);

  read_numbers(L, c, o);
  set_user_agent(L, o);
  lua_pop(L, 1); /* o */
  acquire(L, c);
  return 1;
}

/* ---- requests: the engine runs under lua_pcall so that an error from a hook leaves the
 * client usable (no handle left in the multi, not busy) and then propagates ---- */

static int run_protected(lua_State *L) {
  pc_run(L, 1, 2, (int)lua_tointeger(L, 3));
  return 1;
}

/* The options of one call: { parallel = n (1..max_parallel), deadline = seconds for the whole
 * call, token fetches and waits included }. Returns parallel (0: max_parallel); sets the
 * client's deadline. */
static int call_options(lua_State *L, pc_client *c, int oi) {
  int parallel = 0;
  c->deadline = HUGE_VAL;
  if (lua_isnoneornil(L, oi)) return 0;
  luaL_checktype(L, oi, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, oi)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (strcmp(k, "parallel") == 0) {
      lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
      if (n < 1 || n > c->nxfers)
        luaL_error(L, "partnercustomers: call option 'parallel' must be an integer from 1 to the client's max_parallel (%d)",
                   c->nxfers);
      parallel = (int)n;
    } else if (strcmp(k, "deadline") == 0) {
      double d = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
      if (!(d > 0 && d <= 7 * 86400)) luaL_error(L, "partnercustomers: call option 'deadline' must be seconds from 0 to 604800");
      c->deadline = pc_clock(L, 1) + d;
    } else
      luaL_error(L, "partnercustomers: unknown call option '%s'", k);
    lua_pop(L, 1);
  }
  return parallel;
}

static int run(lua_State *L, int single) {
  pc_client *c = pc_check_client(L, 1);
  if (c->busy) return luaL_error(L, "partnercustomers: the client is already running a request (called from a hook?)");
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 3);
  int parallel = call_options(L, c, 3);
  lua_settop(L, 2);
  if (single) {
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 1);
    lua_replace(L, 2);
  }
  lua_pushcfunction(L, run_protected);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushinteger(L, parallel);
  c->busy = 1;
  int st = lua_pcall(L, 3, 1, 0);
  pc_idle(L, 1, c);
  if (st != LUA_OK) return lua_error(L);
  if (!single) return 1;
  lua_rawgeti(L, -1, 1);
  lua_rawgeti(L, -1, 1);
  if (!lua_isnil(L, -1)) return 1;
  lua_rawgeti(L, -2, 2);
  return 2;
}

static int l_request(lua_State *L) { return run(L, 1); }
static int l_batch(lua_State *L) { return run(L, 0); }

/* client:pollfd(): the client's descriptor (what the wait objects of its calls give), or nil. */
static int l_pollfd(lua_State *L) {
  pc_client *c = pc_check_client(L, 1);
  if (c->epfd < 0) return 0;
  lua_pushinteger(L, c->epfd);
  return 1;
}

/* client:start(reqs [, opts]): the batch as steps, for a host's event loop (loop.c); the same
 * requests and options as batch. */
static int l_start(lua_State *L) {
  pc_client *c = pc_check_client(L, 1);
  if (c->busy) return luaL_error(L, "partnercustomers: the client is already running a request (called from a hook?)");
  if (c->epfd < 0) return luaL_error(L, "partnercustomers: waiting in a host's event loop needs epoll (Linux)");
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 3);
  int parallel = call_options(L, c, 3);
  pc_loop_start(L, 1, 2, parallel);
  return 1;
}

/* core.uuid(): a random (version 4) GUID, as MS-RequestId and MS-CorrelationId want. */
static int l_uuid(lua_State *L) {
  char s[37];
  if (!pc_uuid(s)) return luaL_error(L, "partnercustomers: no random source");
  lua_pushstring(L, s);
  return 1;
}

/* core.url_problem(url): nil when the client may request url (https, or http to loopback), else
 * the reason it may not: the one place the rule lives, for the Lua layer too. */
static int l_url_problem(lua_State *L) {
  char host[256];
  const char *why = pc_url_problem(luaL_checkstring(L, 1), host, sizeof host);
  if (why) lua_pushstring(L, why);
  else lua_pushnil(L);
  return 1;
}

/* core.write_private_file(path, data): pc_write_private; true, or nil and a message that names
 * the path and the reason, never the data. */
static int l_write_private_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  int e = pc_write_private(path, data, n);
  if (e == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", path, strerror(e));
  return 2;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, pc_real_now());
  return 1;
}

static int l_sleep(lua_State *L) {
  pc_real_sleep(luaL_checknumber(L, 1));
  return 0;
}

/* client:redact(t): replaces, in every string field of t, each secret the client holds (in
 * every form it was sent in); returns t. For errors the Lua layer builds from answers. */
static int l_redact(lua_State *L) {
  pc_check_client(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  pc_redact_table(L, 1, 2);
  return 1;
}

/* core.table(narr, nrec): a new table sized for narr items and nrec fields (Lua has no way to
 * size one); each capped at 2^20. */
static int l_table(lua_State *L) {
  lua_Integer a = luaL_optinteger(L, 1, 0), r = luaL_optinteger(L, 2, 0);
  lua_createtable(L, (int)(a < 0 ? 0 : a > (1 << 20) ? 1 << 20 : a), (int)(r < 0 ? 0 : r > (1 << 20) ? 1 << 20 : r));
  return 1;
}

static const luaL_Reg client_methods[] = {
  {"request", l_request}, {"batch", l_batch}, {"start", l_start}, {"pollfd", l_pollfd}, {"redact", l_redact}, {"close", l_close},
  {NULL, NULL},
};

static const luaL_Reg client_meta[] = {
  {"__gc", l_gc}, {"__close", l_close}, {"__tostring", l_tostring}, {NULL, NULL},
};

static const luaL_Reg funcs[] = {
  {"new", l_new}, {"error", pc_l_error}, {"is_error", pc_l_is_error},
  {"now", l_now}, {"url_problem", l_url_problem}, {"sleep", l_sleep}, {"uuid", l_uuid},
  {"job_status_code", pc_l_job_status_code}, {"job_status_labels", pc_l_job_status_labels},
  {"item_key", pc_l_item_key}, {"table", l_table}, {"write_private_file", l_write_private_file},
  {NULL, NULL},
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static void curl_init_once(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

__attribute__((visibility("default"))) int luaopen_partnercustomers_core(lua_State *L) {
  /* once per process, whichever Lua state on whichever thread loads the module first */
  pthread_once(&curl_once, curl_init_once);
  if (curl_init_rc != CURLE_OK) return luaL_error(L, "partnercustomers: curl_global_init failed");
  pc_error_open(L);
  pc_loop_open(L);
  luaL_newmetatable(L, PC_CLIENT_MT);
  luaL_setfuncs(L, client_meta, 0);
  luaL_newlib(L, client_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  luaL_newlib(L, funcs);
  pc_sys_open(L);
  lua_pushliteral(L, "partnercustomers " PC_VERSION);
  lua_setfield(L, -2, "_VERSION");
  /* built from curl_version_info: curl_version() also initialises libldap and libsasl, whose
   * one-time allocations are never freed (valgrind reports them as definite leaks) */
  curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
  lua_pushfstring(L, "libcurl/%s%s%s%s%s", vi->version, vi->ssl_version ? " " : "",
                  vi->ssl_version ? vi->ssl_version : "", vi->libz_version ? " zlib/" : "",
                  vi->libz_version ? vi->libz_version : "");
  lua_setfield(L, -2, "curl_version");
  luaL_getmetatable(L, PC_ERROR_MT);
  lua_setfield(L, -2, "Error");
  return 1;
}
