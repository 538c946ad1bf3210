/* Requests: a Lua request table checked (misuse raises, before anything starts) and turned into
 * a pc_req whose strings its private table pins. */
#include <string.h>
#include <strings.h>
#include "engine.h"

static const char *const retry_names[] = {"idempotent", "unsent", "never", NULL};

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
      if (!pc_header_name_ok(k, kn)) luaL_error(L, "partnercustomers: invalid header name");
      if (!pc_header_value_ok(v, vn))
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
    r->method = name_index(lua_tostring(L, -1), pc_method_names);
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
void pc_parse_request(lua_State *L, int ci, int t, pc_req *r) {
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
