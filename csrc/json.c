/* JSON into Lua tables with lua-cjson, then normalised to what doc/API.md promises:
 * JSON null never reaches the user (an object's field is absent, an array closes up around it)
 * and integral numbers are Lua integers (lua-cjson 2.1 decodes every number as a float and null
 * as a sentinel light userdata). */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
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
  int exact;
  lua_Integer i = lua_tointegerx(L, -1, &exact); /* a float converts only when integral */
  if (exact) {
    lua_pop(L, 1);
    lua_pushinteger(L, i);
  }
}

/* scalars, when not NULL, counts the nulls and numbers met (see count_scalars). */
static void normalise(lua_State *L, size_t *scalars);

static void count(size_t *scalars) {
  if (scalars) ++*scalars;
}

/* The value at the top (not null), normalised in place. */
static void normalise_value(lua_State *L, size_t *scalars) {
  if (lua_istable(L, -1)) normalise(L, scalars);
  else if (lua_type(L, -1) == LUA_TNUMBER) {
    count(scalars);
    integral(L);
  }
}

/* A JSON array (the table at the top, items 1..n, nulls among them): the other items close up,
 * in order, so that it stays a sequence. Only existing slots are written: nothing allocated. */
static void normalise_array(lua_State *L, lua_Integer n, size_t *scalars) {
  lua_Integer kept = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (is_null(L, -1)) {
      count(scalars);
      lua_pop(L, 1);
      continue;
    }
    normalise_value(L, scalars);
    lua_rawseti(L, -2, ++kept);
  }
  for (lua_Integer i = kept + 1; i <= n; i++) {
    lua_pushnil(L);
    lua_rawseti(L, -2, i);
  }
}

/* A JSON object (the table at the top): null fields removed, the others normalised. */
static void normalise_object(lua_State *L, size_t *scalars) {
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    int t = lua_type(L, -1);
    if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) {
      count(scalars);
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_pushnil(L); /* assigning nil to an existing field during lua_next is allowed */
      lua_rawset(L, -4);
      continue;
    }
    if (t == LUA_TNUMBER) {
      count(scalars);
      if (!lua_isinteger(L, -1)) {
        integral(L);
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4); /* an existing field */
        continue;
      }
    }
    if (t == LUA_TTABLE) normalise(L, scalars);
    lua_pop(L, 1);
  }
}

/* Normalises the table at the top, in place (depth is bounded by cjson's max depth). cjson makes
 * a JSON array a table with items 1..n (a null is a value, so no holes) and an object a table
 * with string keys only: a table with an item 1 is an array. */
static void normalise(lua_State *L, size_t *scalars) {
  luaL_checkstack(L, 6, "JSON nested too deeply");
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  if (n > 0) normalise_array(L, n, scalars);
  else normalise_object(L, scalars);
}

/* ---- job statuses (the one table of them: job_status.lua reads it through the core) ---- */

static const char *const job_labels[] = {
  "N/A", "Working", "Failed", "Waiting for Configuration", "Multiple Issues Found",
  "Finished with Exception", "No Backup Update",
};
#define JOB_CODES ((int)(sizeof job_labels / sizeof job_labels[0]))

/* Spellings after job_spelling (lower case, separators as one space, trimmed) -> code: every
 * label's own, then the other forms of the doc versions. */
#define SPELLING(s, code) {s, sizeof s - 1, code}
static const struct {
  const char *s;
  size_t n;
  int code;
} job_spellings[] = {
  SPELLING("n/a", 0), SPELLING("working", 1), SPELLING("failed", 2),
  SPELLING("waiting for configuration", 3), SPELLING("multiple issues found", 4),
  SPELLING("finished with exception", 5), SPELLING("no backup update", 6),
  SPELLING("na", 0), SPELLING("n a", 0), SPELLING("multiple issue found", 4),
  SPELLING("finished with exceptions", 5), SPELLING("no backup updates", 6),
};

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* s[0..n) in ASCII lower case, each run of white space, '_' and '-' as one space, without a
 * leading or trailing one, into out (room for cap); its length, or cap + 1 when longer. */
static size_t job_spelling(const char *s, size_t n, char *out, size_t cap) {
  size_t m = 0;
  int gap = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (is_space(c) || c == '_' || c == '-') {
      gap = m > 0;
      continue;
    }
    if (m + gap >= cap) return cap + 1;
    if (gap) out[m++] = ' ';
    gap = 0;
    out[m++] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
  }
  return m;
}

/* The integer a string of optional spaces, an optional '-', digits and optional spaces reads as
 * (as tonumber reads the digits: past the integers, a float that may still be integral). */
static int string_integer(const char *s, size_t n, lua_Integer *out) {
  size_t i = 0, end = n;
  while (i < n && is_space(s[i])) i++;
  while (end > i && is_space(s[end - 1])) end--;
  size_t d = i + (i < end && s[i] == '-');
  if (d == end) return 0;
  for (size_t j = d; j < end; j++)
    if (s[j] < '0' || s[j] > '9') return 0;
  lua_Unsigned v = 0, max = (lua_Unsigned)LUA_MAXINTEGER + (d > i);
  size_t j = d;
  for (; j < end && v <= (max - (lua_Unsigned)(s[j] - '0')) / 10; j++) v = v * 10 + (lua_Unsigned)(s[j] - '0');
  if (j == end) {
    *out = d > i ? (lua_Integer)(0u - v) : (lua_Integer)v;
    return 1;
  }
  char buf[64]; /* longer: a float far past the integers */
  if (end - i >= sizeof buf) return 0;
  memcpy(buf, s + i, end - i);
  buf[end - i] = '\0';
  double f = strtod(buf, NULL);
  return floor(f) == f && lua_numbertointeger(f, out);
}

/* The value at idx as an integer (an integral number or a numeric string), as util.to_integer. */
static int to_integer(lua_State *L, int idx, lua_Integer *out) {
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER) {
    int ok;
    *out = lua_tointegerx(L, idx, &ok);
    return ok;
  }
  if (t != LUA_TSTRING) return 0;
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  return string_integer(s, n, out);
}

/* The job status code of the value at idx (a code, a numeric string or a label), or -1. */
static int job_code(lua_State *L, int idx) {
  lua_Integer i;
  if (to_integer(L, idx, &i)) return i >= 0 && i < JOB_CODES ? (int)i : -1;
  if (lua_type(L, idx) != LUA_TSTRING) return -1;
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  char buf[32];
  size_t m = job_spelling(s, n, buf, sizeof buf);
  for (size_t k = 0; m <= sizeof buf && k < sizeof job_spellings / sizeof job_spellings[0]; k++)
    if (job_spellings[k].n == m && memcmp(job_spellings[k].s, buf, m) == 0) return job_spellings[k].code;
  return -1;
}

int pc_l_job_status_code(lua_State *L) {
  int code = job_code(L, 1);
  if (code < 0) lua_pushnil(L);
  else lua_pushinteger(L, code);
  return 1;
}

int pc_l_job_status_labels(lua_State *L) {
  lua_createtable(L, JOB_CODES - 1, 1);
  for (int i = 0; i < JOB_CODES; i++) {
    lua_pushstring(L, job_labels[i]);
    lua_rawseti(L, -2, i);
  }
  return 1;
}

/* ---- item keys ---- */

/* Replaces the id at the top by what tells its item apart (for a non-empty string or a number):
 * the id itself, its decimal text for a number, "#" .. id for a string that starts with '#' or
 * NUL (so no key of an id starts with NUL: the pager's keys of items without one do); or false. */
static void id_key(lua_State *L) {
  int t = lua_type(L, -1);
  if (t == LUA_TNUMBER) {
    luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
  } else if (t == LUA_TSTRING && lua_rawlen(L, -1) > 0) {
    char c = *lua_tostring(L, -1);
    if (c == '#' || c == '\0') {
      lua_pushliteral(L, "#");
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
  } else {
    lua_pop(L, 1);
    lua_pushboolean(L, 0);
  }
}

/* The same for the id of the item at idx (false for an item that is not a table). */
static void push_item_key(lua_State *L, int idx, int key_id) {
  if (lua_type(L, idx) != LUA_TTABLE) {
    lua_pushboolean(L, 0);
    return;
  }
  lua_pushvalue(L, key_id);
  lua_rawget(L, idx < 0 ? idx - 1 : idx);
  id_key(L);
}

int pc_l_item_key(lua_State *L) {
  lua_settop(L, 1);
  lua_pushliteral(L, "id");
  push_item_key(L, 1, 2);
  if (!lua_toboolean(L, -1)) lua_pushnil(L);
  return 1;
}

/* ---- shapes: the customer listings, normalised in the same pass ---- */

/* The answers a request's `decode` can name: the customers are the array at `field`. */
static const struct {
  const char *name, *field;
  int tenants_default; /* a customer without tenants gets an empty array */
} shapes[] = {
  {"avepoint-v3", "data", 1},
  {"avepoint-odata", "value", 0},
};
#define SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

int pc_json_shape(const char *name) {
  for (int i = 0; i < SHAPES; i++)
    if (strcmp(shapes[i].name, name) == 0) return PC_DECODE_SHAPE + i;
  return -1;
}

/* Strings pushed once per answer (so that no field access interns a name), in this order. */
static const char *const names[] = {"id", "name", "jobStatus", "jobStatusCode", "managementMode", "tenants",
                                    "organization", "ownerEmail", "countryOrRegion"};
enum { N_ID, N_NAME, N_JOBSTATUS, N_JOBSTATUSCODE, N_MANAGEMENTMODE, N_TENANTS, N_OTHERS, N_LABELS = N_OTHERS + 3 };

typedef struct {
  int names;           /* stack index of names[0]; the job labels follow them */
  int tenants_default;
  struct {             /* the job status strings of the answer met last, with their codes */
    size_t n;
    char s[32];
    int code;
  } codes[32];
  unsigned next_code; /* codes[next_code % 32] is the next to replace */
} shape_ctx;

/* job_code of the value at the top, remembering the codes of short strings (an answer repeats
 * a handful of spellings). */
static int answer_job_code(lua_State *L, shape_ctx *cx) {
  if (lua_type(L, -1) != LUA_TSTRING) return job_code(L, -1);
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  if (n > sizeof cx->codes[0].s) return job_code(L, -1);
  size_t held = cx->next_code < 32 ? cx->next_code : 32;
  for (size_t k = 0; k < held; k++)
    if (cx->codes[k].n == n && memcmp(cx->codes[k].s, s, n) == 0) return cx->codes[k].code;
  int code = job_code(L, -1);
  unsigned k = cx->next_code++ % 32;
  cx->codes[k].n = n;
  memcpy(cx->codes[k].s, s, n);
  cx->codes[k].code = code;
  return code;
}

/* Which of names[] the string key at idx is (exactly), or -1; *variant: an other spelling in case
 * of "id" or "name". */
static int name_of(lua_State *L, int idx, int *variant) {
  size_t n;
  const char *k = lua_tolstring(L, idx, &n);
  switch (n) {
    case 2:
      if (k[0] == 'i' && k[1] == 'd') return N_ID;
      *variant |= (k[0] | 0x20) == 'i' && (k[1] | 0x20) == 'd';
      return -1;
    case 4:
      if (memcmp(k, "name", 4) == 0) return N_NAME;
      *variant |= (k[0] | 0x20) == 'n' && (k[1] | 0x20) == 'a' && (k[2] | 0x20) == 'm' && (k[3] | 0x20) == 'e';
      return -1;
    case 7: return memcmp(k, "tenants", 7) == 0 ? N_TENANTS : -1;
    case 9: return memcmp(k, "jobStatus", 9) == 0 ? N_JOBSTATUS : -1;
    case 13: return memcmp(k, "jobStatusCode", 13) == 0 ? N_JOBSTATUSCODE : -1;
    case 14: return memcmp(k, "managementMode", 14) == 0 ? N_MANAGEMENTMODE : -1;
    default: return -1;
  }
}

/* Removes the null at the top (lua_next's value, its key below, the table at t) and returns 1,
 * or makes an integral float an integer (in t too) and returns 0: still to look at. */
static int plain_field(lua_State *L, int t) {
  int ty = lua_type(L, -1);
  if (ty == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L); /* assigning nil to an existing field during lua_next is allowed */
    lua_rawset(L, t);
    return 1;
  }
  if (ty == LUA_TNUMBER && !lua_isinteger(L, -1)) {
    integral(L);
    if (lua_isinteger(L, -1)) {
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2);
      lua_rawset(L, t); /* an existing field */
    }
  }
  return 0;
}

/* Sets t[key] = the value at the top (popped); key is a stack index. */
static void set_field(lua_State *L, int t, int key) {
  lua_pushvalue(L, key);
  lua_pushvalue(L, -2);
  lua_rawset(L, t);
  lua_pop(L, 1);
}

/* Whether the key at idx spells names[which] in any case (ASCII: string.lower in the C locale). */
static int spells(lua_State *L, int idx, int which) {
  size_t n, want = strlen(names[which]);
  const char *k = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &n) : NULL;
  if (k == NULL || n != want) return 0;
  for (size_t i = 0; i < n; i++)
    if ((k[i] >= 'A' && k[i] <= 'Z' ? k[i] | 0x20 : k[i]) != names[which][i]) return 0;
  return 1;
}

/* Moves t[k] to t[names[which]] for the first key k (in traversal order) that spells it in
 * another case, as the Lua layer's lower_key did, when t[names[which]] is absent. */
static void lower_key(lua_State *L, int t, const shape_ctx *cx, int which) {
  lua_pushvalue(L, cx->names + which);
  if (lua_rawget(L, t) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (spells(L, -2, which)) {
      lua_pushvalue(L, -2);
      lua_pushnil(L);
      lua_rawset(L, t);
      set_field(L, t, cx->names + which);
      lua_pop(L, 1);
      return;
    }
    lua_pop(L, 1);
  }
}

/* The value at the top as an object: normalised; 0 when it is not a table or is a (non-empty)
 * array, as util.is_object tells. */
static int as_object(lua_State *L) {
  if (!lua_istable(L, -1)) {
    integral(L);
    return 0;
  }
  if (lua_rawlen(L, -1) == 0) return 1;
  normalise(L, NULL);
  return lua_rawlen(L, -1) == 0;
}

/* One tenant (at the top): its fields normalised, Id/Name spelt id/name. */
static const char *shape_tenant(lua_State *L, const shape_ctx *cx) {
  if (!as_object(L)) return "has a tenant that is not an object";
  int t = lua_gettop(L), variant = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (plain_field(L, t)) continue;
    if (lua_type(L, -2) == LUA_TSTRING) name_of(L, -2, &variant);
    if (lua_istable(L, -1)) normalise(L, NULL);
    lua_pop(L, 1);
  }
  if (variant) {
    lower_key(L, t, cx, N_ID);
    lower_key(L, t, cx, N_NAME);
  }
  return NULL;
}

/* The value of a customer's tenants (at the top): an array of tenants. */
static const char *shape_tenants(lua_State *L, const shape_ctx *cx) {
  if (!lua_istable(L, -1)) return "has tenants that are not an array";
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1), kept = 0;
  if (n == 0) { /* an empty array, or an object: not empty once normalised */
    normalise(L, NULL);
    lua_pushnil(L);
    if (!lua_next(L, -2)) return NULL;
    lua_pop(L, 2);
    return "has tenants that are not an array";
  }
  const char *why = NULL;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (is_null(L, -1)) {
      lua_pop(L, 1);
      continue;
    }
    if (why) normalise_value(L, NULL);
    else why = shape_tenant(L, cx);
    lua_rawseti(L, -2, ++kept);
  }
  for (lua_Integer i = kept + 1; i <= n; i++) {
    lua_pushnil(L);
    lua_rawseti(L, -2, i);
  }
  return why;
}

/* A customer's field (lua_next's value at the top, its key below, the customer at c) that is one
 * of names[]: *code gets the job status code, *seen a bit per name met. */
static const char *shape_field(lua_State *L, int c, const shape_ctx *cx, int which, int *code) {
  lua_Integer i;
  switch (which) {
    case N_JOBSTATUS:
      *code = job_code(L, -1);
      if (*code >= 0) {
        lua_pushvalue(L, cx->names + N_LABELS + *code);
        set_field(L, c, lua_gettop(L) - 2);
      } else if (lua_istable(L, -1))
        normalise(L, NULL);
      return NULL;
    case N_MANAGEMENTMODE:
      if (lua_type(L, -1) == LUA_TSTRING && to_integer(L, -1, &i)) {
        lua_pushinteger(L, i);
        set_field(L, c, lua_gettop(L) - 2);
      } else if (lua_istable(L, -1))
        normalise(L, NULL);
      return NULL;
    case N_TENANTS:
      return shape_tenants(L, cx);
    default:
      if (lua_istable(L, -1)) normalise(L, NULL);
      return NULL;
  }
}

/* One customer (at the top): its fields normalised, the job status as label and code, tenants
 * checked (and defaulted); NULL, or what is wrong with it. */
static const char *shape_customer(lua_State *L, const shape_ctx *cx) {
  if (!as_object(L)) return "is not an object";
  int c = lua_gettop(L), variant = 0, seen = 0, code = -1;
  const char *why = NULL;
  lua_pushnil(L);
  while (lua_next(L, c)) {
    if (plain_field(L, c)) continue;
    int which = lua_type(L, -2) == LUA_TSTRING ? name_of(L, -2, &variant) : -1;
    if (which >= 0) {
      seen |= 1 << which;
      const char *w = shape_field(L, c, cx, which, &code);
      if (!why) why = w;
    } else if (lua_istable(L, -1))
      normalise(L, NULL);
    lua_pop(L, 1);
  }
  if (code >= 0) {
    lua_pushinteger(L, code);
    set_field(L, c, cx->names + N_JOBSTATUSCODE);
  } else if (seen & (1 << N_JOBSTATUSCODE)) { /* an unknown status has no code */
    lua_pushnil(L);
    set_field(L, c, cx->names + N_JOBSTATUSCODE);
  }
  if (!(seen & (1 << N_TENANTS)) && cx->tenants_default) {
    lua_createtable(L, 0, 0);
    set_field(L, c, cx->names + N_TENANTS);
  }
  return why;
}

/* The customers (the array at the top, n > 0 items): each normalised and shaped, nulls closed
 * up; their keys into the table at keys. NULL, or what is wrong with customer *at. */
static const char *shape_list(lua_State *L, const shape_ctx *cx, lua_Integer n, int keys, lua_Integer *at) {
  int list = lua_gettop(L);
  const char *why = NULL;
  lua_Integer kept = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    if (is_null(L, -1)) {
      lua_pop(L, 1);
      continue;
    }
    kept++;
    if (why) normalise_value(L, NULL);
    else if ((why = shape_customer(L, cx)) != NULL)
      *at = kept;
    else {
      push_item_key(L, -1, cx->names + N_ID);
      lua_rawseti(L, keys, kept);
    }
    lua_rawseti(L, list, kept);
  }
  for (lua_Integer i = kept + 1; i <= n; i++) {
    lua_pushnil(L);
    lua_rawseti(L, list, i);
  }
  return why;
}

/* The name util.got gives the (normalised, not object) value at the top. */
static const char *got(lua_State *L) {
  if (lua_istable(L, -1)) return "an array";
  if (lua_type(L, -1) == LUA_TNUMBER) return lua_isinteger(L, -1) ? "integer" : "float";
  return luaL_typename(L, -1);
}

/* The list of customers (data[field], at the top, nil when absent) of the answer's object;
 * pushes it (or a new empty one) and its keys, or returns what is wrong with it. */
static const char *shape_items(lua_State *L, const shape_ctx *cx, lua_Integer *at) {
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 0);
  }
  if (!lua_istable(L, -1)) {
    integral(L);
    return "is not an array";
  }
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  if (n == 0) {
    normalise(L, NULL);
    lua_pushnil(L);
    if (lua_next(L, -2)) {
      lua_pop(L, 2);
      return "is not an array";
    }
    lua_createtable(L, 0, 0);
    return NULL;
  }
  lua_createtable(L, (int)(n < INT_MAX ? n : INT_MAX), 0);
  int keys = lua_gettop(L);
  lua_pushvalue(L, -2);
  const char *why = shape_list(L, cx, n, keys, at);
  lua_pop(L, 1);
  return why;
}

/* ---- the fast path of a shape ---- */

/* Whether a null or a number starts at p (after white space), before end. */
static int scalar_at(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p < end && (*p == 'n' || *p == '-' || (*p >= '0' && *p <= '9'));
}

/* At least the nulls and numbers of the JSON text s[0..n), each counted once at the ':', ',' or
 * '[' before it (some of these in strings count too). Each one is a value of the decoded tree,
 * so a pass that met as many met them all: then no other field needs a look. (A repeated key
 * leaves one value for two in the text: such a pass never counts as complete.) */
static size_t count_scalars(const char *s, size_t n) {
  static const char marks[] = ":,[";
  size_t c = 0;
  const char *end = s + n;
  for (int m = 0; m < 3; m++)
    for (const char *p = s; (p = memchr(p, marks[m], (size_t)(end - p))) != NULL;)
      c += scalar_at(++p, end);
  return c;
}

/* Pushes t[names[which]], normalised (a null removed from t: nil), counting its scalars;
 * returns its type. */
static int fast_get(lua_State *L, int t, const shape_ctx *cx, int which, size_t *scalars) {
  int key = cx->names + which;
  lua_pushvalue(L, key);
  int ty = lua_rawget(L, t);
  if (ty == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) {
    ++*scalars;
    lua_pushvalue(L, key);
    lua_pushnil(L);
    lua_rawset(L, t);
    lua_pop(L, 1);
    lua_pushnil(L);
    return LUA_TNIL;
  }
  if (ty == LUA_TNUMBER) {
    ++*scalars;
    int exact;
    lua_Integer i = lua_isinteger(L, -1) ? 0 : lua_tointegerx(L, -1, &exact);
    if (!lua_isinteger(L, -1) && exact) { /* an integral float: the integer, in t too */
      lua_pop(L, 1);
      lua_pushinteger(L, i);
      set_field(L, t, key);
      lua_pushinteger(L, i);
    }
  } else if (ty == LUA_TTABLE)
    normalise(L, scalars);
  return ty;
}

/* Whether t (at the top, without names[which]) has a key that spells it in another case. */
static int has_variant(lua_State *L, int which) {
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    int same = spells(L, -2, which);
    lua_pop(L, 1);
    if (same) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

/* The tenants (a table, at the top) on the fast path: 0 when they need the full pass. */
static int fast_tenants(lua_State *L, const shape_ctx *cx, size_t *scalars) {
  int ts = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, ts);
  if (n == 0) {
    lua_pushnil(L);
    int empty = !lua_next(L, ts);
    lua_settop(L, ts);
    return empty;
  }
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, ts, i) != LUA_TTABLE || lua_rawlen(L, -1) > 0) return 0;
    int t = lua_gettop(L);
    int id = fast_get(L, t, cx, N_ID, scalars), name = fast_get(L, t, cx, N_NAME, scalars);
    lua_settop(L, t);
    if ((id == LUA_TNIL && has_variant(L, N_ID)) || (name == LUA_TNIL && has_variant(L, N_NAME))) return 0;
    lua_settop(L, ts);
  }
  return 1;
}

/* One customer (at the top) on the fast path: its fields of names[] looked up, not traversed, its
 * key into keys[at]; 0 when it needs the full pass. */
static int fast_customer(lua_State *L, shape_ctx *cx, size_t *scalars, int keys, lua_Integer at) {
  if (!lua_istable(L, -1) || lua_rawlen(L, -1) > 0) return 0;
  int c = lua_gettop(L), code = -1;
  if (fast_get(L, c, cx, N_JOBSTATUS, scalars) != LUA_TNIL && (code = answer_job_code(L, cx)) >= 0 &&
      !lua_rawequal(L, -1, cx->names + N_LABELS + code)) {
    lua_pushvalue(L, cx->names + N_LABELS + code);
    set_field(L, c, cx->names + N_JOBSTATUS);
  }
  if (code >= 0) { /* replaces any jobStatusCode (one holding a number: the count tells) */
    lua_pushinteger(L, code);
    set_field(L, c, cx->names + N_JOBSTATUSCODE);
  } else if (fast_get(L, c, cx, N_JOBSTATUSCODE, scalars) != LUA_TNIL) {
    lua_pushnil(L); /* an unknown status has no code */
    set_field(L, c, cx->names + N_JOBSTATUSCODE);
  }
  lua_Integer i;
  if (fast_get(L, c, cx, N_MANAGEMENTMODE, scalars) == LUA_TSTRING && to_integer(L, -1, &i)) {
    lua_pushinteger(L, i);
    set_field(L, c, cx->names + N_MANAGEMENTMODE);
  }
  fast_get(L, c, cx, N_ID, scalars);
  id_key(L);
  lua_rawseti(L, keys, at);
  for (int k = N_OTHERS; k < N_LABELS; k++) fast_get(L, c, cx, k, scalars); /* the other fields README.md names */
  lua_pushvalue(L, cx->names + N_TENANTS);
  int ty = lua_rawget(L, c);
  int ok = ty == LUA_TNIL || (ty == LUA_TTABLE && fast_tenants(L, cx, scalars));
  lua_settop(L, c);
  if (ok && ty == LUA_TNIL && cx->tenants_default) {
    lua_createtable(L, 0, 0);
    set_field(L, c, cx->names + N_TENANTS);
  }
  return ok;
}

/* The customers (the array at the top, n > 0 items) on the fast path, their keys into the table
 * at keys; 0 when they need the full pass (a null or wrong item, a field to look at). */
static int fast_list(lua_State *L, shape_ctx *cx, lua_Integer n, int keys, size_t *scalars) {
  int list = lua_gettop(L);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    int ok = fast_customer(L, cx, scalars, keys, i);
    lua_settop(L, list);
    if (!ok) return 0;
  }
  return 1;
}

/* ---- a shaped answer ---- */

/* The answer's object (at data) of shape `cx`: its list of customers (field) shaped, the rest
 * normalised. Pushes the items and their keys, or a problem (returns 0). */
static int shape_object(lua_State *L, int data, shape_ctx *cx, const char *field, const char *s, size_t len) {
  /* the list is shaped alone: the rest of the object is normalised without it */
  int has = lua_getfield(L, data, field) != LUA_TNIL;
  if (has) {
    lua_pushnil(L);
    lua_setfield(L, data, field);
  }
  size_t scalars = 0;
  lua_pushvalue(L, data);
  normalise(L, &scalars);
  lua_pop(L, 1);
  if (is_null(L, -1)) { /* a null list: absent */
    lua_pop(L, 1);
    lua_pushnil(L);
    has = 0;
    scalars++;
  }
  if (has && !lua_istable(L, -1)) integral(L); /* not a list (a problem below), but normalised */
  if (has) {
    lua_pushvalue(L, -1);
    lua_setfield(L, data, field);
  }
  lua_Integer n = lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0;
  if (n > 0) {
    lua_createtable(L, (int)(n < INT_MAX ? n : INT_MAX), 0);
    lua_pushvalue(L, -2);
    int fast = fast_list(L, cx, n, lua_gettop(L) - 1, &scalars) && scalars == count_scalars(s, len);
    lua_pop(L, 1);
    if (fast) return 1;
    lua_pop(L, 1);
  }
  lua_Integer at = 0;
  const char *why = shape_items(L, cx, &at);
  if (!why) return 1;
  if (at > 0) lua_pushfstring(L, "customer %I %s", (LUAI_UACINT)at, why);
  else lua_pushfstring(L, "\"%s\" %s", field, why);
  return 0;
}

/* The answer at the top (JSON text s[0..len)) for shape `shape`: normalised, and its customers
 * shaped in the same pass. Pushes the report {items = the customers, keys = their keys} or
 * {problem = message}. */
static void shape_answer(lua_State *L, int shape, const char *s, size_t len) {
  luaL_checkstack(L, 64, "JSON nested too deeply");
  int data = lua_gettop(L);
  for (int i = 0; i < N_LABELS; i++) lua_pushstring(L, names[i]);
  for (int i = 0; i < JOB_CODES; i++) lua_pushstring(L, job_labels[i]);
  shape_ctx cx = {data + 1, shapes[shape].tenants_default, {{0, "", 0}}, 0};
  lua_createtable(L, 0, 2);
  int rep = lua_gettop(L);
  if (lua_istable(L, data) && lua_rawlen(L, data) > 0) {
    lua_pushvalue(L, data);
    normalise(L, NULL);
    lua_pop(L, 1);
  }
  if (!lua_istable(L, data) || lua_rawlen(L, data) > 0) {
    lua_pushvalue(L, data);
    integral(L);
    lua_replace(L, data);
    lua_pushvalue(L, data);
    lua_pushfstring(L, "expected a JSON object (got %s)", got(L));
    lua_setfield(L, rep, "problem");
  } else if (shape_object(L, data, &cx, shapes[shape].field, s, len)) {
    lua_setfield(L, rep, "keys");
    lua_setfield(L, rep, "items");
  } else
    lua_setfield(L, rep, "problem");
  lua_copy(L, rep, data + 1);
  lua_settop(L, data + 1);
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

pc_json_rc pc_json_decode(lua_State *L, const char *s, size_t len, int mode) {
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
  }
  if (mode >= PC_DECODE_SHAPE) shape_answer(L, mode - PC_DECODE_SHAPE, s, len);
  else normalise_value(L, NULL);
  return PC_JSON_OK;
}
