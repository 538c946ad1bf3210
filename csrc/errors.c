/* The error object of API.md: a plain table with the metatable "partnercustomers.error". */
#include <string.h>
#include "pc.h"

static const char *const kind_names[] = {
#define PC_KIND_NAME(id, name) name,
  PC_ERROR_KINDS(PC_KIND_NAME)
#undef PC_KIND_NAME
};

const char *pc_kind_name(pc_kind k) { return kind_names[k]; }

int pc_kind_valid(const char *name) {
  for (int i = 0; i < PC_E_COUNT; i++)
    if (strcmp(kind_names[i], name) == 0) return 1;
  return 0;
}

void pc_set_str(lua_State *L, const char *field, const char *value) {
  if (value == NULL) return;
  lua_pushstring(L, value);
  lua_setfield(L, -2, field);
}

void pc_set_int(lua_State *L, const char *field, lua_Integer value) {
  lua_pushinteger(L, value);
  lua_setfield(L, -2, field);
}

void pc_set_num(lua_State *L, const char *field, lua_Number value) {
  lua_pushnumber(L, value);
  lua_setfield(L, -2, field);
}

void pc_push_error(lua_State *L, pc_kind kind, const char *message) {
  lua_createtable(L, 0, 10);
  pc_set_str(L, "kind", kind_names[kind]);
  pc_set_str(L, "message", message);
  luaL_setmetatable(L, PC_ERROR_MT);
}

void pc_push_safe_url(lua_State *L, const char *url) {
  const char *scheme = strstr(url, "://");
  if (scheme) {
    const char *auth = scheme + 3;
    size_t hostlen = strcspn(auth, "/?#");
    const char *at = memchr(auth, '@', hostlen);
    if (at) {
      lua_pushlstring(L, url, (size_t)(auth - url));
      lua_pushstring(L, at + 1);
      lua_concat(L, 2);
      return;
    }
  }
  lua_pushstring(L, url);
}

/* If the string at index si contains the secret at index ki, replace it in place. */
static void redact_at(lua_State *L, int si, int ki) {
  size_t n;
  const char *secret = lua_tolstring(L, ki, &n);
  /* a 1-3 byte "secret" would garble every message and protects nothing */
  if (lua_type(L, ki) != LUA_TSTRING || n < 4) return;
  const char *s = lua_tostring(L, si);
  if (strstr(s, secret) == NULL) return;
  luaL_gsub(L, s, secret, "[redacted]");
  lua_replace(L, si);
}

void pc_redact_top(lua_State *L, int ci) {
  if (lua_type(L, -1) != LUA_TSTRING) return;
  ci = lua_absindex(L, ci);
  int s = lua_gettop(L);
  luaL_checkstack(L, 8, NULL);
  lua_getiuservalue(L, ci, PC_UV_OPTS);   /* s+1 */
  lua_getiuservalue(L, ci, PC_UV_TOKENS); /* s+2 */
  static const char *const fields[] = {"access_token", "client_secret", "refresh_token", "refresh_token_prev",
                                       "cert_password", "assertion", NULL};
  for (int i = 0; fields[i]; i++) {
    lua_getfield(L, s + 1, fields[i]);
    redact_at(L, s, -1);
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, s + 2)) { /* every cached bearer token */
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "token");
      redact_at(L, s, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_settop(L, s);
}

static const char *field_str(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1); /* the string stays referenced by the table */
  return s;
}

static lua_Integer field_int(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  lua_Integer v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
  lua_pop(L, 1);
  return v;
}

/* __tostring: one line, e.g.
 * partnercustomers: http error 503 (code X): message [GET https://… after 4 attempts] */
static int error_tostring(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "partnercustomers: ");
  const char *kind = field_str(L, 1, "kind");
  luaL_addstring(&b, kind ? kind : "unknown");
  luaL_addstring(&b, " error");
  lua_Integer status = field_int(L, 1, "status");
  if (status > 0) {
    lua_pushfstring(L, " %I", (LUAI_UACINT)status);
    luaL_addvalue(&b);
  }
  const char *code = field_str(L, 1, "code");
  if (code) {
    lua_pushfstring(L, " (code %s)", code);
    luaL_addvalue(&b);
  }
  const char *msg = field_str(L, 1, "message");
  if (msg) {
    luaL_addstring(&b, ": ");
    /* keep it one line */
    for (const char *p = msg; *p; p++) luaL_addchar(&b, (*p == '\n' || *p == '\r') ? ' ' : *p);
  }
  const char *method = field_str(L, 1, "method"), *url = field_str(L, 1, "url");
  if (url) {
    lua_pushfstring(L, " [%s %s", method ? method : "", url);
    luaL_addvalue(&b);
    lua_Integer attempts = field_int(L, 1, "attempts");
    if (attempts > 1) {
      lua_pushfstring(L, " after %I attempts", (LUAI_UACINT)attempts);
      luaL_addvalue(&b);
    }
    luaL_addchar(&b, ']');
  }
  luaL_pushresult(&b);
  return 1;
}

/* core.error(t): makes t an error object (for the Lua layer's protocol errors). */
int pc_l_error(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "kind");
  const char *kind = lua_tostring(L, -1);
  if (kind == NULL || !pc_kind_valid(kind))
    return luaL_argerror(L, 1, "field 'kind' must name an error kind");
  lua_pop(L, 1);
  lua_settop(L, 1);
  luaL_setmetatable(L, PC_ERROR_MT);
  return 1;
}

int pc_l_is_error(lua_State *L) {
  int yes = 0;
  if (lua_istable(L, 1) && lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, PC_ERROR_MT);
    yes = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, yes);
  return 1;
}

void pc_error_open(lua_State *L) {
  luaL_newmetatable(L, PC_ERROR_MT); /* sets __name */
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
