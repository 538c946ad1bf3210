/* Bearer tokens: a fixed access_token, a token provider function, or OAuth 2.0 client credentials
 * (form POST, secret in the body as the vendors' samples do). Tokens are cached per scope in the
 * client's token table { [scope] = { token = , renew_at = } } and renewed a little before expiry.
 * Tokens live only in that table and in the Authorization header: never in an event or an error. */
#include <ctype.h>
#include <math.h>
#include <string.h>
#include "pc.h"

static int opt_type(lua_State *L, int ci, const char *k) {
  lua_getiuservalue(L, ci, PC_UV_OPTS);
  int t = lua_getfield(L, -1, k);
  lua_pop(L, 2);
  return t;
}

int pc_has_credentials(lua_State *L, int ci) {
  return opt_type(L, ci, "access_token") == LUA_TSTRING || pc_token_renewable(L, ci);
}

int pc_token_renewable(lua_State *L, int ci) {
  return opt_type(L, ci, "token") == LUA_TFUNCTION || opt_type(L, ci, "grant") == LUA_TSTRING;
}

/* Pushes the cache entry for scope (or nil). */
static int push_entry(lua_State *L, int ci, const char *scope) {
  lua_getiuservalue(L, ci, PC_UV_TOKENS);
  int t = lua_getfield(L, -1, scope);
  lua_remove(L, -2);
  return t;
}

int pc_token_fresh(lua_State *L, int ci, const char *scope) {
  if (opt_type(L, ci, "access_token") == LUA_TSTRING) return 1;
  if (push_entry(L, ci, scope) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  lua_getfield(L, -1, "renew_at");
  int fresh = lua_isnil(L, -1) || pc_clock(L, ci) < lua_tonumber(L, -1);
  lua_pop(L, 2);
  return fresh;
}

void pc_token_push(lua_State *L, int ci, const char *scope) {
  lua_getiuservalue(L, ci, PC_UV_OPTS);
  if (lua_getfield(L, -1, "access_token") == LUA_TSTRING) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 2);
  if (push_entry(L, ci, scope) == LUA_TTABLE) {
    lua_getfield(L, -1, "token");
    lua_remove(L, -2);
  }
}

void pc_token_drop(lua_State *L, int ci, const char *scope) {
  lua_getiuservalue(L, ci, PC_UV_TOKENS);
  lua_pushnil(L);
  lua_setfield(L, -2, scope);
  lua_pop(L, 1);
}

/* expires_in as a number or a numeric string (Entra's v1 endpoint sends "3600"); -1 if absent. */
static double expires_in_at(lua_State *L, int idx) {
  double v = -1;
  if (lua_type(L, idx) == LUA_TNUMBER)
    v = lua_tonumber(L, idx);
  else if (lua_type(L, idx) == LUA_TSTRING) {
    int isnum = 0;
    lua_Number n = lua_tonumberx(L, idx, &isnum);
    if (isnum) v = n;
  }
  return v >= 0 ? v : -1;
}

/* Caches token (at the top, popped) for scope; renews a little before expiry:
 * 60 s early, or a tenth of the lifetime when that is shorter. */
static void cache(lua_State *L, int ci, const char *scope, double expires_in, const char *source) {
  double now = pc_clock(L, ci);
  lua_createtable(L, 0, 2);
  lua_rotate(L, -2, 1);
  lua_setfield(L, -2, "token");
  if (expires_in >= 0) {
    double margin = fmin(60.0, expires_in / 10);
    pc_set_num(L, "renew_at", now + expires_in - margin);
  }
  lua_getiuservalue(L, ci, PC_UV_TOKENS);
  lua_rotate(L, -2, 1);
  lua_setfield(L, -2, scope);
  lua_pop(L, 1);

  lua_createtable(L, 0, 4);
  pc_set_str(L, "type", "token");
  pc_set_str(L, "scope", scope);
  pc_set_str(L, "source", source);
  if (expires_in >= 0) {
    lua_Integer whole;
    if (lua_numbertointeger(expires_in, &whole) && (double)whole == expires_in)
      pc_set_int(L, "expires_in", whole);
    else
      pc_set_num(L, "expires_in", expires_in);
  }
  pc_emit(L, ci);
}

/* application/x-www-form-urlencoded, one name or value */
static void add_encoded(luaL_Buffer *b, const char *s) { pc_form_encode(b, s, strlen(s)); }

static void add_form(luaL_Buffer *b, const char *k, const char *v) {
  if (luaL_bufflen(b) > 0) luaL_addchar(b, '&');
  add_encoded(b, k);
  luaL_addchar(b, '=');
  add_encoded(b, v);
}

static int fetch_provider(lua_State *L, int ci, const char *scope) {
  lua_getiuservalue(L, ci, PC_UV_OPTS);
  lua_getfield(L, -1, "token");
  lua_remove(L, -2);
  lua_pushstring(L, scope);
  /* the provider is the user's code reaching the outside world: its failure is an auth error */
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
    lua_pushfstring(L, "token provider failed: %s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "error object");
    pc_redact_top(L, ci);
    pc_push_error(L, PC_E_AUTH, lua_tostring(L, -1));
    lua_rotate(L, -3, 1);
    lua_pop(L, 2);
    return 0;
  }
  if (lua_type(L, -2) != LUA_TSTRING || lua_rawlen(L, -2) == 0) {
    if (lua_isstring(L, -1))
      lua_pushfstring(L, "token provider returned no token: %s", lua_tostring(L, -1));
    else
      lua_pushliteral(L, "token provider returned no token");
    pc_redact_top(L, ci);
    pc_push_error(L, PC_E_AUTH, lua_tostring(L, -1));
    lua_rotate(L, -4, 1);
    lua_pop(L, 3);
    return 0;
  }
  double exp = expires_in_at(L, -1);
  lua_pop(L, 1);
  cache(L, ci, scope, exp, "provider");
  return 1;
}

/* Pushes the token request's form body for the client's grant. With a certificate, a fresh client
 * assertion replaces the secret; with client_auth = "basic", the secret goes in the Authorization
 * header (added to the headers table at index hi) instead of the body. Returns 0 (nothing pushed)
 * when the assertion cannot be signed. */
static int push_form(lua_State *L, int ci, int o, int hi, const char *scope, int refresh) {
  pc_client *c = lua_touserdata(L, ci);
  /* the strings stay pinned by the options table; a luaL_Buffer needs the stack to itself */
  const char *v[7];
  static const char *const keys[] = {"client_id", "client_secret", "refresh_token", "audience", "grant",
                                     "token_url", "client_auth"};
  for (int i = 0; i < 7; i++) {
    lua_getfield(L, o, keys[i]);
    v[i] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  int basic = v[6] && strcmp(v[6], "basic") == 0;
  int assertion = c->cert.key != NULL;
  if (assertion) {
    char jti[37];
    if (!pc_uuid(jti)) return 0;
    const char *id = jti;
    /* an injected jti generator, like the clock: tests replay an assertion id with it */
    if (lua_getfield(L, o, "jti") == LUA_TFUNCTION) {
      lua_call(L, 0, 1);
      id = lua_tostring(L, -1);
      if (id == NULL) luaL_error(L, "partnercustomers: the jti function must return a string");
    }
    int signed_ok = pc_cert_assertion(L, &c->cert, v[0], v[5], pc_clock(L, ci), id);
    if (signed_ok) lua_remove(L, -2); /* the jti (or nil) under the assertion */
    else lua_pop(L, 1);
    if (!signed_ok) return 0;
    lua_setfield(L, o, "assertion"); /* pinned (and redacted) until the next one */
    lua_getfield(L, o, "assertion");
    v[1] = lua_tostring(L, -1); /* the assertion replaces the secret below */
    lua_pop(L, 1);
  }
  if (basic) { /* RFC 6749 2.3.1: id and secret form-encoded, joined by ':', then base64 */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    add_encoded(&b, v[0]);
    luaL_addchar(&b, ':');
    add_encoded(&b, v[1]);
    luaL_pushresult(&b);
    size_t n;
    const unsigned char *raw = (const unsigned char *)lua_tolstring(L, -1, &n);
    luaL_Buffer h;
    char *out = luaL_buffinitsize(L, &h, 6 + 4 * ((n + 2) / 3) + 1);
    memcpy(out, "Basic ", 6);
    luaL_pushresultsize(&h, 6 + pc_base64(raw, n, out + 6, 0));
    lua_setfield(L, hi, "Authorization");
    lua_pop(L, 1);
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  add_form(&b, "grant_type", v[4]);
  if (refresh) add_form(&b, "refresh_token", v[2]);
  if (!basic) add_form(&b, "client_id", v[0]);
  if (assertion) {
    add_form(&b, "client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    add_form(&b, "client_assertion", v[1]);
  } else if (v[1] && !basic)
    add_form(&b, "client_secret", v[1]);
  /* Entra's v1 endpoint names the audience `resource`; OAuth 2.0 and Entra v2 say `scope` */
  add_form(&b, v[3] && strcmp(v[3], "resource") == 0 ? "resource" : "scope", scope);
  luaL_pushresult(&b);
  return 1;
}

/* The new refresh token of a rotation replaces the one held, and is handed to on_refresh_token
 * before the access token is used, so that the caller can persist it. The one it replaces is
 * kept (as refresh_token_prev) only so that it stays redacted from messages. */
static void rotate_refresh_token(lua_State *L, int o, int d) {
  if (lua_getfield(L, d, "refresh_token") != LUA_TSTRING || lua_rawlen(L, -1) == 0) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, o, "refresh_token");
  lua_setfield(L, o, "refresh_token_prev");
  lua_pushvalue(L, -1);
  lua_setfield(L, o, "refresh_token");
  if (lua_getfield(L, o, "on_refresh_token") == LUA_TFUNCTION) {
    lua_rotate(L, -2, 1);
    lua_call(L, 1, 0); /* the caller's code: an error propagates (the new token is kept) */
  } else
    lua_pop(L, 2);
}

static int fetch_oauth(lua_State *L, int ci, const char *scope) {
  int top = lua_gettop(L);
  lua_getiuservalue(L, ci, PC_UV_OPTS);
  int o = lua_gettop(L);
  lua_getfield(L, o, "grant");
  int refresh = strcmp(lua_tostring(L, -1), "refresh_token") == 0;
  lua_pop(L, 1);

  lua_createtable(L, 1, 0); /* reqs */
  lua_createtable(L, 0, 5); /* the token request */
  lua_getfield(L, o, "token_url");
  lua_setfield(L, -2, "url");
  lua_pushliteral(L, "POST");
  lua_setfield(L, -2, "method");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "sensitive");
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "application/x-www-form-urlencoded");
  lua_setfield(L, -2, "Content-Type");
  lua_pushliteral(L, "application/json");
  lua_setfield(L, -2, "Accept");
  if (!push_form(L, ci, o, lua_gettop(L), scope, refresh)) {
    pc_push_error(L, PC_E_AUTH, "cannot sign the client assertion");
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 0;
  }
  lua_setfield(L, -3, "body");
  lua_setfield(L, -2, "headers");
  lua_rawseti(L, -2, 1);

  pc_run(L, ci, -1);
  lua_rawgeti(L, -1, 1);
  lua_rawgeti(L, -1, 1); /* the response, or nil */
  if (lua_isnil(L, -1)) {
    lua_rawgeti(L, -2, 2);
    /* a token endpoint that answers 400/401 refused the credentials: never retried, always auth */
    lua_getfield(L, -1, "status");
    lua_Integer st = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (st == 400 || st == 401 || st == 403) {
      pc_set_str(L, "kind", "auth");
      lua_getfield(L, -1, "code");
      if (lua_isnil(L, -1)) pc_set_str(L, "message", "the token endpoint refused the request");
      lua_pop(L, 1);
    }
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 0;
  }
  lua_getfield(L, -1, "data");
  int d = lua_gettop(L);
  if (!lua_istable(L, d) || lua_getfield(L, d, "access_token") != LUA_TSTRING || lua_rawlen(L, -1) == 0) {
    pc_push_error(L, PC_E_PROTOCOL, "the token endpoint answered without an access_token");
    lua_getfield(L, o, "token_url");
    lua_setfield(L, -2, "url");
    pc_set_str(L, "method", "POST");
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 0;
  }
  int tok = lua_gettop(L);
  rotate_refresh_token(L, o, d);
  lua_getfield(L, d, "expires_in");
  double exp = expires_in_at(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, tok);
  cache(L, ci, scope, exp, refresh ? "refresh_token" : "client_credentials");
  lua_settop(L, top);
  return 1;
}

int pc_token_fetch(lua_State *L, int ci, const char *scope) {
  ci = lua_absindex(L, ci);
  pc_token_drop(L, ci, scope);
  if (opt_type(L, ci, "token") == LUA_TFUNCTION) return fetch_provider(L, ci, scope);
  if (opt_type(L, ci, "grant") == LUA_TSTRING) return fetch_oauth(L, ci, scope);
  pc_push_error(L, PC_E_AUTH, "the access token was refused and cannot be renewed");
  return 0;
}
