/* Reading what a server sent: response header blocks, Retry-After, and the error fields of an
 * error body. Everything here treats its input as hostile: any bytes, any length; nothing here
 * raises except Lua's own memory errors. */
#include <math.h>
#include <string.h>
#include "pc.h"

static char lower_ascii(char ch) { return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch; }

/* Pushes the header block p[0..len) as a table of lower-case names (repeated ones joined by
 * ", "). Status lines and lines without a colon are skipped. */
void pc_push_headers(lua_State *L, const char *p, size_t len) {
  lua_newtable(L);
  const char *end = p ? p + len : NULL;
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL) eol = end;
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    if (colon && colon > p && !((size_t)(eol - p) >= 5 && memcmp(p, "HTTP/", 5) == 0)) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (const char *q = p; q < colon; q++) luaL_addchar(&b, lower_ascii(*q));
      luaL_pushresult(&b);
      const char *v = colon + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, -3);
    }
    p = eol + 1;
  }
}

/* Retry-After's delta-seconds: decimal digits, with a fraction tolerated ("120.5"); no sign, no
 * hex, no exponent. Returns -1 for anything else. Huge values stay huge (no integer overflow). */
static double delta_seconds(const char *v) {
  double secs = 0;
  const char *p = v;
  if (!(*p >= '0' && *p <= '9')) return -1;
  for (; *p >= '0' && *p <= '9'; p++) secs = secs * 10 + (*p - '0');
  if (*p == '.') {
    double scale = 0.1;
    if (!(p[1] >= '0' && p[1] <= '9')) return -1;
    for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10) secs += (*p - '0') * scale;
  }
  while (*p == ' ' || *p == '\t') p++;
  return *p == '\0' && isfinite(secs) ? secs : -1;
}

double pc_retry_after_parse(const char *v, double now) {
  if (v == NULL) return -1;
  while (*v == ' ' || *v == '\t') v++;
  double secs = delta_seconds(v);
  if (secs >= 0) return secs;
  if (!((*v >= 'A' && *v <= 'Z') || (*v >= 'a' && *v <= 'z'))) return -1; /* dates start with a day name */
  time_t t = curl_getdate(v, NULL);
  if (t == (time_t)-1) return -1;
  return fmax(0, (double)t - now);
}

/* Reads code and message from an error body in any of the shapes the services use:
 * OAuth {error, error_description}, OData {error: {code, message}}, Partner Center
 * {code, description} and the throttling {statusCode, message}. Error table at -2, body at -1. */
void pc_error_fields_from_body(lua_State *L) {
  int top = lua_gettop(L);
  int e = top - 1, t = top;
  const char *code_field = NULL, *msg_field;
  int ty = lua_getfield(L, t, "error");
  if (ty == LUA_TSTRING) {
    code_field = "error", msg_field = "error_description";
  } else if (ty == LUA_TTABLE) {
    t = lua_gettop(L);
    code_field = "code", msg_field = "message";
  } else {
    lua_getfield(L, t, "code");
    code_field = lua_isnil(L, -1) ? NULL : "code";
    lua_getfield(L, t, "description");
    msg_field = lua_isstring(L, -1) ? "description" : "message";
  }
  if (code_field) {
    lua_getfield(L, t, code_field);
    if (lua_isstring(L, -1)) { /* numbers become strings: codes are always strings */
      lua_pushstring(L, lua_tostring(L, -1));
      lua_setfield(L, e, "code");
    }
    lua_pop(L, 1);
  }
  lua_getfield(L, t, msg_field);
  if (lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) > 0) lua_setfield(L, e, "message");
  /* Entra's ids, for a support request; the response headers win where both exist */
  static const char *const ids[] = {"trace_id", "correlation_id", NULL};
  for (int i = 0; ids[i]; i++) {
    if (lua_getfield(L, top, ids[i]) == LUA_TSTRING) lua_setfield(L, e, ids[i]);
  }
  lua_settop(L, top);
}
