/* Allocation-failure sweep of partnercustomers.core (`make alloc-sweep`).
 *
 * A Lua host whose lua_Alloc refuses the Nth growing allocation of a run. The run is
 * spec/c/sweep_run.lua: stages load, new and requests, each under lua_pcall, against a sandbox
 * started once for the whole sweep (bin/with-sandbox). Three passes over N:
 *   from N             the Nth and every later allocation are refused until the stage ends (a
 *                      single refusal would only make Lua collect and try again);
 *   from N, gc stress  the same with the collector running all the time (pause 0);
 *   Nth only           the Nth alone: Lua's emergency collection runs right there, the run goes on.
 * For every N:
 *   - the stage that meets the refusal ends in success, an error object, or a Lua error about
 *     memory: never a crash (the module is built with ASan and UBSan, which abort);
 *   - with the limit off, the check stage must succeed: the client (or a new one) answers a request;
 *   - after lua_close the state holds no byte, and LeakSanitizer finds nothing unreachable.
 * N runs over every allocation of the load and new stages, then of the requests stage: every N
 * when the time budget allows, else with a stride (said in the output).
 *
 * usage: alloc_sweep SCRIPT CPATH BUDGET_SECONDS PASSES [ONLY] [-- SO_TO_PIN...]
 *   PASSES: from, stress, once, or a comma list of them; ONLY: N or A-B, to rerun a finding.
 *   The shared objects the run loads are dlopen'ed once here and stay loaded, as they would in
 *   one long-lived interpreter: libcurl and OpenSSL initialise once per process, not once per N. */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

enum { ST_LOAD, ST_NEW, ST_REQUESTS, ST_COUNT };
#define SWEEP_MARGIN 8
static const char *const stage_names[] = {"load", "new", "requests"};

/* How the stage that met the failing allocation ended (or the run, when N was never reached). */
enum { O_COMPLETED, O_ERROBJ, O_ERRMEM, O_ERRRUN_MEM, O_UNEXPECTED, O_COUNT };
static const char *const outcome_names[] = {"completed anyway", "error object returned", "LUA_ERRMEM raised",
                                             "runtime error about memory", "unexpected"};

typedef struct {
  long count;   /* growing allocations since armed */
  long fail_at; /* 0: none fails */
  int once;     /* refuse the fail_at-th only, else it and every later one */
  int armed;
  long failed; /* refused allocations */
  size_t live; /* bytes the state holds */
} sweep_alloc;

typedef struct {
  long counts[ST_COUNT]; /* allocation count at the end of each stage */
  int stage;             /* the stage that met the failure, or -1 */
  int outcome;
  char detail[256];
  int check_ok;
  char check_msg[256];
  size_t live_after_close;
} run_result;

typedef struct {
  const char *script, *cpath;
  double budget, t0;
  long only_from, only_to; /* SWEEP_ONLY: N or A-B (0: sweep everything) */
  int gc_stress;           /* the collector runs all the time (pause 0), as `make asan` runs it */
  int once;                /* only the Nth allocation is refused (Lua's emergency collection runs) */
  const char *pass;        /* the pass's name, in every line */
} sweep_cfg;

/* What the death callback prints: the N being run when ASan or UBSan aborts. */
static long current_n = -1;
static const char *current_stage = "setup";

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Only growing requests count and may fail: Lua never needs a free or a shrink to fail. */
static void *sweep_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize) {
  sweep_alloc *a = ud;
  if (ptr == NULL) osize = 0; /* osize then tells the object's type */
  if (nsize == 0) {
    free(ptr);
    a->live -= osize;
    return NULL;
  }
  if (nsize > osize && a->armed) {
    a->count++;
    if (a->fail_at > 0 && (a->once ? a->count == a->fail_at : a->count >= a->fail_at)) {
      a->failed++;
      return NULL;
    }
  }
  void *p = realloc(ptr, nsize);
  if (p) a->live = a->live - osize + nsize;
  return p;
}

static void on_death(void) {
  if (current_n < 0) /* LeakSanitizer's check at exit */
    fprintf(stderr, "\nalloc-sweep: FINDING: LeakSanitizer found leaks at exit (above)\n");
  else
    fprintf(stderr, "\nalloc-sweep: CRASH at N=%ld (stage %s); reproduce: make alloc-sweep SWEEP_ONLY=%ld\n",
            current_n, current_stage, current_n);
}

/* Warnings (an error in a __gc metamethod) are printed: they mean a finalizer raised. */
static void warn_fn(void *ud, const char *msg, int tocont) {
  (void)ud;
  (void)tocont;
  if (msg[0] != '@') fprintf(stderr, "alloc-sweep: Lua warning at N=%ld: %s\n", current_n, msg);
}

/* A new state with the standard libraries and the stages table at index 1 (limit off). */
static lua_State *open_state(const sweep_cfg *cfg, sweep_alloc *a) {
  lua_State *L = lua_newstate(sweep_alloc_fn, a);
  if (L == NULL) {
    fprintf(stderr, "alloc-sweep: lua_newstate failed\n");
    exit(2);
  }
  lua_setwarnf(L, warn_fn, NULL);
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, cfg->cpath);
  lua_setfield(L, -2, "cpath");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  if (luaL_dofile(L, cfg->script) != LUA_OK || !lua_istable(L, -1)) {
    fprintf(stderr, "alloc-sweep: %s: %s\n", cfg->script, lua_tostring(L, -1));
    exit(2);
  }
  if (cfg->gc_stress) lua_gc(L, LUA_GCINC, 0, 1000, 0);
  return L;
}

static int about_memory(const char *msg) {
  return msg && (strstr(msg, "not enough memory") || strstr(msg, "emory"));
}

/* Runs stages[name] under lua_pcall: 1 when it returned true, else 0 with the outcome in r. */
static int call_stage(lua_State *L, const char *name, run_result *r) {
  lua_getfield(L, 1, name);
  int st = lua_pcall(L, 0, 1, 0);
  const char *msg = lua_tostring(L, -1);
  int ok = st == LUA_OK && lua_toboolean(L, -1) && lua_type(L, -1) == LUA_TBOOLEAN;
  if (st == LUA_OK)
    r->outcome = ok ? O_COMPLETED : O_ERROBJ;
  else if (st == LUA_ERRMEM)
    r->outcome = O_ERRMEM;
  else
    r->outcome = st == LUA_ERRRUN && about_memory(msg) ? O_ERRRUN_MEM : O_UNEXPECTED;
  snprintf(r->detail, sizeof r->detail, "%s", ok ? "" : (msg ? msg : luaL_typename(L, -1)));
  lua_pop(L, 1);
  return ok;
}

/* One run failing from allocation fail_at on (0: none fails). */
static void run_once(const sweep_cfg *cfg, long fail_at, run_result *r) {
  sweep_alloc a = {0};
  memset(r, 0, sizeof *r);
  r->stage = -1;
  current_n = fail_at;
  current_stage = "setup";
  lua_State *L = open_state(cfg, &a);
  a.fail_at = fail_at;
  a.once = cfg->once;
  a.armed = 1;
  for (int s = 0; s < ST_COUNT; s++) {
    current_stage = stage_names[s];
    long before = a.failed;
    int ok = call_stage(L, stage_names[s], r);
    r->counts[s] = a.count;
    int met = a.failed > before; /* this stage met the refused allocation(s) */
    if (met) r->stage = s;
    if (!ok && !met) { /* a wrong result with no allocation refused in this stage */
      r->stage = s;
      r->outcome = O_UNEXPECTED;
    }
    if (!ok || (met && !a.once)) break; /* once: a stage that coped lets the run go on */
  }
  a.armed = 0;
  current_stage = "check";
  run_result c;
  c.detail[0] = '\0';
  r->check_ok = call_stage(L, "check", &c);
  snprintf(r->check_msg, sizeof r->check_msg, "%s", c.detail);
  current_stage = "lua_close";
  lua_close(L);
  r->live_after_close = a.live;
  current_n = -1;
}

typedef struct {
  long swept[ST_COUNT + 1]; /* per stage; [ST_COUNT]: N beyond the run (it completed) */
  long outcomes[O_COUNT];
  long findings, checks_failed, lsan_checks, lsan_leaks;
  int lsan_every;
  double t_runs;
} sweep_stats;

static long total_findings;

static void finding(const sweep_cfg *cfg, sweep_stats *st, long n, const char *what, const char *detail) {
  st->findings++;
  if (total_findings++ < 20)
    fprintf(stderr, "alloc-sweep [%s]: FINDING at N=%ld: %s: %s (reproduce: make alloc-sweep SWEEP_ONLY=%ld%s)\n",
            cfg->pass, n, what, detail, n, cfg->once ? " SWEEP_PASSES=once" : cfg->gc_stress ? " SWEEP_PASSES=stress" : " SWEEP_PASSES=from");
}

/* One LeakSanitizer check every lsan_every runs: what became unreachable since the previous one. */
static void leak_check(const sweep_cfg *cfg, long n, sweep_stats *st, int last) {
  if (st->lsan_every <= 0 || (n % st->lsan_every != 0 && !last) || (last && st->lsan_every == 1)) return;
  st->lsan_checks++;
  if (__lsan_do_recoverable_leak_check()) {
    st->lsan_leaks++;
    char b[96];
    snprintf(b, sizeof b, "leaks (above) from one of N=%ld..%ld", last ? n - n % st->lsan_every + 1 : n - st->lsan_every + 1, n);
    finding(cfg, st, n, "LeakSanitizer", b);
  }
}

/* Runs N = n and books what it showed. */
static void sweep_one(const sweep_cfg *cfg, long n, sweep_stats *st) {
  run_result r;
  double t = now_s();
  run_once(cfg, n, &r);
  st->t_runs += now_s() - t;
  st->swept[r.stage >= 0 ? r.stage : ST_COUNT]++;
  st->outcomes[r.outcome]++;
  if (cfg->only_from)
    printf("alloc-sweep [%s]: N=%ld: stage %s, %s%s%s; check %s\n", cfg->pass, n,
           r.stage >= 0 ? stage_names[r.stage] : "(none: the run completed)", outcome_names[r.outcome],
           r.detail[0] ? ": " : "", r.detail, r.check_ok ? "ok" : r.check_msg);
  if (r.outcome == O_UNEXPECTED) finding(cfg, st, n, r.stage >= 0 ? stage_names[r.stage] : "run", r.detail);
  if (!r.check_ok) {
    st->checks_failed++;
    finding(cfg, st, n, "the client is not usable after the failure", r.check_msg);
  }
  if (r.live_after_close != 0) {
    char b[64];
    snprintf(b, sizeof b, "%zu bytes", r.live_after_close);
    finding(cfg, st, n, "Lua memory left after lua_close", b);
  }
  leak_check(cfg, n, st, 0);
}

/* The counting run: nothing fails; every stage must succeed. */
static void count_run(const sweep_cfg *cfg, run_result *r) {
  double t = now_s();
  run_once(cfg, 0, r);
  if (r->stage >= 0 || !r->check_ok || r->live_after_close != 0) {
    fprintf(stderr, "alloc-sweep [%s]: the run fails with no allocation refused: stage %s: %s %s\n", cfg->pass,
            r->stage >= 0 ? stage_names[r->stage] : "check", r->detail, r->check_msg);
    exit(2);
  }
  printf("alloc-sweep [%s]: counting run: %ld allocations (load %ld, new %ld, requests %ld) in %.3f s\n", cfg->pass,
         r->counts[ST_REQUESTS], r->counts[ST_LOAD], r->counts[ST_NEW] - r->counts[ST_LOAD],
         r->counts[ST_REQUESTS] - r->counts[ST_NEW], now_s() - t);
}

/* The stride for the requests stage: a sample of it, timed, against what is left of the budget. */
static long pick_stride(const sweep_cfg *cfg, long first, long span, long samples, sweep_stats *st) {
  double t = now_s();
  for (long i = 0; i < samples; i++) sweep_one(cfg, first + i * span / samples, st);
  double per_run = (now_s() - t) / (double)samples;
  double left = cfg->budget - (now_s() - cfg->t0) - 3; /* a margin for the last runs */
  long stride = 1;
  if (per_run * (double)span > left) stride = (long)(per_run * (double)span / (left > 1 ? left : 1)) + 1;
  printf("alloc-sweep [%s]: requests stage: %.1f ms a run, %ld runs, %.0f s of budget left: stride %ld%s\n",
         cfg->pass, per_run * 1000, span, left, stride, stride > 1 ? " (the full range does not fit: every Nth)" : "");
  return stride;
}

static void print_summary(const sweep_cfg *cfg, const sweep_stats *st, const run_result *count, long stride,
                          long stopped_at) {
  long total = count->counts[ST_REQUESTS], swept = 0;
  for (int s = 0; s < ST_COUNT; s++) swept += st->swept[s];
  long runs = swept + st->swept[ST_COUNT];
  long in_stage[ST_COUNT] = {count->counts[0], count->counts[1] - count->counts[0],
                             count->counts[2] - count->counts[1]};
  printf("alloc-sweep [%s]: N swept: %ld of %ld (load %ld of %ld, new %ld of %ld, requests %ld of %ld, stride %ld)\n",
         cfg->pass, swept, total, st->swept[ST_LOAD], in_stage[0], st->swept[ST_NEW], in_stage[1],
         st->swept[ST_REQUESTS], in_stage[2], stride);
  printf("alloc-sweep [%s]: and N = %ld..%ld past the count: %ld runs completed before their N\n", cfg->pass,
         total + 1, total + SWEEP_MARGIN, st->swept[ST_COUNT]);
  if (stopped_at > 0) printf("alloc-sweep [%s]: time limit reached: stopped before N=%ld\n", cfg->pass, stopped_at);
  for (int o = 0; o < O_COUNT; o++)
    if (st->outcomes[o]) printf("alloc-sweep [%s]:   %-28s %ld\n", cfg->pass, outcome_names[o], st->outcomes[o]);
  printf("alloc-sweep [%s]: checks after the failure: %ld passed, %ld failed; LeakSanitizer checks: %ld (%ld with "
         "leaks); Lua bytes left after lua_close: %s\n",
         cfg->pass, runs - st->checks_failed, st->checks_failed, st->lsan_checks, st->lsan_leaks,
         st->findings ? "see findings" : "0 in every run");
  printf("alloc-sweep [%s]: %.1f s in runs (%.1f ms a run); findings: %ld\n", cfg->pass, st->t_runs,
         runs ? st->t_runs * 1000 / (double)runs : 0.0, st->findings);
}

/* dlopen's each shared object named after "--" and keeps it loaded for the whole process. */
static void pin_objects(int argc, char **argv) {
  int i = 1;
  while (i < argc && strcmp(argv[i], "--") != 0) i++;
  for (i++; i < argc; i++) {
    if (dlopen(argv[i], RTLD_NOW | RTLD_LOCAL) == NULL) {
      fprintf(stderr, "alloc-sweep: dlopen %s: %s\n", argv[i], dlerror());
      exit(2);
    }
  }
}

/* Every N of the load and new stages, then the requests stage (with a stride if the budget says so). */
static void sweep_pass(const sweep_cfg *cfg, const run_result *count, sweep_stats *st) {
  /* a run may allocate a little more than the counting run did (a longer token, a table grown at
   * another moment): a margin past the count, whose runs mostly complete before their N */
  long early = count->counts[ST_NEW], total = count->counts[ST_REQUESTS] + SWEEP_MARGIN, stride = 1, stopped = 0;
  for (long n = 1; n <= early && !stopped; n++) {
    if (now_s() - cfg->t0 > cfg->budget) stopped = n;
    else sweep_one(cfg, n, st);
  }
  long span = total - early, samples = span < 16 ? span : 16;
  if (!stopped && span > 0) stride = pick_stride(cfg, early + 1, span, samples, st);
  for (long n = early + 1; n <= total && !stopped; n += stride) {
    int sampled = 0; /* pick_stride ran these already */
    for (long i = 0; i < samples; i++) sampled |= n == early + 1 + i * span / samples;
    if (sampled) continue;
    if (now_s() - cfg->t0 > cfg->budget) stopped = n;
    else sweep_one(cfg, n, st);
  }
  leak_check(cfg, total, st, 1); /* whatever the last runs left */
  print_summary(cfg, st, count, stride, stopped);
}

/* mode: "from" (the Nth and every later allocation refused), "stress" (the same, the collector
 * running all the time) or "once" (the Nth only: Lua collects in an emergency and goes on). */
static void run_pass(sweep_cfg *cfg, const char *mode) {
  cfg->gc_stress = strcmp(mode, "stress") == 0;
  cfg->once = strcmp(mode, "once") == 0;
  cfg->pass = cfg->once ? "Nth only" : cfg->gc_stress ? "from N, gc stress" : "from N";
  printf("alloc-sweep [%s]: %s\n", cfg->pass,
         cfg->once ? "only the Nth allocation is refused (Lua collects in an emergency and the run goes on)"
         : cfg->gc_stress ? "the Nth and every later allocation refused, the collector running all the time"
                          : "the Nth and every later allocation refused until the stage ends");
  sweep_stats st = {0};
  const char *every = getenv("SWEEP_LSAN_EVERY");
  st.lsan_every = every ? atoi(every) : 1;
  run_result count;
  count_run(cfg, &count);
  if (cfg->only_from == 0) {
    sweep_pass(cfg, &count, &st);
    return;
  }
  st.lsan_every = 1;
  for (long n = cfg->only_from; n <= cfg->only_to; n++) sweep_one(cfg, n, &st);
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s SCRIPT CPATH BUDGET_SECONDS PASSES [ONLY] [-- SO_TO_PIN...]\n"
                    "  PASSES: from, stress, once, or a comma list; ONLY: N or A-B\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  __sanitizer_set_death_callback(on_death);
  pin_objects(argc, argv);
  sweep_cfg cfg = {.script = argv[1], .cpath = argv[2], .budget = atof(argv[3]), .t0 = now_s(), .pass = ""};
  if (argc > 5 && strcmp(argv[5], "--") != 0) {
    char *dash;
    cfg.only_from = cfg.only_to = strtol(argv[5], &dash, 10);
    if (*dash == '-') cfg.only_to = atol(dash + 1);
  }
  static const char *const modes[] = {"from", "stress", "once", NULL};
  for (int i = 0; modes[i]; i++)
    if (strstr(argv[4], modes[i])) run_pass(&cfg, modes[i]);
  printf("alloc-sweep: findings: %ld\n", total_findings);
  return total_findings ? 1 : 0;
}
