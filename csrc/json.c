/* JSON into Lua tables with lua-cjson, then normalised to what API.md promises:
 * JSON null never reaches the user (the field is absent) and integral numbers are Lua integers
 * (lua-cjson 2.1 decodes every number as a float and null as a sentinel light userdata). */
#include <math.h>
#include "pc.h"

static const char decoder_key = 'j'; /* registry key: address of this byte */
#define PC_JSON_MAX_DEPTH 256

/* A private cjson.safe instance, so that our settings never change the user's cjson. */
void pc_json_open(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "cjson.safe");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
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
  lua_pop(L, 2);
}

static int is_null(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

/* Normalises the table at the top, in place (depth is bounded by cjson's max depth). */
static void normalise(lua_State *L) {
  luaL_checkstack(L, 4, "JSON nested too deeply");
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
      lua_Number d = lua_tonumber(L, -1);
      lua_Integer i;
      if (floor(d) == d && lua_numbertointeger(d, &i)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushinteger(L, i);
        lua_rawset(L, -4);
        continue;
      }
    } else if (lua_istable(L, -1)) {
      normalise(L);
    }
    lua_pop(L, 1);
  }
}

int pc_json_decode(lua_State *L, const char *s, size_t len) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &decoder_key);
  lua_pushlstring(L, s, len);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) { /* cjson.safe should not raise; out of memory may */
    return 0;
  }
  if (lua_isnil(L, -2)) {
    lua_remove(L, -2);
    if (!lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushliteral(L, "invalid JSON");
    }
    return 0;
  }
  lua_pop(L, 1);
  if (is_null(L, -1)) { /* a top-level null: nothing */
    lua_pop(L, 1);
    lua_pushnil(L);
  } else if (lua_type(L, -1) == LUA_TNUMBER) {
    lua_Number d = lua_tonumber(L, -1);
    lua_Integer i;
    if (floor(d) == d && lua_numbertointeger(d, &i)) {
      lua_pop(L, 1);
      lua_pushinteger(L, i);
    }
  } else if (lua_istable(L, -1)) {
    normalise(L);
  }
  return 1;
}
