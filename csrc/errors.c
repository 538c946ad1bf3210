/* The error object of doc/API.md: a plain table with the metatable "partnercustomers.error", and the
 * redaction of the client's secrets from whatever goes into errors and events. */
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

/* ---- redaction ---- */

/* The fields of the client's options (PC_UV_OPTS) that hold a secret: the one list. Each is
 * matched as it is and form-encoded; client_id and client_secret also as the HTTP Basic
 * credential they make together. The cached bearer tokens (PC_UV_TOKENS) are added to these. */
static const char *const secret_fields[] = {"access_token",  "client_secret", "refresh_token", "refresh_token_prev",
                                            "cert_password", "assertion",     "basic_credential", NULL};

#define PC_REDACTED "[redacted]"
/* a 1-3 byte "secret" would garble every message and protects nothing */
#define PC_SECRET_MIN 4

/* One form of a secret (a string pinned by the secrets table) and where it next occurs. */
typedef struct {
  const char *s;
  size_t n;
  const char *at;
} pc_secret;

/* Appends the string at the top (popped) to the list at index li when it is long enough. */
static void add_form(lua_State *L, int li) {
  if (lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) >= PC_SECRET_MIN)
    lua_rawseti(L, li, (lua_Integer)lua_rawlen(L, li) + 1);
  else
    lua_pop(L, 1);
}

/* Adds the secret at the top (popped), if a string, as it is and form-encoded (pc_form_encode:
 * how it travels in a form body). */
static void add_secret(lua_State *L, int li) {
  if (lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    return;
  }
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  pc_form_encode(&b, s, n);
  luaL_pushresult(&b);
  if (lua_rawlen(L, -1) != n)
    add_form(L, li);
  else
    lua_pop(L, 1);
  add_form(L, li);
}

/* Adds the HTTP Basic credential of the options at o (RFC 6749 2.3.1, as auth.c sends it):
 * base64(form_encode(client_id) ":" form_encode(client_secret)), the whole of it. */
static void add_basic(lua_State *L, int o, int li) {
  int tid = lua_getfield(L, o, "client_id"), tsec = lua_getfield(L, o, "client_secret");
  if (tid != LUA_TSTRING || tsec != LUA_TSTRING) {
    lua_pop(L, 2);
    return;
  }
  size_t idn, secn;
  const char *id = lua_tolstring(L, -2, &idn), *secret = lua_tolstring(L, -1, &secn);
  pc_push_basic_credential(L, id, idn, secret, secn);
  lua_replace(L, -3);
  lua_pop(L, 1);
  add_form(L, li);
}

/* Pushes a table pinning every form of every secret the client (absolute index ci) holds, then
 * a userdata array of them (*v); returns how many. */
static int push_secrets(lua_State *L, int ci, pc_secret **v) {
  luaL_checkstack(L, 12, NULL);
  lua_newtable(L);
  int li = lua_gettop(L);
  if (lua_getiuservalue(L, ci, PC_UV_OPTS) == LUA_TTABLE) {
    for (int i = 0; secret_fields[i]; i++) {
      lua_getfield(L, li + 1, secret_fields[i]);
      add_secret(L, li);
    }
    add_basic(L, li + 1, li);
  }
  lua_pop(L, 1);
  if (lua_getiuservalue(L, ci, PC_UV_TOKENS) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, li + 1)) { /* every cached bearer token */
      if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "token");
        add_secret(L, li);
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  int k = (int)lua_rawlen(L, li);
  *v = lua_newuserdatauv(L, sizeof **v * (size_t)(k > 0 ? k : 1), 0);
  for (int i = 0; i < k; i++) {
    lua_rawgeti(L, li, i + 1);
    (*v)[i].s = lua_tolstring(L, -1, &(*v)[i].n); /* pinned by the table */
    lua_pop(L, 1);
  }
  return k;
}

/* The first occurrence of nd[0..nn) in h[0..hn), NUL bytes included, or NULL. */
static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
  if (nn == 0 || hn < nn) return NULL;
  const char *last = h + (hn - nn); /* the last place a match can start */
  for (const char *p = h; p <= last && (p = memchr(p, nd[0], (size_t)(last - p) + 1)) != NULL; p++)
    if (memcmp(p, nd, nn) == 0) return p;
  return NULL;
}

static void add_capped(luaL_Buffer *b, const char *s, size_t n, size_t limit) {
  size_t have = luaL_bufflen(b);
  if (have < limit) luaL_addlstring(b, s, n < limit - have ? n : limit - have);
}

/* Pushes the first `limit` bytes of p[0..n) with every secret of v[0..k) replaced by
 * PC_REDACTED, and returns 1; returns 0 (nothing pushed) when no secret occurs. One pass, left
 * to right; where two secrets start at the same byte, the longer wins. p must stay valid (a
 * string below the top, or memory Lua does not own). */
static int push_redacted(lua_State *L, pc_secret *v, int k, const char *p, size_t n, size_t limit) {
  const char *end = p + n, *pos = p;
  int any = 0;
  for (int i = 0; i < k; i++) any |= (v[i].at = find_bytes(p, n, v[i].s, v[i].n)) != NULL;
  if (!any) return 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (;;) {
    pc_secret *m = NULL;
    for (int i = 0; i < k; i++)
      if (v[i].at && (m == NULL || v[i].at < m->at || (v[i].at == m->at && v[i].n > m->n))) m = &v[i];
    add_capped(&b, pos, (size_t)((m ? m->at : end) - pos), limit);
    if (m == NULL) break;
    add_capped(&b, PC_REDACTED, sizeof PC_REDACTED - 1, limit);
    pos = m->at + m->n;
    if (luaL_bufflen(&b) >= limit) break;
    for (int i = 0; i < k; i++) /* matches overlapped by the one replaced: look again after it */
      if (v[i].at && v[i].at < pos) v[i].at = find_bytes(pos, (size_t)(end - pos), v[i].s, v[i].n);
  }
  luaL_pushresult(&b);
  return 1;
}

void pc_redact_top(lua_State *L, int ci) {
  if (lua_type(L, -1) != LUA_TSTRING) return;
  ci = lua_absindex(L, ci);
  int s = lua_gettop(L);
  pc_secret *v;
  int k = push_secrets(L, ci, &v);
  size_t n;
  const char *p = lua_tolstring(L, s, &n);
  if (push_redacted(L, v, k, p, n, (size_t)-1)) lua_replace(L, s);
  lua_settop(L, s);
}

/* Redacts every string value of the table at absolute index t; depth levels of nested tables. */
static void redact_fields(lua_State *L, int t, pc_secret *v, int k, int depth) {
  luaL_checkstack(L, 6, NULL);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    size_t n;
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *p = lua_tolstring(L, -1, &n);
      if (push_redacted(L, v, k, p, n, (size_t)-1)) {
        lua_pushvalue(L, -3);
        lua_insert(L, -2);
        lua_rawset(L, t); /* an existing field: allowed during the traversal */
      }
    } else if (depth > 0 && lua_type(L, -1) == LUA_TTABLE)
      redact_fields(L, lua_gettop(L), v, k, depth - 1);
    lua_pop(L, 1);
  }
}

void pc_redact_table(lua_State *L, int ci, int t) {
  ci = lua_absindex(L, ci);
  t = lua_absindex(L, t);
  int top = lua_gettop(L);
  pc_secret *v;
  int k = push_secrets(L, ci, &v);
  if (k > 0 && lua_istable(L, t)) redact_fields(L, t, v, k, 1);
  lua_settop(L, top);
}

void pc_set_body(lua_State *L, int ci, const char *p, size_t n) {
  ci = lua_absindex(L, ci);
  int top = lua_gettop(L);
  pc_secret *v;
  int k = push_secrets(L, ci, &v);
  if (!push_redacted(L, v, k, p, n, PC_ERRBODY_MAX)) lua_pushlstring(L, p, n < PC_ERRBODY_MAX ? n : PC_ERRBODY_MAX);
  lua_setfield(L, top, "body");
  lua_settop(L, top);
}

/* ---- the error object ---- */

/* Pushes field k of the table at t when it is a string or a number (converted on the stack,
 * where it stays referenced) and returns 1; else pushes nothing and returns 0. */
static int push_field_str(lua_State *L, int t, const char *k) {
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TSTRING || ty == LUA_TNUMBER) {
    lua_tostring(L, -1);
    return 1;
  }
  lua_pop(L, 1);
  return 0;
}

static lua_Integer field_int(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  lua_Integer v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
  lua_pop(L, 1);
  return v;
}

/* Replaces the string at the top by a copy with CR and LF turned into spaces. */
static void one_line(lua_State *L) {
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  if (memchr(s, '\n', n) == NULL && memchr(s, '\r', n) == NULL) return;
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, n);
  for (size_t i = 0; i < n; i++) out[i] = (s[i] == '\n' || s[i] == '\r') ? ' ' : s[i];
  luaL_pushresultsize(&b, n);
  lua_remove(L, -2);
}

/* __tostring: one line, e.g.
 * partnercustomers: http error 503 (code X): message [GET https://… after 4 attempts]
 * Every piece stays on the stack until the final concatenation. */
static int error_tostring(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  luaL_checkstack(L, 16, NULL);
  lua_pushliteral(L, "partnercustomers: ");
  if (!push_field_str(L, 1, "kind")) lua_pushliteral(L, "unknown");
  lua_pushliteral(L, " error");
  lua_Integer status = field_int(L, 1, "status");
  if (status > 0) lua_pushfstring(L, " %I", (LUAI_UACINT)status);
  if (push_field_str(L, 1, "code")) {
    lua_pushliteral(L, " (code ");
    lua_insert(L, -2);
    lua_pushliteral(L, ")");
  }
  if (push_field_str(L, 1, "message")) {
    lua_pushliteral(L, ": ");
    lua_insert(L, -2);
  }
  int url = lua_gettop(L) + 1;
  if (push_field_str(L, 1, "url")) {
    lua_pushliteral(L, " [");
    if (!push_field_str(L, 1, "method")) lua_pushliteral(L, "");
    lua_pushliteral(L, " ");
    lua_rotate(L, url, -1); /* " [" method " " url */
    lua_Integer attempts = field_int(L, 1, "attempts");
    if (attempts > 1) lua_pushfstring(L, " after %I attempts", (LUAI_UACINT)attempts);
    lua_pushliteral(L, "]");
  }
  lua_concat(L, lua_gettop(L) - 1);
  one_line(L);
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
