/* A batch that lives across Lua calls, for a host's event loop: client:start(reqs [, opts]) gives
 * a userdata whose user values hold the batch's tables; each step pushes them and points the
 * batch's indices at them, so that the scheduler runs as it does inside pc_run. Between steps
 * the Lua layer waits (through the host's loop) on the wait object a step returns, and makes the
 * hook calls the step queued (on_event, the token provider, on_refresh_token): they run from Lua,
 * where they may yield. While the batch lives the client is busy; an error, abort() or the
 * collector leaves it idle (no transfer on its multi handle, every handle back in the pool).
 *
 *   batch:step() -> wait, calls, sleep   (wait nil: done; calls: {{fn, arg [, "token"]}...} or
 *                                          nil; sleep: the client's sleep hook, for a wait on
 *                                          its clock only)
 *   batch:provide(scope, ok, token, expires_in)   the token provider's answer (pcall's results)
 *   batch:results() -> the array client:batch gives      batch:abort()
 *   wait:pollfd() -> the client's descriptor; wait:events() -> "r"; wait:timeout() -> seconds */
#include <math.h>
#include <string.h>
#include "engine.h"

#define PC_BATCH_MT "partnercustomers.batch"
#define PC_WAIT_MT "partnercustomers.wait"
#define PC_WAIT_MAX 1.0 /* the longest wait a step asks for while transfers run */

enum { UV_CLIENT = 1, UV_PI, UV_RQ, UV_RES, UV_TERR, UV_JOBS, UV_COUNT = UV_JOBS };

typedef struct {
  pc_batch b;
  int finished; /* done or abandoned: the client is idle again */
} pc_stepped;

/* Pushes the batch's tables (user values) and points b's indices at them. */
static void push_tables(lua_State *L, int bi, pc_stepped *s) {
  luaL_checkstack(L, 32, NULL);
  int base = lua_gettop(L);
  for (int i = UV_CLIENT; i <= UV_JOBS; i++) lua_getiuservalue(L, bi, i);
  pc_batch *b = &s->b;
  b->L = L; /* the thread of this step: a coroutine may differ from the one before */
  b->ci = base + UV_CLIENT, b->pi = base + UV_PI, b->rqi = base + UV_RQ;
  b->res = base + UV_RES, b->terr = base + UV_TERR, b->jobs = base + UV_JOBS;
  b->rq = lua_touserdata(L, b->rqi);
}

/* Keeps what a step changed (rq grows with token jobs) and pops the tables. */
static void pop_tables(lua_State *L, int bi, pc_stepped *s) {
  lua_pushvalue(L, s->b.rqi);
  lua_setiuservalue(L, bi, UV_RQ);
  lua_settop(L, s->b.ci - 1);
}

/* The client idle again, once (the results stay in the batch). */
static void finish(lua_State *L, int bi, pc_stepped *s) {
  if (s->finished) return;
  s->finished = 1;
  lua_getiuservalue(L, bi, UV_CLIENT);
  pc_client *c = lua_touserdata(L, -1);
  if (c) pc_idle(L, lua_gettop(L), c);
  lua_pop(L, 1);
}

void pc_loop_start(lua_State *L, int ci, int ri, int parallel) {
  ci = lua_absindex(L, ci), ri = lua_absindex(L, ri);
  pc_stepped *s = lua_newuserdatauv(L, sizeof *s, UV_COUNT);
  memset(s, 0, sizeof *s);
  s->finished = 1; /* nothing to undo until it has started */
  luaL_setmetatable(L, PC_BATCH_MT);
  int bi = lua_gettop(L);
  lua_pushvalue(L, ci);
  lua_setiuservalue(L, bi, UV_CLIENT);
  pc_batch_start(&s->b, L, ci, ri, parallel); /* misuse raises here, before anything starts */
  for (int i = UV_JOBS; i >= UV_PI; i--) lua_setiuservalue(L, bi, i);
  s->finished = 0;
  s->b.c->busy = 1;
  s->b.c->defer = 1;
}

static void push_wait(lua_State *L, pc_client *c, pc_wait w) {
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, c->epfd);
  lua_setfield(L, -2, "fd");
  lua_pushnumber(L, isfinite(w.seconds) ? w.seconds : PC_WAIT_MAX);
  lua_setfield(L, -2, "seconds");
  luaL_setmetatable(L, PC_WAIT_MT);
}

/* Pushes the client's sleep hook for a wait on its clock only, else nil. */
static void push_sleep(lua_State *L, int ci, pc_wait w, int goes) {
  if (!goes || w.sockets || w.real || !(w.seconds > 0)) {
    lua_pushnil(L);
    return;
  }
  lua_getiuservalue(L, ci, PC_UV_OPTS);
  lua_getfield(L, -1, "sleep"); /* a function, or nil */
  lua_remove(L, -2);
}

/* One step (batch at 1): wait or nil, the queued calls or nil, the sleep hook or nil. */
static int step_protected(lua_State *L) {
  pc_stepped *s = lua_touserdata(L, 1);
  push_tables(L, 1, s);
  int goes = pc_batch_step(&s->b);
  pc_wait w = {0, 0, 0};
  if (goes) w = pc_batch_wants(&s->b, PC_WAIT_MAX);
  /* nothing runs and slow start holds the due requests (the blocking wait polls again at once):
   * the host waits for slow start, instead of waking without pause until it lets them go */
  if (goes && !w.sockets && !w.real && !(w.seconds > 0) && s->b.soon < HUGE_VAL && !s->b.c->held)
    w.real = 1, w.seconds = s->b.soon;
  pc_client *c = s->b.c;
  pop_tables(L, 1, s);
  lua_getiuservalue(L, 1, UV_CLIENT);
  int ci = lua_gettop(L);
  if (goes) push_wait(L, c, w);
  else lua_pushnil(L);
  if (lua_getiuservalue(L, ci, PC_UV_CALLS) == LUA_TTABLE) { /* taken: the Lua layer makes them */
    lua_pushnil(L);
    lua_setiuservalue(L, ci, PC_UV_CALLS);
  }
  push_sleep(L, ci, w, goes);
  if (!goes) finish(L, 1, s);
  return 3;
}

static pc_stepped *check_batch(lua_State *L) { return luaL_checkudata(L, 1, PC_BATCH_MT); }

/* Calls f with the nargs values at the top, under pcall (the batch stays at index 1): an error (a
 * hook's: clock, random, jti...) abandons the batch and propagates. */
static int protected(lua_State *L, pc_stepped *s, lua_CFunction f, int nargs, int nres) {
  lua_pushcfunction(L, f);
  lua_insert(L, -nargs - 1);
  if (lua_pcall(L, nargs, nres, 0) != LUA_OK) {
    finish(L, 1, s);
    return lua_error(L);
  }
  return nres;
}

static int l_step(lua_State *L) {
  pc_stepped *s = check_batch(L);
  if (s->finished) return 0;
  s->b.c->held = 0; /* the calls of the step before were made */
  lua_settop(L, 1);
  lua_pushvalue(L, 1); /* kept below the call, for finish on error */
  return protected(L, s, step_protected, 1, 3);
}

static int provide_protected(lua_State *L) {
  pc_stepped *s = lua_touserdata(L, 1);
  const char *scope = lua_tostring(L, 2);
  int ok = lua_toboolean(L, 3);
  push_tables(L, 1, s);
  lua_pushvalue(L, 4);
  lua_pushvalue(L, 5);
  pc_batch_provided(&s->b, scope, ok);
  pop_tables(L, 1, s);
  return 0;
}

static int l_provide(lua_State *L) {
  pc_stepped *s = check_batch(L);
  luaL_checkstring(L, 2);
  if (s->finished) return 0;
  lua_settop(L, 5);
  lua_pushvalue(L, 1);
  lua_insert(L, 2); /* the batch kept below the call */
  return protected(L, s, provide_protected, 5, 0);
}

static int l_results(lua_State *L) {
  check_batch(L);
  lua_getiuservalue(L, 1, UV_RES);
  return 1;
}

static int l_abort(lua_State *L) {
  pc_stepped *s = check_batch(L);
  lua_settop(L, 1);
  finish(L, 1, s);
  return 0;
}

static int w_pollfd(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "fd");
  return 1;
}

static int w_events(lua_State *L) {
  lua_pushliteral(L, "r");
  return 1;
}

static int w_timeout(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "seconds");
  return 1;
}

static const luaL_Reg batch_methods[] = {
  {"step", l_step}, {"provide", l_provide}, {"results", l_results}, {"abort", l_abort}, {NULL, NULL},
};
static const luaL_Reg wait_methods[] = {
  {"pollfd", w_pollfd}, {"events", w_events}, {"timeout", w_timeout}, {NULL, NULL},
};

void pc_loop_open(lua_State *L) {
  luaL_newmetatable(L, PC_BATCH_MT);
  lua_pushcfunction(L, l_abort);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_abort);
  lua_setfield(L, -2, "__close");
  luaL_newlib(L, batch_methods);
  lua_setfield(L, -2, "__index");
  luaL_newmetatable(L, PC_WAIT_MT);
  luaL_newlib(L, wait_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 2);
}
