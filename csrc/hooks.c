/* The client's state as the layers above see it: the userdata check, and the injected hooks
 * (clock, sleep, random, on_event) with their defaults. Everything above calls down to here. */
#include <errno.h>
#include <time.h>
#include "pc.h"

pc_client *pc_check_client(lua_State *L, int idx) {
  pc_client *c = luaL_checkudata(L, idx, PC_CLIENT_MT);
  if (c->closed) luaL_error(L, "attempt to use a closed partnercustomers client");
  return c;
}

double pc_real_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void pc_real_sleep(double s) {
  if (!(s > 0)) return;
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}

/* Pushes the hook named k if the client has one, and returns 1. */
static int push_hook(lua_State *L, int ci, const char *k) {
  lua_getiuservalue(L, ci, PC_UV_OPTS);
  int t = lua_getfield(L, -1, k);
  lua_remove(L, -2);
  if (t == LUA_TFUNCTION) return 1;
  lua_pop(L, 1);
  return 0;
}

/* The injected hooks are the caller's code, called between libcurl calls (never inside a
 * callback); an error in them propagates out of the request, and the request is abandoned. */
/* Seconds on a clock that never steps (scheduling, backoff, token renewal, deadlines). */
double pc_mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double clock_hook(lua_State *L, int ci, double (*dflt)(void)) {
  if (!push_hook(L, ci, "clock")) return dflt();
  lua_call(L, 0, 1);
  int isnum;
  double t = lua_tonumberx(L, -1, &isnum);
  if (!isnum) luaL_error(L, "partnercustomers: the clock function must return a number");
  lua_pop(L, 1);
  return t;
}

/* An injected clock serves both: tests give one time line. */
double pc_clock(lua_State *L, int ci) { return clock_hook(L, ci, pc_mono_now); }
double pc_wall_clock(lua_State *L, int ci) { return clock_hook(L, ci, pc_real_now); }

/* Ctrl-C: lua.c's SIGINT handler sets a hook that fires on the next call; a call of this from
 * every wait lets it stop a running request within one wait slice. */
static int interrupt_point(lua_State *L) {
  (void)L;
  return 0;
}

void pc_interruptible(lua_State *L) {
  lua_pushcfunction(L, interrupt_point);
  lua_call(L, 0, 0);
}

void pc_sleep(lua_State *L, int ci, double seconds) {
  if (!push_hook(L, ci, "sleep")) {
    while (seconds > 0) { /* in slices, so that Ctrl-C is seen within one */
      double slice = seconds > PC_WAIT_SLICE ? PC_WAIT_SLICE : seconds;
      pc_real_sleep(slice);
      seconds -= slice;
      if (seconds > 0) pc_interruptible(L);
    }
    return;
  }
  lua_pushnumber(L, seconds);
  lua_call(L, 1, 0);
}

double pc_random(lua_State *L, int ci) {
  if (push_hook(L, ci, "random")) {
    lua_call(L, 0, 1);
    double r = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return r < 0 ? 0 : (r > 1 ? 1 : r);
  }
  pc_client *c = lua_touserdata(L, ci);
  /* xorshift64*: jitter needs no cryptographic quality */
  c->rng ^= c->rng >> 12, c->rng ^= c->rng << 25, c->rng ^= c->rng >> 27;
  return (double)((c->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

int pc_wants_events(lua_State *L, int ci) {
  if (!push_hook(L, ci, "on_event")) return 0;
  lua_pop(L, 1);
  return 1;
}

void pc_emit(lua_State *L, int ci) {
  if (!push_hook(L, ci, "on_event")) {
    lua_pop(L, 1);
    return;
  }
  lua_rotate(L, -2, 1);
  pc_redact_table(L, ci, -1); /* an event may quote a server (an error text): never a secret */
  if (pc_deferring(L, ci)) pc_defer(L, ci, 2);
  else lua_call(L, 1, 0);
}

int pc_deferring(lua_State *L, int ci) {
  pc_client *c = lua_touserdata(L, ci);
  return c->defer;
}

void pc_defer(lua_State *L, int ci, int n) {
  int first = lua_gettop(L) - n + 1;
  lua_createtable(L, n, 0);
  lua_insert(L, first);
  for (int i = n; i >= 1; i--) lua_rawseti(L, first, i);
  if (lua_getiuservalue(L, ci, PC_UV_CALLS) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, ci, PC_UV_CALLS);
  }
  lua_rotate(L, -2, 1);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
}

