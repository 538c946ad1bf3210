/* The scheduler: a batch of requests run on the client's multi handle, each with its own retry
 * state, token jobs beside them, and waits short enough for Ctrl-C. A single request is a batch
 * of one. Lua hooks (clock, sleep, on_event, body builders) run between libcurl calls, never
 * inside them. */
#include <math.h>
#include <string.h>
#include "engine.h"

/* ---- starting an attempt ---- */

/* Builds x's header list for request r (private table at pi). Returns NULL, or why not with
 * *kind set: a bearer token a header cannot carry is an auth error. */
static const char *build_headers(lua_State *L, int ci, pc_req *r, int pi, pc_xfer *x, pc_kind *kind) {
  int top = lua_gettop(L), ok = 1;
  *kind = PC_E_NETWORK;
  lua_getfield(L, pi, "headers");
  for (lua_Integer i = 1; ok && lua_rawgeti(L, top + 1, i) == LUA_TSTRING; i += 2) {
    size_t vn;
    lua_rawgeti(L, top + 1, i + 1);
    const char *v = lua_tolstring(L, -1, &vn);
    ok = pc_header_add(L, x, lua_tostring(L, -2), v, vn);
    lua_pop(L, 2);
  }
  lua_settop(L, top);
  if (!ok) return "out of memory building headers";
  if (r->scope) {
    r->token_gen = pc_token_push(L, ci, r->scope);
    size_t n;
    const char *tok = lua_tolstring(L, -1, &n);
    if (tok && !pc_header_value_ok(tok, n)) {
      lua_settop(L, top);
      *kind = PC_E_AUTH;
      return "the bearer token contains CR, LF or NUL, which a header cannot carry";
    }
    if (tok) {
      lua_pushfstring(L, "Bearer %s", tok);
      ok = pc_header_add(L, x, "Authorization", lua_tostring(L, -1), lua_rawlen(L, -1));
    }
    lua_settop(L, top);
  }
  /* no 100-continue round trip for small POST bodies */
  if (ok && r->method != M_GET) ok = pc_header_add(L, x, "Expect", "", 0);
  return ok ? NULL : "out of memory building headers";
}

/* For a body built per attempt: calls the builder (the caller's code, or the token request's)
 * and pins what it returns. Returns NULL, or why there is no body (an auth error). */
static const char *build_body(lua_State *L, pc_req *r, int pi) {
  if (!r->body_fn) return NULL;
  lua_getfield(L, pi, "body_fn");
  lua_call(L, 0, 2);
  if (lua_type(L, -2) != LUA_TSTRING) {
    lua_pop(L, 2);
    return "cannot build the request body (the client assertion could not be signed)";
  }
  lua_pop(L, 1);
  r->body = lua_tolstring(L, -1, &r->bodylen);
  lua_setfield(L, pi, "body"); /* pinned until the next attempt replaces it */
  return NULL;
}

/* Prepares x for request k (private table at index pi) and adds it to the multi handle.
 * Returns NULL, or a message with *kind on failure (nothing added). */
static const char *start_attempt(lua_State *L, int ci, pc_client *c, pc_req *r, int k, int pi, pc_xfer *x,
                                 pc_kind *kind) {
  if (!pc_xfer_prepare(c, x)) return "curl_easy_init failed";
  const char *why = build_headers(L, ci, r, pi, x, kind);
  if (why == NULL && (why = build_body(L, r, pi)) != NULL) *kind = PC_E_AUTH;
  if (why) return why;
  pc_transport_set(L, ci, c, r, x);
  if (curl_multi_add_handle(c->multi, x->easy) != CURLM_OK) return "curl_multi_add_handle failed";
  x->added = 1;
  x->req = k;
  r->state = R_RUNNING;
  r->attempts++;
  return NULL;
}

/* A handle for a new transfer: neither running nor holding an answer not yet read. The pool has
 * twice the window's handles (within PC_MAX_PARALLEL), so that freed slots are refilled before
 * the answers that freed them are decoded. */
static pc_xfer *free_xfer(pc_batch *b) {
  if (b->running >= b->limit) return NULL;
  int n = b->c->nxfers * 2 < PC_MAX_PARALLEL ? b->c->nxfers * 2 : PC_MAX_PARALLEL;
  for (int i = 0; i < n; i++)
    if (!b->c->xfers[i].added && b->c->xfers[i].req < 0) return &b->c->xfers[i];
  return NULL;
}

/* Adds a token job for scope: the grant's token request, run beside the other transfers. */
static void add_token_job(pc_batch *b, const char *scope) {
  lua_State *L = b->L;
  if (b->total == b->cap) { /* grow rq: nothing holds a pointer into it across this call */
    int cap = b->cap * 2;
    pc_req *rq = lua_newuserdatauv(L, sizeof(pc_req) * (size_t)cap, 0);
    memcpy(rq, b->rq, sizeof(pc_req) * (size_t)b->total);
    lua_replace(L, b->rqi);
    b->rq = rq, b->cap = cap;
  }
  int k = b->total;
  pc_token_push_request(L, b->ci, scope);
  pc_parse_request(L, b->ci, -1, &b->rq[k]);
  lua_pushstring(L, scope);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "job_scope"); /* pinned by the job's private table */
  b->rq[k].job_scope = lua_tostring(L, -1);
  lua_pop(L, 1);
  lua_rawseti(L, b->pi, k + 1);
  lua_pop(L, 1);
  b->rq[k].token_job = 1;
  b->rq[k].state = R_WAITING;
  b->rq[k].not_before = -HUGE_VAL;
  lua_pushinteger(L, k);
  lua_setfield(L, b->jobs, scope);
  b->total++;
}

/* Under a host's event loop, the token provider is called by the Lua layer (so that it may
 * yield): a call queued, and a job marked for scope (-1) until its answer comes back. */
static void ask_provider(pc_batch *b, const char *scope) {
  lua_State *L = b->L;
  lua_pushinteger(L, -1);
  lua_setfield(L, b->jobs, scope);
  lua_getiuservalue(L, b->ci, PC_UV_OPTS);
  lua_getfield(L, -1, "token");
  lua_remove(L, -2);
  lua_pushstring(L, scope);
  lua_pushliteral(L, "token");
  pc_defer(L, b->ci, 3);
}

void pc_batch_provided(pc_batch *b, const char *scope, int ok) {
  lua_State *L = b->L;
  lua_pushnil(L);
  lua_setfield(L, b->jobs, scope);
  if (!pc_token_provided(L, b->ci, scope, ok)) lua_setfield(L, b->terr, scope);
}

/* Whether request k may start now as far as its token goes: 1 yes; 0 not yet (a token job runs);
 * -1 it was finished with the error that refused its token. Starts renewals early: a token
 * past its renewal time is still used while the new one is fetched. */
static int token_ready(pc_batch *b, int k) {
  lua_State *L = b->L;
  const char *scope = b->rq[k].scope;
  if (scope == NULL) return 1;
  pc_token_state st = pc_token_state_of(L, b->ci, scope);
  if (st == PC_TOKEN_FRESH) return 1;
  int job = lua_getfield(L, b->jobs, scope) != LUA_TNIL;
  lua_pop(L, 1);
  if (st == PC_TOKEN_NONE && lua_getfield(L, b->terr, scope) != LUA_TNIL) {
    pc_finish(b, k, 0); /* one refused token request answers every request with that scope */
    return -1;
  }
  if (st == PC_TOKEN_NONE) lua_pop(L, 1);
  if (!job && pc_token_has_provider(L, b->ci) && pc_deferring(L, b->ci)) {
    ask_provider(b, scope); /* the Lua layer calls it, then pc_batch_provided */
    return st == PC_TOKEN_RENEW;
  }
  if (!job && pc_token_has_provider(L, b->ci)) {
    if (pc_token_from_provider(L, b->ci, scope)) return 1;
    lua_setfield(L, b->terr, scope);
    return st == PC_TOKEN_RENEW ? 1 : token_ready(b, k);
  }
  if (!job && pc_token_renewable(L, b->ci)) add_token_job(b, scope);
  return st == PC_TOKEN_RENEW;
}

/* Starts every waiting request that is due, as far as free handles allow. */
static void start_due(pc_batch *b) {
  lua_State *L = b->L;
  if (b->c->held) return; /* an on_refresh_token to make first */
  double now = pc_clock(L, b->ci);
  b->blocked = 0, b->soon = HUGE_VAL;
  unsigned held = 0; /* origins that refused a request in this pass: none after it may overtake it */
  for (int k = 0; k < b->total; k++) {
    if (b->rq[k].state != R_WAITING || b->rq[k].not_before > now) continue;
    if (now >= b->c->deadline) {
      pc_push_error(L, PC_E_TIMEOUT, "the call's deadline passed before this request could start");
      pc_decorate_error(b, k, 0);
      pc_finish(b, k, 0);
      continue;
    }
    int ready = token_ready(b, k);
    if (ready >= 0) b->rq[k].awaiting_token = ready == 0;
    if (ready <= 0) {
      b->blocked |= ready == 0;
      continue;
    }
    int oi = pc_origin_slot(b->c, b->rq[k].url, now);
    double wake = HUGE_VAL;
    pc_admit a = held & (1u << oi) && !b->rq[k].token_job ? PC_ADMIT_FULL
                                                          : pc_origin_admit(b->c, oi, now, &wake, b->rq[k].token_job);
    if (a != PC_ADMIT_YES) held |= 1u << oi;
    if (a == PC_ADMIT_AT) b->rq[k].not_before = wake; /* paused, or no rate left */
    if (a == PC_ADMIT_SOON) b->soon = fmin(b->soon, wake);
    if (a == PC_ADMIT_SOON || a == PC_ADMIT_FULL) b->blocked = 1;
    if (a != PC_ADMIT_YES) continue;
    pc_xfer *x = free_xfer(b);
    if (x == NULL) {
      b->blocked = 1;
      return;
    }
    pc_push_pi(b, k);
    pc_kind kind = PC_E_NETWORK;
    const char *fail = start_attempt(L, b->ci, b->c, &b->rq[k], k, lua_gettop(L), x, &kind);
    lua_pop(L, 1);
    if (fail) {
      pc_push_error(L, kind, fail);
      pc_decorate_error(b, k, 0);
      pc_finish(b, k, 0);
      continue;
    }
    b->running++;
    b->rq[k].origin = oi;
    pc_origin_start(b->c, oi, now, b->rq[k].token_job);
  }
}

/* The earliest time a waiting request is due after `after` (on pc_clock; HUGE_VAL: none). */
static double next_due(pc_batch *b, double after) {
  double t = HUGE_VAL;
  for (int k = 0; k < b->total; k++)
    if (b->rq[k].state == R_WAITING && !b->rq[k].awaiting_token && b->rq[k].not_before < t &&
        b->rq[k].not_before > after)
      t = b->rq[k].not_before;
  return t;
}

/* Takes the transfers that finished off the multi handle, appending them to done[n..]; returns
 * the new count. Their answers are not read yet (x->req stays set). */
static int collect(pc_batch *b, pc_xfer **done, CURLcode *rcs, int n) {
  CURLMsg *m;
  int left;
  while (n < PC_MAX_PARALLEL && (m = curl_multi_info_read(b->c->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *e = m->easy_handle;
    rcs[n] = m->data.result; /* read before the handle is removed */
    char *priv = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
    pc_xfer *x = (pc_xfer *)(void *)priv;
    curl_multi_remove_handle(b->c->multi, e);
    x->added = 0;
    b->running--;
    b->c->origins[b->rq[x->req].origin].running--;
    done[n++] = x;
  }
  return n;
}

/* Reads the answers of the finished transfers one at a time; before each, the freed slots are
 * refilled, and after each, libcurl moves the others on and what finished meanwhile joins the
 * queue: the next requests are on the wire while answers are decoded. */
static void drain_messages(pc_batch *b) {
  pc_xfer *done[PC_MAX_PARALLEL];
  CURLcode rcs[PC_MAX_PARALLEL];
  int n = collect(b, done, rcs, 0);
  while (n > 0) {
    start_due(b);
    pc_xfer *x = done[0];
    CURLcode rc = rcs[0];
    memmove(done, done + 1, sizeof done[0] * (size_t)(n - 1));
    memmove(rcs, rcs + 1, sizeof rcs[0] * (size_t)(n - 1));
    n--;
    int k = x->req;
    x->req = -1;
    pc_complete(b, k, x, rc);
    if (b->running > 0) {
      pc_poll_drive(b->c);
      n = collect(b, done, rcs, n);
    }
  }
}

/* ---- the batch as steps: start, step, wait, finish ----
 * pc_run drives them in a loop and blocks in batch_wait; what a wait is for (sockets, a time, a
 * slow start) is data (pc_batch_wants), so that loop.c can hand it to a host's event loop. */

/* What the batch waits for before its next step: activity on the client's descriptor (its
 * sockets and libcurl's timer), or only time (on the client's clock, or `real` seconds of slow
 * start); never more than `cap` seconds while transfers run (PC_WAIT_SLICE for the blocking
 * wait, so that Lua's interrupt hook (Ctrl-C) runs within a slice). */
pc_wait pc_batch_wants(pc_batch *b, double cap) {
  pc_wait w = {0, 0, 0};
  double now = pc_clock(b->L, b->ci);
  if (b->c->held) return w; /* a hook to make first: no wait */
  if (b->running > 0) {
    /* blocked: the due requests wait for a transfer's end (a socket) or for slow start */
    double later = (b->blocked ? next_due(b, now) : next_due(b, -HUGE_VAL)) - now;
    w.sockets = 1;
    w.seconds = fmax(0, fmin(fmin(b->blocked ? b->soon : HUGE_VAL, later), fmin(cap, pc_poll_timer(b->c))));
    return w;
  }
  double due = next_due(b, -HUGE_VAL) - now;
  if (b->soon < due)
    w.real = 1, w.seconds = b->soon; /* slow start: milliseconds of real time, whatever the clock */
  else
    w.seconds = fmax(0, due);
  return w;
}

static void batch_wait(pc_batch *b, pc_wait w) {
  if (w.sockets) {
    pc_poll_wait(b->c, w.seconds);
    pc_interruptible(b->L);
  } else if (w.real) {
    pc_real_sleep(w.seconds);
    pc_interruptible(b->L);
  } else if (w.seconds > 0)
    pc_sleep(b->L, b->ci, w.seconds); /* in slices, through the client's sleep hook */
}

/* Starts what is due, moves the transfers on, reads the answers that arrived and refills the
 * freed slots. Returns whether the batch goes on. */
int pc_batch_step(pc_batch *b) {
  start_due(b);
  if (b->done >= b->n) return 0;
  pc_poll_drive(b->c); /* also when none runs: an idle connection that closed is let go */
  drain_messages(b);
  start_due(b); /* refill freed slots before waiting: no slot idles for a round trip */
  return b->done < b->n;
}

/* Checks the requests (array at ri) and pushes the batch's private tables (see pc_batch). */
void pc_batch_start(pc_batch *b, lua_State *L, int ci, int ri, int parallel) {
  memset(b, 0, sizeof *b);
  b->L = L;
  b->ci = ci;
  b->c = pc_check_client(L, ci);
  b->n = (int)luaL_len(L, ri);
  b->limit = parallel > 0 && parallel < b->c->nxfers ? parallel : b->c->nxfers;
  luaL_checkstack(L, 24, NULL);
  lua_createtable(L, b->n, 0);
  b->pi = lua_gettop(L);
  b->cap = b->n + 4;
  b->total = b->n;
  b->rq = lua_newuserdatauv(L, sizeof(pc_req) * (size_t)b->cap, 0);
  b->rqi = lua_gettop(L);
  for (int k = 0; k < b->n; k++) {
    lua_rawgeti(L, ri, k + 1);
    pc_parse_request(L, ci, -1, &b->rq[k]);
    lua_rawseti(L, b->pi, k + 1);
    lua_pop(L, 1);
    b->rq[k].state = R_WAITING;
  }
  lua_createtable(L, b->n, 0);
  b->res = lua_gettop(L);
  lua_newtable(L);
  b->terr = lua_gettop(L);
  lua_newtable(L);
  b->jobs = lua_gettop(L);
}

/* Leaves the results array where the batch's tables began. */
static void batch_finish(pc_batch *b) {
  lua_pushvalue(b->L, b->res);
  lua_replace(b->L, b->pi);
  lua_settop(b->L, b->pi);
}

void pc_run(lua_State *L, int ci, int ri, int parallel) {
  pc_batch b;
  pc_batch_start(&b, L, lua_absindex(L, ci), lua_absindex(L, ri), parallel);
  while (pc_batch_step(&b)) batch_wait(&b, pc_batch_wants(&b, PC_WAIT_SLICE));
  batch_finish(&b);
}

void pc_idle(lua_State *L, int ci, pc_client *c) {
  c->busy = 0;
  c->defer = 0;
  c->held = 0;
  c->deadline = HUGE_VAL;
  lua_pushnil(L);
  lua_setiuservalue(L, ci, PC_UV_CALLS);
  for (int i = 0; i < PC_ORIGINS; i++) c->origins[i].running = 0; /* none runs between calls */
  for (int i = 0; i < PC_MAX_PARALLEL; i++) {
    pc_xfer *x = &c->xfers[i];
    if (x->added && c->multi) curl_multi_remove_handle(c->multi, x->easy);
    x->added = 0;
    x->req = -1;
    /* an idle client keeps no large answer: the buffers are invisible to Lua's collector */
    pc_buf_reset(&x->body, PC_BUF_KEEP);
    pc_buf_reset(&x->rhdrs, PC_BUF_KEEP);
  }
}
