/* JSON into Lua tables with lua-cjson, then normalised to what doc/API.md promises:
 * JSON null never reaches the user (an object's field is absent, an array closes up around it)
 * and integral numbers are Lua integers (lua-cjson 2.1 decodes every number as a float and null
 * as a sentinel light userdata). */
#include <math.h>
#include "pc.h"

static const char decoder_key = 'j'; /* registry key: address of this byte */
static const char safe_key = 's';    /* registry key: whether the decoder is a cjson.safe one */
#define PC_JSON_MAX_DEPTH 256

/* ---- finding lua-cjson without the global require ---- */

static const char *const cjson_names[] = {"cjson.safe", "cjson", NULL};

/* Looks name up as require does, with package.searchers reached through the registry's loaded
 * table (loaded at index lt); pushes the module, records it there and returns 1, or returns 0
 * with nothing pushed. */
static int search_module(lua_State *L, int lt, const char *name) {
  int top = lua_gettop(L);
  if (lua_getfield(L, lt, "package") != LUA_TTABLE || lua_getfield(L, -1, "searchers") != LUA_TTABLE) {
    lua_settop(L, top);
    return 0;
  }
  for (lua_Integer i = 1; lua_rawgeti(L, top + 2, i) == LUA_TFUNCTION; i++) {
    lua_pushstring(L, name);
    lua_call(L, 1, 2); /* a loader and its extra value, or why not */
    if (lua_isfunction(L, -2)) {
      lua_pushstring(L, name);
      lua_insert(L, -2);
      lua_call(L, 2, 1);
      if (!lua_istable(L, -1)) break;
      lua_pushvalue(L, -1);
      lua_setfield(L, lt, name);
      lua_replace(L, top + 1);
      lua_settop(L, top + 1);
      return 1;
    }
    lua_pop(L, 2);
  }
  lua_settop(L, top);
  return 0;
}

/* Pushes the lua-cjson module table and returns whether it is cjson.safe. In order: a module
 * already loaded, one the package searchers find, then the global require; else a clear error. */
static int push_cjson(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int lt = lua_gettop(L);
  for (int i = 0; cjson_names[i]; i++) {
    if (lua_getfield(L, lt, cjson_names[i]) == LUA_TTABLE) {
      lua_remove(L, lt);
      return i == 0;
    }
    lua_pop(L, 1);
  }
  for (int i = 0; cjson_names[i]; i++) {
    if (search_module(L, lt, cjson_names[i])) {
      lua_remove(L, lt);
      return i == 0;
    }
  }
  if (lua_getglobal(L, "require") == LUA_TFUNCTION) {
    lua_pushstring(L, cjson_names[0]);
    lua_call(L, 1, 1);
    if (lua_istable(L, -1)) {
      lua_remove(L, lt);
      return 1;
    }
  }
  luaL_error(L, "partnercustomers: cannot load lua-cjson: 'cjson.safe' is not loaded, and neither "
                "package.searchers nor require can load it");
  return 0;
}

/* A private cjson instance, so that our settings never change the user's cjson. */
void pc_json_open(lua_State *L) {
  int safe = push_cjson(L);
  if (lua_getfield(L, -1, "new") != LUA_TFUNCTION)
    luaL_error(L, "partnercustomers: the lua-cjson module found has no 'new' function");
  lua_call(L, 0, 1);
  /* reject NaN, Infinity and hex numbers: not JSON */
  lua_getfield(L, -1, "decode_invalid_numbers");
  lua_pushboolean(L, 0);
  lua_call(L, 1, 0);
  lua_getfield(L, -1, "decode_max_depth");
  lua_pushinteger(L, PC_JSON_MAX_DEPTH);
  lua_call(L, 1, 0);
  lua_getfield(L, -1, "decode");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &decoder_key);
  lua_pushboolean(L, safe);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &safe_key);
  lua_pop(L, 2);
}

/* ---- normalising what cjson gives ---- */

static int is_null(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

/* The float at the top, when integral, becomes an integer (in place). */
static void integral(lua_State *L) {
  if (lua_type(L, -1) != LUA_TNUMBER || lua_isinteger(L, -1)) return;
  lua_Number d = lua_tonumber(L, -1);
  lua_Integer i;
  if (floor(d) == d && lua_numbertointeger(d, &i)) {
    lua_pop(L, 1);
    lua_pushinteger(L, i);
  }
}

static void normalise(lua_State *L);

/* The value at the top (not null), normalised in place. */
static void normalise_value(lua_State *L) {
  if (lua_istable(L, -1)) normalise(L);
  else integral(L);
}

/* A JSON array (the table at the top, items 1..n, nulls among them): the other items close up,
 * in order, so that it stays a sequence. Only existing slots are written: nothing allocated. */
static void normalise_array(lua_State *L, lua_Integer n) {
  lua_Integer kept = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (is_null(L, -1)) {
      lua_pop(L, 1);
      continue;
    }
    normalise_value(L);
    lua_rawseti(L, -2, ++kept);
  }
  for (lua_Integer i = kept + 1; i <= n; i++) {
    lua_pushnil(L);
    lua_rawseti(L, -2, i);
  }
}

/* A JSON object (the table at the top): null fields removed, the others normalised. */
static void normalise_object(lua_State *L) {
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (is_null(L, -1)) {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_pushnil(L); /* assigning nil to an existing field during lua_next is allowed */
      lua_rawset(L, -4);
      continue;
    }
    if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      integral(L);
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4); /* an existing field */
      continue;
    }
    if (lua_istable(L, -1)) normalise(L);
    lua_pop(L, 1);
  }
}

/* Normalises the table at the top, in place (depth is bounded by cjson's max depth). cjson makes
 * a JSON array a table with items 1..n (a null is a value, so no holes) and an object a table
 * with string keys only: a table with an item 1 is an array. */
static void normalise(lua_State *L) {
  luaL_checkstack(L, 6, "JSON nested too deeply");
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  if (n > 0) normalise_array(L, n);
  else normalise_object(L);
}

/* ---- decoding ---- */

/* The number of values in s, counted before decoding (an object member counts once): 1, plus
 * one per comma and one per non-empty object or array, outside strings, since every value but
 * the first of a container follows a comma. Exact for JSON; counting stops past max. */
static size_t count_values(const char *s, size_t n, size_t max) {
  size_t count = 1;
  int in_string = 0, opened = 0;
  for (size_t i = 0; i < n && count <= max; i++) {
    char ch = s[i];
    if (in_string) {
      if (ch == '\\') i++;
      else if (ch == '"') in_string = 0;
      continue;
    }
    if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') continue;
    if (opened && ch != '}' && ch != ']') count++; /* its first value */
    opened = ch == '{' || ch == '[';
    if (ch == '"') in_string = 1;
    else if (ch == ',') count++;
  }
  return count;
}

/* The decoder failed (status of its lua_pcall, message at the top). A cjson.safe decoder returns
 * nil and a message for bad JSON and raises only when memory runs out (its "Memory allocation
 * error in CJSON protected call"); a plain cjson decoder raises for both, and then LUA_ERRMEM
 * tells them apart. Running out of memory is raised again as Lua's memory error: a valid
 * response must not be blamed for it. Returns only for bad JSON. */
static void decoder_failed(lua_State *L, int status) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &safe_key);
  int safe = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (status == LUA_ERRMEM) lua_error(L);
  if (safe) {
    lua_pushliteral(L, "not enough memory"); /* Lua's own message, pre-allocated by the state */
    lua_error(L);
  }
}

pc_json_rc pc_json_decode(lua_State *L, const char *s, size_t len) {
  /* values <= 1 + len: only a body that long can be over the bound */
  if (len >= PC_JSON_MAX_VALUES && count_values(s, len, PC_JSON_MAX_VALUES) > PC_JSON_MAX_VALUES) {
    lua_pushfstring(L, "response has too many JSON values (more than %d)", PC_JSON_MAX_VALUES);
    return PC_JSON_TOO_MANY;
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &decoder_key);
  lua_pushlstring(L, s, len);
  int status = lua_pcall(L, 1, 2, 0);
  if (status != LUA_OK) {
    decoder_failed(L, status);
    if (!lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushliteral(L, "invalid JSON");
    }
    return PC_JSON_INVALID;
  }
  if (lua_isnil(L, -2)) {
    lua_remove(L, -2);
    if (!lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushliteral(L, "invalid JSON");
    }
    return PC_JSON_INVALID;
  }
  lua_pop(L, 1);
  if (is_null(L, -1)) { /* a top-level null: nothing */
    lua_pop(L, 1);
    lua_pushnil(L);
  } else
    normalise_value(L);
  return PC_JSON_OK;
}
