/* Bearer tokens: a fixed access_token, a token provider function, or OAuth 2.0 grants (client
 * credentials, refresh token). Tokens are cached per scope in the client's token table
 * { [scope] = { token, gen, renew_at, expires_at } }: gen numbers each token the client got, so
 * that a 401 drops only the token the failing request carried. This layer builds token requests
 * and reads their answers; the engine runs them beside the other transfers (it never calls the
 * engine). Tokens live only in that table and in the Authorization header: never in an event or
 * an error. */
#include <math.h>
#include <stdlib.h>
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

pc_token_state pc_token_state_of(lua_State *L, int ci, const char *scope) {
  if (opt_type(L, ci, "access_token") == LUA_TSTRING) return PC_TOKEN_FRESH;
  if (push_entry(L, ci, scope) != LUA_TTABLE) {
    lua_pop(L, 1);
    return PC_TOKEN_NONE;
  }
  lua_getfield(L, -1, "renew_at");
  lua_getfield(L, -2, "expires_at");
  pc_token_state st = PC_TOKEN_FRESH;
  if (!lua_isnil(L, -2)) {
    double now = pc_clock(L, ci);
    if (now >= lua_tonumber(L, -2)) st = now < lua_tonumber(L, -1) ? PC_TOKEN_RENEW : PC_TOKEN_NONE;
  }
  lua_pop(L, 3);
  return st;
}

lua_Integer pc_token_push(lua_State *L, int ci, const char *scope) {
  lua_getiuservalue(L, ci, PC_UV_OPTS);
  if (lua_getfield(L, -1, "access_token") == LUA_TSTRING) {
    lua_remove(L, -2);
    return 0;
  }
  lua_pop(L, 2);
  lua_Integer gen = 0;
  if (push_entry(L, ci, scope) == LUA_TTABLE) {
    lua_getfield(L, -1, "gen");
    gen = lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, -1, "token");
    lua_remove(L, -2);
  }
  return gen;
}

void pc_token_drop(lua_State *L, int ci, const char *scope, lua_Integer gen) {
  lua_getiuservalue(L, ci, PC_UV_TOKENS);
  if (lua_getfield(L, -1, scope) == LUA_TTABLE) {
    lua_getfield(L, -1, "gen");
    int same = lua_tointeger(L, -1) == gen;
    lua_pop(L, 2);
    if (same) {
      lua_pushnil(L);
      lua_setfield(L, -2, scope);
    }
  } else
    lua_pop(L, 1);
  lua_pop(L, 1);
}

int pc_token_has_provider(lua_State *L, int ci) { return opt_type(L, ci, "token") == LUA_TFUNCTION; }

/* expires_in as a number or a decimal string (Entra's v1 endpoint sends "3600"): seconds, or
 * -1 when absent. A value that is present but unusable (zero, negative, hex, garbage, not finite)
 * counts as PC_TOKEN_SHORT_LIFETIME: the token is used for that long, and a 401 renews it earlier. */
#define PC_TOKEN_SHORT_LIFETIME 60.0
static double expires_in_at(lua_State *L, int idx) {
  double v = -1;
  if (lua_type(L, idx) == LUA_TNUMBER)
    v = lua_tonumber(L, idx);
  else if (lua_type(L, idx) == LUA_TSTRING) {
    const char *s = lua_tostring(L, idx);
    char *end;
    v = -1;
    if (s[0] >= '0' && s[0] <= '9' && strspn(s, "0123456789.") == strlen(s)) v = strtod(s, &end);
  } else if (lua_isnil(L, idx))
    return -1;
  return v > 0 && isfinite(v) ? fmin(v, 1e9) : PC_TOKEN_SHORT_LIFETIME;
}

/* A token goes into an Authorization header as it is: anything a header cannot carry, or a
 * size no server issues, is refused before it is cached. NULL when it may be used. */
#define PC_TOKEN_MAX_BYTES (64 * 1024)
static const char *token_problem(lua_State *L, int idx) {
  size_t n;
  const char *t = lua_tolstring(L, idx, &n);
  if (n > PC_TOKEN_MAX_BYTES) return "is larger than 64 KiB";
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)t[i];
    if (ch < 0x20 || ch == 0x7f) return "contains control characters (CR, LF, NUL...), which a header cannot carry";
  }
  return NULL;
}

/* Caches token (at the top, popped) for scope; renews a little before expiry:
 * 60 s early, or a tenth of the lifetime when that is shorter. */
static void cache(lua_State *L, int ci, const char *scope, double expires_in, const char *source) {
  double now = pc_clock(L, ci);
  pc_client *c = lua_touserdata(L, ci);
  lua_createtable(L, 0, 4);
  lua_rotate(L, -2, 1);
  lua_setfield(L, -2, "token");
  pc_set_int(L, "gen", ++c->token_gen);
  if (expires_in >= 0) {
    double margin = fmin(60.0, expires_in / 10);
    pc_set_num(L, "renew_at", now + expires_in - margin);
    pc_set_num(L, "expires_at", now + expires_in - fmin(5.0, margin)); /* a little slack for the trip */
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

/* One name=value pair of an application/x-www-form-urlencoded body. */
static void add_form(luaL_Buffer *b, const char *k, const char *v) {
  if (luaL_bufflen(b) > 0) luaL_addchar(b, '&');
  pc_form_encode(b, k, strlen(k));
  luaL_addchar(b, '=');
  pc_form_encode(b, v, strlen(v));
}

int pc_token_from_provider(lua_State *L, int ci, const char *scope) {
  ci = lua_absindex(L, ci);
  lua_getiuservalue(L, ci, PC_UV_OPTS);
  lua_getfield(L, -1, "token");
  lua_remove(L, -2);
  lua_pushstring(L, scope);
  int ok = lua_pcall(L, 1, 2, 0) == LUA_OK;
  if (!ok) lua_pushnil(L); /* the error and a nil, as pcall's two results would be */
  return pc_token_provided(L, ci, scope, ok);
}

/* Replaces the provider's two results (at the top) with an auth error: "what: detail". */
static int provider_failed(lua_State *L, int ci, const char *what, const char *detail) {
  if (detail)
    lua_pushfstring(L, "%s: %s", what, detail);
  else
    lua_pushstring(L, what);
  pc_redact_top(L, ci);
  pc_push_error(L, PC_E_AUTH, lua_tostring(L, -1));
  lua_rotate(L, -4, 1);
  lua_pop(L, 3);
  return 0;
}

int pc_token_provided(lua_State *L, int ci, const char *scope, int ok) {
  ci = lua_absindex(L, ci);
  /* the provider is the user's code reaching the outside world: its failure is an auth error */
  if (!ok) return provider_failed(L, ci, "token provider failed", lua_isstring(L, -2) ? lua_tostring(L, -2) : "error object");
  if (lua_type(L, -2) != LUA_TSTRING || lua_rawlen(L, -2) == 0)
    return provider_failed(L, ci, "token provider returned no token", lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL);
  const char *why = token_problem(L, -2);
  if (why) {
    lua_pushfstring(L, "token provider returned a token that %s", why);
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

/* Signs a fresh client assertion (new jti, iat and exp: a retried token request never replays
 * one) and pins it in the options table at o, where redaction finds it. Returns it, or NULL. */
static const char *fresh_assertion(lua_State *L, int ci, int o, const char *client_id, const char *aud) {
  pc_client *c = lua_touserdata(L, ci);
  char jti[37];
  if (!pc_uuid(jti)) return NULL;
  const char *id = jti;
  /* an injected jti generator, like the clock: tests replay an assertion id with it */
  if (lua_getfield(L, o, "jti") == LUA_TFUNCTION) {
    lua_call(L, 0, 1);
    id = lua_tostring(L, -1);
    if (id == NULL) luaL_error(L, "partnercustomers: the jti function must return a string");
  }
  int signed_ok = pc_cert_assertion(L, &c->cert, client_id, aud, pc_wall_clock(L, ci), id);
  if (signed_ok) lua_remove(L, -2); /* the jti (or nil) under the assertion */
  else lua_pop(L, 1);
  if (!signed_ok) return NULL;
  lua_setfield(L, o, "assertion"); /* pinned (and redacted) until the next one */
  lua_getfield(L, o, "assertion");
  const char *a = lua_tostring(L, -1);
  lua_pop(L, 1);
  return a;
}

/* RFC 6749 2.3.1: id and secret form-encoded, joined by ':', then base64, as the value of the
 * Authorization header in the headers table at hi. The credential is pinned in the options (o)
 * as basic_credential, so that redaction knows it in that form too. */
static void set_basic_header(lua_State *L, int o, int hi) {
  size_t idn, secn;
  lua_getfield(L, o, "client_id");
  lua_getfield(L, o, "client_secret");
  const char *id = lua_tolstring(L, -2, &idn), *secret = lua_tolstring(L, -1, &secn);
  pc_push_basic_credential(L, id, idn, secret, secn);
  lua_pushvalue(L, -1);
  lua_setfield(L, o, "basic_credential");
  lua_pushfstring(L, "Basic %s", lua_tostring(L, -1));
  lua_setfield(L, hi, "Authorization");
  lua_pop(L, 3);
}

static int is_basic(lua_State *L, int o) {
  int basic = lua_getfield(L, o, "client_auth") == LUA_TSTRING && strcmp(lua_tostring(L, -1), "basic") == 0;
  lua_pop(L, 1);
  return basic;
}

/* Pushes the token request's form body for the client's grant. With a certificate, a fresh client
 * assertion replaces the secret; with client_auth = "basic" the secret is in the Authorization
 * header, not here. Returns 0 (nothing pushed) when the assertion cannot be signed. */
static int push_form(lua_State *L, int ci, int o, const char *scope, int refresh) {
  pc_client *c = lua_touserdata(L, ci);
  /* the strings stay pinned by the options table; a luaL_Buffer needs the stack to itself */
  const char *v[6];
  static const char *const keys[] = {"client_id", "client_secret", "refresh_token", "audience", "grant", "token_url"};
  for (int i = 0; i < 6; i++) {
    lua_getfield(L, o, keys[i]);
    v[i] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  int basic = is_basic(L, o), assertion = c->cert.key != NULL;
  if (assertion && (v[1] = fresh_assertion(L, ci, o, v[0], v[5])) == NULL) return 0;
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

/* The token request's body builder, called by the engine before each attempt (upvalues: the
 * client, the scope, whether it is a refresh grant): each attempt gets a body built anew. */
static int build_token_body(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_getiuservalue(L, 1, PC_UV_OPTS);
  if (!push_form(L, 1, 2, lua_tostring(L, lua_upvalueindex(2)), lua_toboolean(L, lua_upvalueindex(3)))) {
    lua_pushnil(L);
    lua_pushliteral(L, "cannot sign the client assertion");
    return 2;
  }
  return 1;
}

/* The new refresh token of a rotation replaces the one held, and is handed to on_refresh_token
 * before the access token is used, so that the caller can persist it. The one it replaces is
 * kept (as refresh_token_prev) only so that it stays redacted from messages. */
static void rotate_refresh_token(lua_State *L, int ci, int o, int d) {
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
    if (pc_deferring(L, ci)) { /* made by the Lua layer before any request starts */
      pc_defer(L, ci, 2);
      ((pc_client *)lua_touserdata(L, ci))->held = 1;
    } else
      lua_call(L, 1, 0); /* the caller's code: an error propagates (the new token is kept) */
  } else
    lua_pop(L, 2);
}

/* Pushes the token request for the client's grant: a POST whose body is rebuilt for each
 * attempt. A refresh token is redeemed by the server when it answers: the grant is retried only
 * when the request never reached the server, or the server said so (429, 503). */
static void push_token_request(lua_State *L, int ci, int o, const char *scope, int refresh) {
  lua_createtable(L, 0, 6);
  lua_getfield(L, o, "token_url");
  lua_setfield(L, -2, "url");
  pc_set_str(L, "method", "POST");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "sensitive");
  pc_set_str(L, "retry", refresh ? "unsent" : "idempotent");
  lua_createtable(L, 0, 3);
  pc_set_str(L, "Content-Type", "application/x-www-form-urlencoded");
  pc_set_str(L, "Accept", "application/json");
  if (is_basic(L, o)) set_basic_header(L, o, lua_gettop(L));
  lua_setfield(L, -2, "headers");
  lua_pushvalue(L, ci);
  lua_pushstring(L, scope);
  lua_pushboolean(L, refresh);
  lua_pushcclosure(L, build_token_body, 3);
  lua_setfield(L, -2, "body");
}

/* The token endpoint's failure (error at the top) as the caller sees it: a refusal (400, 401,
 * 403) is an auth error, with or without an OAuth error body. */
static void token_refused(lua_State *L) {
  lua_getfield(L, -1, "status");
  lua_Integer st = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (st != 400 && st != 401 && st != 403) return;
  pc_set_str(L, "kind", "auth");
  int has_code = lua_getfield(L, -1, "code") != LUA_TNIL;
  lua_pop(L, 1);
  if (!has_code) {
    lua_pushfstring(L, "the token endpoint refused the request (HTTP %d)", (int)st);
    lua_setfield(L, -2, "message");
  }
}

/* An error about the token endpoint's answer (kind, message), with its URL; pushed. */
static void token_answer_error(lua_State *L, int o, pc_kind kind, const char *message) {
  pc_push_error(L, kind, message);
  lua_getfield(L, o, "token_url");
  lua_setfield(L, -2, "url");
  pc_set_str(L, "method", "POST");
}

void pc_token_push_request(lua_State *L, int ci, const char *scope) {
  ci = lua_absindex(L, ci);
  lua_getiuservalue(L, ci, PC_UV_OPTS);
  int o = lua_gettop(L);
  lua_getfield(L, o, "grant");
  int refresh = strcmp(lua_tostring(L, -1), "refresh_token") == 0;
  lua_pop(L, 1);
  push_token_request(L, ci, o, scope, refresh);
  lua_remove(L, o);
}

int pc_token_accept(lua_State *L, int ci, const char *scope, int pair) {
  ci = lua_absindex(L, ci);
  pair = lua_absindex(L, pair);
  int top = lua_gettop(L);
  lua_getiuservalue(L, ci, PC_UV_OPTS);
  int o = lua_gettop(L);
  lua_getfield(L, o, "grant");
  int refresh = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "refresh_token") == 0;
  lua_pop(L, 1);
  if (lua_rawgeti(L, pair, 1) == LUA_TNIL) { /* the request failed: its error */
    lua_rawgeti(L, pair, 2);
    token_refused(L);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 0;
  }
  lua_getfield(L, -1, "data");
  int d = lua_gettop(L);
  const char *why = NULL;
  if (!lua_istable(L, d) || lua_getfield(L, d, "access_token") != LUA_TSTRING || lua_rawlen(L, -1) == 0)
    token_answer_error(L, o, PC_E_PROTOCOL, "the token endpoint answered without an access_token");
  else if ((why = token_problem(L, -1)) != NULL) {
    lua_pushfstring(L, "the token endpoint sent an access token that %s", why);
    token_answer_error(L, o, PC_E_AUTH, lua_tostring(L, -1));
  } else {
    int tok = lua_gettop(L);
    rotate_refresh_token(L, ci, o, d);
    lua_getfield(L, d, "expires_in");
    double exp = expires_in_at(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, tok);
    cache(L, ci, scope, exp, refresh ? "refresh_token" : "client_credentials");
    lua_settop(L, top);
    return 1;
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return 0;
}
