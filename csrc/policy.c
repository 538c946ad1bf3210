/* Policy as data: which failures retry and after how long, and pacing per origin. No request
 * runs here: the outcome and the scheduler ask. */
#include <math.h>
#include <string.h>
#include "engine.h"

/* What a failed transfer means, and whether request r may be tried again. Whether the request
 * was sent decides it, not whether a connection was made: a reused keep-alive connection reports
 * no connect time, yet the server got the request. */
pc_class pc_classify_curl(CURLcode rc, pc_xfer *x, const pc_req *r) {
  pc_class k = {PC_E_NETWORK, 0};
  long sent = 0;
  curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &sent);
  int idempotent = r->retry == RETRY_IDEMPOTENT, maybe = r->retry != RETRY_NEVER;
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    /* after the request went out, a retry would cost another whole timeout, and a server
     * may have acted on it */
    k.kind = PC_E_TIMEOUT;
    k.retryable = maybe && sent == 0;
    break;
  case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY: case CURLE_COULDNT_CONNECT:
    k.retryable = maybe; /* never reached the server */
    break;
  case CURLE_SEND_ERROR: case CURLE_RECV_ERROR: case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
    k.retryable = idempotent; /* a dropped exchange: the server may have read the request */
    break;
  case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION: case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER: case CURLE_SSL_CACERT_BADFILE: case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH: case CURLE_SSL_CRL_BADFILE: case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_ENGINE_NOTFOUND: case CURLE_SSL_ENGINE_SETFAILED: case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_USE_SSL_FAILED: case CURLE_SSL_SHUTDOWN_FAILED:
    k.kind = PC_E_TLS;
    break;
  case CURLE_FILESIZE_EXCEEDED: k.kind = PC_E_LIMIT; break;
  case CURLE_WRITE_ERROR: if (x->over_limit || x->headers_over) k.kind = PC_E_LIMIT; break;
  /* libcurl's own size limits (a header line over 100 KiB, a URL or header it cannot hold) */
  case CURLE_OUT_OF_MEMORY: if (!x->oom) k.kind = PC_E_LIMIT; break;
  case CURLE_BAD_CONTENT_ENCODING: k.kind = PC_E_DECODE; break;
  case CURLE_UNSUPPORTED_PROTOCOL: case CURLE_WEIRD_SERVER_REPLY: k.kind = PC_E_PROTOCOL; break;
  default: break;
  }
  return k;
}

int pc_retryable_status(const pc_req *r, long s) {
  if (r->retry == RETRY_NEVER) return 0;
  if (r->retry == RETRY_UNSENT) return s == 429 || s == 503; /* the server says it did not act */
  return s == 408 || s == 429 || s == 500 || s == 502 || s == 503 || s == 504;
}

double pc_backoff(pc_client *c, lua_State *L, int ci, int retry) {
  double step = fmin(c->backoff_max, c->backoff_base * pow(2, retry - 1));
  return step / 2 + step / 2 * pc_random(L, ci); /* jitter keeps at least half of the step */
}

/* ---- pacing per origin ----
 * Three limits, each learned from the answers (the limits of a service are not published):
 * - slow start (ramp_allows), for a new origin and at the end of a pause;
 * - a window of transfers at once (AIMD: a throttling answer halves it and pauses the origin
 *   until its Retry-After; each clean answer widens it by 1/window, up to max_parallel);
 * - a rate (a token bucket), learned from throttling answers: between two throttling answers the
 *   server's bucket went from empty to empty, so the clean answers in between, over that time,
 *   are the rate it grants (the first time, see `throttled`); we keep PC_RATE_MARGIN of it. It
 *   grows by PC_RATE_GROWTH a second while no answer is throttled, so a rate learned too low
 *   comes back up. */

/* Slow start from the next request that may start (its clock starts then: see ramp_allows). */
static void ramp(pc_origin *o) {
  o->ramping = 1, o->first = -1, o->ramp_starts = 0;
}

/* The slot of url's origin (scheme://host:port, up to the path), made if needed. */
int pc_origin_slot(pc_client *c, const char *url, double now) {
  const char *p = strstr(url, "://");
  size_t n = p ? (size_t)(p + 3 - url) + strcspn(p + 3, "/?#") : strlen(url);
  if (n >= sizeof c->origins[0].name) n = sizeof c->origins[0].name - 1;
  int oldest = 0;
  for (int i = 0; i < PC_ORIGINS; i++) {
    pc_origin *o = &c->origins[i];
    if (o->name[0] && strlen(o->name) == n && memcmp(o->name, url, n) == 0) {
      o->used = now;
      return i;
    }
    if (o->running == 0 && o->used < c->origins[oldest].used) oldest = i;
  }
  pc_origin *o = &c->origins[oldest];
  memset(o, 0, sizeof *o);
  memcpy(o->name, url, n);
  o->window = c->nxfers, o->paused_until = -HUGE_VAL, o->used = now;
  o->born = now, o->throttled_at = -HUGE_VAL;
  ramp(o);
  return oldest;
}

/* Slow start, on the real monotonic clock (it paces the network, so an injected clock does not
 * stretch it): t seconds after it began, at most 2^(t / PC_RAMP) requests have started, so the
 * allowed rate doubles every PC_RAMP s and a burst into an unknown rate limit has few requests
 * in flight when the server's bucket runs dry, whatever the latency. After PC_RAMP_END doublings
 * it no longer limits anything. Returns 1 when one more may start now, else 0 with *soon, the
 * real seconds until it may. */
static int ramp_allows(pc_origin *o, double *soon) {
  if (!o->ramping) return 1;
  double real = pc_mono_now();
  if (o->first < 0) o->first = real;
  double t = (real - o->first) / PC_RAMP;
  if (t >= PC_RAMP_END) return o->ramping = 0, 1;
  if (o->ramp_starts < pow(2, t)) return 1;
  *soon = o->first + PC_RAMP * log2(o->ramp_starts + 1) - real;
  return 0;
}

static void refill(pc_origin *o, double now) {
  if (now <= o->refilled) return;
  o->tokens = fmin(o->burst, o->tokens + (now - o->refilled) * o->rate);
  o->refilled = now;
}

pc_admit pc_origin_admit(pc_client *c, int i, double now, double *wake, int token_job) {
  pc_origin *o = &c->origins[i];
  if (now < o->paused_until) return *wake = o->paused_until, PC_ADMIT_AT;
  if (!token_job && o->running >= (int)o->window) return PC_ADMIT_FULL; /* a transfer's end */
  if (!token_job && !ramp_allows(o, wake)) return PC_ADMIT_SOON;
  if (o->rate > 0) {
    refill(o, now);
    /* at least 1 ms ahead, so that the time it names is later than now on any clock */
    if (o->tokens < 1) return *wake = now + fmax(1e-3, (1 - o->tokens) / o->rate), PC_ADMIT_AT;
  }
  return PC_ADMIT_YES;
}

void pc_origin_start(pc_client *c, int i, double now, int token_job) {
  pc_origin *o = &c->origins[i];
  if (o->rate > 0) refill(o, now), o->tokens -= 1;
  if (!token_job) o->ramp_starts++; /* a token request does not spend slow start */
  o->running++;
}

static void emit_pace(lua_State *L, int ci, pc_origin *o, const char *reason) {
  if (!pc_wants_events(L, ci)) return;
  lua_createtable(L, 0, 5);
  pc_set_str(L, "type", "pace");
  pc_set_str(L, "origin", o->name);
  pc_set_int(L, "window", (lua_Integer)o->window);
  if (o->rate > 0) pc_set_num(L, "rate", o->rate);
  pc_set_str(L, "reason", reason);
  pc_emit(L, ci);
}

/* A throttling answer at `now` that asks for a pause until `until`. The first one of a pause
 * narrows the window and, for a 429 (a 503 may mean anything), learns the rate; the others
 * (transfers already sent) only extend it. */
static const char *throttled(pc_origin *o, int rate_limited, double now, double until) {
  const char *reason = NULL;
  if (now >= o->paused_until) {
    o->window = fmax(1, fmin(o->window, o->running + 1) / 2);
    reason = "throttled";
    /* the first time, the server's bucket was full at our first request: count it as what it
     * gathers during the pause (so a fixed window of N requests a minute reads as N / minute) */
    double span = o->throttled_at > -HUGE_VAL ? now - o->throttled_at : until - o->born;
    if (rate_limited && o->clean >= 2 && span > 0) {
      double r = o->clean / span * PC_RATE_MARGIN;
      o->rate = o->rate > 0 ? fmin(o->rate, r) : r;
      reason = "throttled: rate learned";
    }
    o->throttled_at = now, o->clean = 0;
  }
  o->paused_until = fmax(o->paused_until, until);
  ramp(o); /* slow start again when the pause ends */
  if (o->rate > 0) { /* what the server's bucket gathers during the pause, spent at its end */
    o->burst = fmax(1, o->rate * (o->paused_until - now));
    o->tokens = o->burst, o->refilled = o->paused_until;
  }
  return reason;
}

/* An answer from origin slot i at `now`: `throttle` is its status when throttled (429, 503: pause
 * every request of the origin until `until`), 0 when clean (2xx). */
void pc_pace(lua_State *L, int ci, pc_client *c, int i, int throttle, double now, double until) {
  pc_origin *o = &c->origins[i];
  int before = (int)o->window;
  const char *reason = NULL;
  if (throttle)
    reason = throttled(o, throttle == 429, now, until);
  else {
    o->clean++;
    o->window = fmin(c->nxfers, o->window + 1 / o->window);
    if (o->rate > 0 && now > o->grown) o->rate *= 1 + PC_RATE_GROWTH * fmin(1, now - o->grown);
    o->grown = now;
    if ((int)o->window != before) reason = "clean answers";
  }
  if (reason) emit_pace(L, ci, o, reason);
}
