/* Two Lua states on two threads, each loading partnercustomers.core and making requests against the
 * sandbox at the same time, under ThreadSanitizer (`make tsan`). The host and the module (built
 * into build-tsan/) are instrumented; liblua, libcurl and OpenSSL are not (TSan sees their locks
 * and allocations through its interceptors). Both threads wait on a barrier, then run
 * spec/c/threads_run.lua, whose first line loads the module: the two luaopen calls (and their
 * process-wide curl_global_init) race, then the requests do.
 *
 * usage: threads SCRIPT CPATH REQUESTS_PER_THREAD
 * Exits 1 when a thread's run fails; TSan's reports make it exit 66 (TSAN_OPTIONS exitcode). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#define NTHREADS 2

typedef struct {
  int id, requests;
  const char *script, *cpath;
  int ok;
  char result[256];
} worker;

static pthread_barrier_t start_line;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *work(void *ud) {
  worker *w = ud;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, w->cpath);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  int st = luaL_loadfile(L, w->script);
  lua_pushinteger(L, w->id);
  lua_pushinteger(L, w->requests);
  pthread_barrier_wait(&start_line); /* both states load the module at once */
  if (st == LUA_OK) st = lua_pcall(L, 2, 1, 0);
  else lua_pop(L, 2);
  w->ok = st == LUA_OK;
  snprintf(w->result, sizeof w->result, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "(no message)");
  lua_close(L);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SCRIPT CPATH REQUESTS_PER_THREAD\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  worker w[NTHREADS];
  pthread_t t[NTHREADS];
  pthread_barrier_init(&start_line, NULL, NTHREADS);
  double t0 = now_s();
  for (int i = 0; i < NTHREADS; i++) {
    w[i] = (worker){i + 1, atoi(argv[3]), argv[1], argv[2], 0, ""};
    if (pthread_create(&t[i], NULL, work, &w[i]) != 0) return 2;
  }
  int failed = 0;
  long responses = 0, errors = 0;
  for (int i = 0; i < NTHREADS; i++) {
    pthread_join(t[i], NULL);
    long r = 0, e = 0;
    if (w[i].ok && sscanf(w[i].result, "%ld %ld", &r, &e) == 2) {
      responses += r, errors += e;
      printf("tsan: thread %d: %ld responses, %ld error answers (as expected)\n", w[i].id, r, e);
    } else {
      failed++;
      printf("tsan: thread %d FAILED: %s\n", w[i].id, w[i].result);
    }
  }
  pthread_barrier_destroy(&start_line);
  printf("tsan: %d threads, %ld requests answered (%ld responses, %ld error answers) in %.1f s\n", NTHREADS,
         responses + errors, responses, errors, now_s() - t0);
  return failed ? 1 : 0;
}
