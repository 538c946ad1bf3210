/* JSON answers straight into the Lua tables doc/API.md promises, in one pass over the text:
 * JSON null never reaches the user (an object's field is absent, an array closes up around it),
 * and integral numbers are Lua integers (exactly, up to 64 bits). The grammar is RFC 8259's, with
 * no extension; strings are kept as the bytes they are (\u escapes become UTF-8). Running out of
 * memory raises Lua's memory error from the allocation that failed: the decoder holds nothing but
 * Lua values, so nothing leaks. */
#include <limits.h>
#include <locale.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "pc.h"

#define PC_JSON_MAX_DEPTH 256

/* ---- decoding ---- */

typedef struct {
  lua_State *L;
  const char *s, *p, *end;
  const char *why; /* what is wrong at p, once something is */
  int depth;
  /* the size of the object and of the array closed last at each depth: the next one at that depth
   * is made that big (a listing's items have the same fields), so tables rarely grow */
  int ohint[PC_JSON_MAX_DEPTH + 1], ahint[PC_JSON_MAX_DEPTH + 1];
} jdec;

enum { J_ERROR, J_VALUE, J_NULL }; /* what a value's decoding pushed: nothing (an error), a value, nothing (null) */

/* 1 for the bytes a string holds as they are: not '"', '\\' or a control character */
static const unsigned char plain[256] = {
#define P16 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
  1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, P16, P16,                                      /* 0x20 '"' */
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,                                                /* 0x50 '\\' */
  P16, P16, P16, P16, P16, P16, P16, P16, P16, P16,                                              /* 0x60 */
#undef P16
};

static int fail(jdec *d, const char *p, const char *why) {
  if (!d->why) {
    d->p = p;
    d->why = why;
  }
  return J_ERROR;
}

static const char *skip_space(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  return p;
}

static int hex4(const char *p, const char *end, unsigned *out) {
  unsigned v = 0;
  if (end - p < 4) return 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    unsigned h = c >= '0' && c <= '9' ? (unsigned)(c - '0') : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
               : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16;
    if (h > 15) return 0;
    v = v * 16 + h;
  }
  *out = v;
  return 1;
}

/* The \u escape at p (after the backslash and 'u'; a surrogate pair is two of them) into b as
 * UTF-8; the position after it, or NULL. */
static const char *unicode_escape(const char *p, const char *end, luaL_Buffer *b) {
  unsigned u, lo;
  if (!hex4(p, end, &u)) return NULL;
  p += 4;
  if (u >= 0xDC00 && u <= 0xDFFF) return NULL; /* a low surrogate first */
  if (u >= 0xD800 && u <= 0xDBFF) {
    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, end, &lo) || lo < 0xDC00 || lo > 0xDFFF)
      return NULL;
    u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
    p += 6;
  }
  char o[4];
  int n;
  if (u < 0x80) o[0] = (char)u, n = 1;
  else if (u < 0x800) o[0] = (char)(0xC0 | u >> 6), o[1] = (char)(0x80 | (u & 0x3F)), n = 2;
  else if (u < 0x10000)
    o[0] = (char)(0xE0 | u >> 12), o[1] = (char)(0x80 | (u >> 6 & 0x3F)), o[2] = (char)(0x80 | (u & 0x3F)), n = 3;
  else
    o[0] = (char)(0xF0 | u >> 18), o[1] = (char)(0x80 | (u >> 12 & 0x3F)), o[2] = (char)(0x80 | (u >> 6 & 0x3F)),
    o[3] = (char)(0x80 | (u & 0x3F)), n = 4;
  luaL_addlstring(b, o, (size_t)n);
  return p;
}

/* The first byte from p on that a string does not hold as it is (or end): eight bytes at a time
 * while none of them is '"', '\\' or below 0x20, then byte by byte. (Borrows propagate only
 * upwards, so the lowest byte flagged in a word is one that stops the run.) */
static const char *plain_run(const char *p, const char *end) {
  const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
  while (end - p >= 8) {
    uint64_t w, q, b;
    memcpy(&w, p, 8);
    q = w ^ (ones * '"');
    b = w ^ (ones * '\\');
    uint64_t hit = (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w)) & highs;
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (hit) return p + __builtin_ctzll(hit) / 8; /* the first flagged byte is a real one */
#else
    if (hit) break;
#endif
    p += 8;
  }
  while (p < end && plain[(unsigned char)*p]) p++;
  return p;
}

/* A string with escapes: the plain bytes from d->p to p are copied first. */
static int escaped_string(jdec *d, const char *p) {
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  luaL_Buffer b;
  luaL_buffinit(d->L, &b);
  luaL_addlstring(&b, d->p, (size_t)(p - d->p));
  for (;;) {
    const char *run = p;
    p = plain_run(p, d->end);
    luaL_addlstring(&b, run, (size_t)(p - run));
    if (p >= d->end) return fail(d, p, "a string is not closed");
    if (*p == '"') break;
    if (*p != '\\') return fail(d, p, "a control character in a string");
    if (++p >= d->end) return fail(d, p, "a string is not closed");
    const char *e = strchr(from, *p);
    if (*p == 'u') {
      const char *next = unicode_escape(p + 1, d->end, &b);
      if (!next) return fail(d, p - 1, "an invalid \\u escape");
      p = next;
    } else if (*p != '\0' && e) {
      luaL_addchar(&b, to[e - from]);
      p++;
    } else
      return fail(d, p - 1, "an invalid escape");
  }
  luaL_pushresult(&b);
  d->p = p + 1;
  return J_VALUE;
}

/* The string at d->p (its opening quote). */
static int string(jdec *d) {
  const char *p = plain_run(++d->p, d->end), *end = d->end;
  if (p < end && *p == '"') {
    lua_pushlstring(d->L, d->p, (size_t)(p - d->p));
    d->p = p + 1;
    return J_VALUE;
  }
  return escaped_string(d, p);
}

static int is_digit(const char *p, const char *end) { return p < end && *p >= '0' && *p <= '9'; }

/* A number's text that is not a 64-bit integer (a fraction, an exponent, or too many digits):
 * strtod's double, an integer when integral. strtod reads the C locale's decimal point, so the
 * text's '.' is replaced by it in a copy (on the C stack, or in a userdata when long). */
static int other_number(jdec *d, const char *s, size_t n) {
  const char *point = localeconv()->decimal_point;
  if (!point || !*point) point = ".";
  size_t pn = strlen(point);
  char buf[96], *text = buf;
  if (n + pn >= sizeof buf) text = lua_newuserdatauv(d->L, n + pn + 1, 0);
  const char *dot = memchr(s, '.', n);
  size_t at = dot ? (size_t)(dot - s) : n, len = dot ? n - 1 + pn : n;
  memcpy(text, s, at);
  if (dot) {
    memcpy(text + at, point, pn);
    memcpy(text + at + pn, dot + 1, n - at - 1);
  }
  text[len] = '\0';
  char *stop;
  double f = strtod(text, &stop);
  int whole = stop == text + len;
  if (text != buf) lua_pop(d->L, 1);
  if (!whole) return fail(d, s, "a number this locale cannot read");
  lua_Integer i;
  if (floor(f) == f && lua_numbertointeger(f, &i)) lua_pushinteger(d->L, i);
  else lua_pushnumber(d->L, (lua_Number)f);
  return J_VALUE;
}

/* The number at d->p (RFC 8259's grammar). */
static int number(jdec *d) {
  const char *s = d->p, *p = s, *end = d->end;
  int neg = *p == '-';
  p += neg;
  if (!is_digit(p, end)) return fail(d, p, "an invalid number");
  lua_Unsigned v = 0;
  int digits = 0;
  if (*p == '0') p++;
  else
    for (; is_digit(p, end); p++, digits++) v = v * 10 + (lua_Unsigned)(*p - '0');
  int integer = 1;
  if (p < end && *p == '.') {
    if (!is_digit(++p, end)) return fail(d, p, "an invalid number");
    while (is_digit(p, end)) p++;
    integer = 0;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p += p + 1 < end && (p[1] == '+' || p[1] == '-');
    if (!is_digit(++p, end)) return fail(d, p, "an invalid number");
    while (is_digit(p, end)) p++;
    integer = 0;
  }
  d->p = p;
  /* 19 digits fit in 64 unsigned bits; then the sign decides the range */
  if (integer && digits <= 19 && v <= (lua_Unsigned)LUA_MAXINTEGER + (lua_Unsigned)neg) {
    lua_pushinteger(d->L, neg ? (lua_Integer)(0u - v) : (lua_Integer)v);
    return J_VALUE;
  }
  return other_number(d, s, (size_t)(p - s));
}

/* The literal word at d->p: true, false or null. */
static int literal(jdec *d) {
  const char *p = d->p;
  size_t left = (size_t)(d->end - p);
  if (left >= 4 && memcmp(p, "true", 4) == 0) lua_pushboolean(d->L, 1), d->p += 4;
  else if (left >= 5 && memcmp(p, "false", 5) == 0) lua_pushboolean(d->L, 0), d->p += 5;
  else if (left >= 4 && memcmp(p, "null", 4) == 0) {
    d->p += 4;
    return J_NULL;
  } else
    return fail(d, p, "expected a value");
  return J_VALUE;
}

static int value(jdec *d);

/* Opens a container at d->p: depth checked, stack room made, the opening byte and white space
 * passed. 0 when nested too deeply. */
static int open_container(jdec *d) {
  if (d->depth >= PC_JSON_MAX_DEPTH) return fail(d, d->p, "nested more than 256 deep");
  d->depth++;
  luaL_checkstack(d->L, 6, NULL);
  d->p = skip_space(d->p + 1, d->end);
  return 1;
}

/* After a member or item: the position after ',' (1) or the closing byte (0), or an error (-1). */
static int next_member(jdec *d, char close) {
  const char *p = skip_space(d->p, d->end);
  if (p < d->end && *p == ',') {
    d->p = skip_space(p + 1, d->end);
    return 1;
  }
  if (p < d->end && *p == close) {
    d->p = p + 1;
    return 0;
  }
  fail(d, p, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
  return -1;
}

/* The object at d->p: a null member removes the field (a repeated key included). */
static int object(jdec *d) {
  if (!open_container(d)) return J_ERROR;
  lua_State *L = d->L;
  lua_createtable(L, 0, d->ohint[d->depth] + 1); /* room for a field the shaping adds */
  int t = lua_gettop(L), n = 0, more = 1;
  if (d->p < d->end && *d->p == '}') d->p++, more = 0;
  while (more > 0) {
    if (d->p >= d->end || *d->p != '"') return fail(d, d->p, "expected a string for a key");
    if (!string(d)) return J_ERROR;
    d->p = skip_space(d->p, d->end);
    if (d->p >= d->end || *d->p != ':') return fail(d, d->p, "expected ':'");
    d->p = skip_space(d->p + 1, d->end);
    int r = value(d);
    if (r == J_ERROR) return J_ERROR;
    if (r == J_NULL) lua_pushnil(L);
    else n++;
    lua_rawset(L, t);
    more = next_member(d, '}');
  }
  d->ohint[d->depth--] = n;
  return more < 0 ? J_ERROR : J_VALUE;
}

/* The array at d->p: nulls are left out, the other items close up. */
static int array(jdec *d) {
  if (!open_container(d)) return J_ERROR;
  lua_State *L = d->L;
  lua_createtable(L, d->ahint[d->depth], 0);
  int t = lua_gettop(L), more = 1;
  lua_Integer n = 0;
  if (d->p < d->end && *d->p == ']') d->p++, more = 0;
  while (more > 0) {
    int r = value(d);
    if (r == J_ERROR) return J_ERROR;
    if (r == J_VALUE) lua_rawseti(L, t, ++n);
    more = next_member(d, ']');
  }
  d->ahint[d->depth--] = n < INT_MAX ? (int)n : INT_MAX;
  return more < 0 ? J_ERROR : J_VALUE;
}

/* The value at d->p (white space already passed). */
static int value(jdec *d) {
  if (d->p >= d->end) return fail(d, d->p, "expected a value");
  switch (*d->p) {
    case '{': return object(d);
    case '[': return array(d);
    case '"': return string(d);
    case '-': case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9':
      return number(d);
    default: return literal(d);
  }
}

/* Decodes the whole text s[0..len): pushes the value (nil for null) and returns 1, or pushes the
 * message and returns 0. */
static int decode_text(lua_State *L, const char *s, size_t len) {
  int top = lua_gettop(L);
  jdec d; /* on the C stack: nothing to free if an allocation raises */
  memset(&d, 0, sizeof d);
  d.L = L, d.s = s, d.end = s + len;
  d.p = skip_space(s, d.end);
  int r = value(&d);
  if (r != J_ERROR) {
    d.p = skip_space(d.p, d.end);
    if (d.p < d.end) r = fail(&d, d.p, "more text after the value");
  }
  if (r == J_ERROR) {
    lua_settop(L, top);
    lua_pushfstring(L, "%s at byte %I", d.why, (LUAI_UACINT)(d.p - s + 1));
    return 0;
  }
  if (r == J_NULL) lua_pushnil(L);
  return 1;
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

/* ---- shapes: the customer listings, shaped after decoding ---- */

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
static const char *const names[] = {"id", "name", "jobStatus", "jobStatusCode", "managementMode", "tenants"};
enum { N_ID, N_NAME, N_JOBSTATUS, N_JOBSTATUSCODE, N_MANAGEMENTMODE, N_TENANTS, N_LABELS };

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

/* Sets t[key] = the value at the top (popped); key is a stack index. */
static void set_field(lua_State *L, int t, int key) {
  lua_pushvalue(L, key);
  lua_pushvalue(L, -2);
  lua_rawset(L, t);
  lua_pop(L, 1);
}

/* Pushes t[names[which]] and returns its type. */
static int get_field(lua_State *L, int t, const shape_ctx *cx, int which) {
  lua_pushvalue(L, cx->names + which);
  return lua_rawget(L, t);
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
 * another case, when t[names[which]] is absent. */
static void lower_key(lua_State *L, int t, const shape_ctx *cx, int which) {
  int ty = get_field(L, t, cx, which);
  lua_pop(L, 1);
  if (ty != LUA_TNIL) return;
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

/* Whether the value at idx is a JSON object (a table that is not a non-empty array). */
static int is_object(lua_State *L, int idx) { return lua_istable(L, idx) && lua_rawlen(L, idx) == 0; }

/* Whether the table at the top, of no items, has fields: an object, not an empty array. */
static int has_fields(lua_State *L) {
  lua_pushnil(L);
  if (!lua_next(L, -2)) return 0;
  lua_pop(L, 2);
  return 1;
}

/* The value of a customer's tenants (at the top): an array of objects, whose Id or Name in
 * another case become id and name. */
static const char *shape_tenants(lua_State *L, const shape_ctx *cx) {
  if (!lua_istable(L, -1)) return "has tenants that are not an array";
  int ts = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, ts);
  if (n == 0) return has_fields(L) ? "has tenants that are not an array" : NULL;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, ts, i);
    if (!is_object(L, -1)) return "has a tenant that is not an object";
    lower_key(L, ts + 1, cx, N_ID);
    lower_key(L, ts + 1, cx, N_NAME);
    lua_pop(L, 1);
  }
  return NULL;
}

/* The job status of the customer at c as its label and jobStatusCode (an unknown status has no
 * code); a managementMode given as a numeric string becomes an integer. */
static void shape_status(lua_State *L, int c, shape_ctx *cx) {
  int code = -1;
  if (get_field(L, c, cx, N_JOBSTATUS) != LUA_TNIL && (code = answer_job_code(L, cx)) >= 0 &&
      !lua_rawequal(L, -1, cx->names + N_LABELS + code)) {
    lua_pushvalue(L, cx->names + N_LABELS + code);
    set_field(L, c, cx->names + N_JOBSTATUS);
  }
  lua_pop(L, 1);
  if (code >= 0) {
    lua_pushinteger(L, code);
    set_field(L, c, cx->names + N_JOBSTATUSCODE);
  } else if (get_field(L, c, cx, N_JOBSTATUSCODE) != LUA_TNIL) {
    lua_pushnil(L);
    set_field(L, c, cx->names + N_JOBSTATUSCODE);
  }
  lua_settop(L, c);
  lua_Integer i;
  if (get_field(L, c, cx, N_MANAGEMENTMODE) == LUA_TSTRING && to_integer(L, -1, &i)) {
    lua_pushinteger(L, i);
    set_field(L, c, cx->names + N_MANAGEMENTMODE);
  }
  lua_settop(L, c);
}

/* One customer (at the top): job status, managementMode and tenants as README.md says, its key
 * into keys[at]; NULL, or what is wrong with it. */
static const char *shape_customer(lua_State *L, shape_ctx *cx, int keys, lua_Integer at) {
  if (!is_object(L, -1)) return "is not an object";
  int c = lua_gettop(L);
  shape_status(L, c, cx);
  const char *why = NULL;
  if (get_field(L, c, cx, N_TENANTS) != LUA_TNIL) why = shape_tenants(L, cx);
  else if (cx->tenants_default) {
    lua_createtable(L, 0, 0);
    set_field(L, c, cx->names + N_TENANTS);
  }
  lua_settop(L, c);
  if (why) return why;
  get_field(L, c, cx, N_ID);
  id_key(L);
  lua_rawseti(L, keys, at);
  return NULL;
}

/* The list of customers (answer[field], at the top, nil when absent): pushes the items (a new
 * empty table for nil) and their keys, or returns what is wrong (*at: the customer, or 0). */
static const char *shape_items(lua_State *L, shape_ctx *cx, lua_Integer *at) {
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 0);
  }
  if (!lua_istable(L, -1)) return "is not an array";
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  if (n == 0 && has_fields(L)) return "is not an array";
  int list = lua_gettop(L);
  lua_createtable(L, (int)(n < INT_MAX ? n : INT_MAX), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    const char *why = shape_customer(L, cx, list + 1, i);
    lua_pop(L, 1);
    if (why) {
      *at = i;
      return why;
    }
  }
  return NULL;
}

/* The name util.got gives the value at the top (not an object). */
static const char *got(lua_State *L) {
  if (lua_istable(L, -1)) return "an array";
  if (lua_type(L, -1) == LUA_TNUMBER) return lua_isinteger(L, -1) ? "integer" : "float";
  return luaL_typename(L, -1);
}

/* The answer at the top, for shape `shape`: its customers shaped in place. Leaves the answer
 * and above it the report {items = the customers, keys = their keys} or {problem = message}. */
static void shape_answer(lua_State *L, int shape) {
  luaL_checkstack(L, 24, NULL);
  int data = lua_gettop(L);
  for (int i = 0; i < N_LABELS; i++) lua_pushstring(L, names[i]);
  for (int i = 0; i < JOB_CODES; i++) lua_pushstring(L, job_labels[i]);
  shape_ctx cx = {data + 1, shapes[shape].tenants_default, {{0, "", 0}}, 0};
  lua_createtable(L, 0, 2);
  int rep = lua_gettop(L);
  const char *field = shapes[shape].field, *why = NULL;
  lua_Integer at = 0;
  if (!is_object(L, data)) {
    lua_pushvalue(L, data);
    lua_pushfstring(L, "expected a JSON object (got %s)", got(L));
  } else {
    lua_getfield(L, data, field);
    if ((why = shape_items(L, &cx, &at)) == NULL) {
      lua_setfield(L, rep, "keys");
      lua_setfield(L, rep, "items");
    } else if (at > 0)
      lua_pushfstring(L, "customer %I %s", (LUAI_UACINT)at, why);
    else
      lua_pushfstring(L, "\"%s\" %s", field, why);
  }
  if (lua_gettop(L) > rep) lua_setfield(L, rep, "problem");
  lua_copy(L, rep, data + 1);
  lua_settop(L, data + 1);
}

/* ---- an answer ---- */

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

pc_json_rc pc_json_decode(lua_State *L, const char *s, size_t len, int mode) {
  /* values <= 1 + len: only a body that long can be over the bound */
  if (len >= PC_JSON_MAX_VALUES && count_values(s, len, PC_JSON_MAX_VALUES) > PC_JSON_MAX_VALUES) {
    lua_pushfstring(L, "response has too many JSON values (more than %d)", PC_JSON_MAX_VALUES);
    return PC_JSON_TOO_MANY;
  }
  if (!decode_text(L, s, len)) return PC_JSON_INVALID;
  if (mode >= PC_DECODE_SHAPE) shape_answer(L, mode - PC_DECODE_SHAPE);
  return PC_JSON_OK;
}
