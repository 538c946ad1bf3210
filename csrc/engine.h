/* The transfer engine's own declarations, shared by its layers (bottom to top):
 *   transport.c  easy handles on the client's multi handle: options, callbacks, header lines,
 *                the URL rule; knows nothing of OAuth, retries or batches
 *   request.c    a Lua request table checked and turned into a pc_req
 *   policy.c     which failures retry, backoff, pacing per origin (window, rate, pauses)
 *   outcome.c    what a finished attempt means: a response, an error, or another attempt
 *   scheduler.c  the batch: which request starts when, token jobs, the waits
 *   loop.c       the batch as a userdata stepped across Lua calls (a host's event loop waits)
 * auth.c (tokens) sits between policy.c and outcome.c: it builds token requests and reads their
 * answers; the scheduler runs them beside the caller's requests. */
#ifndef PC_ENGINE_H
#define PC_ENGINE_H

#include "pc.h"

#pragma GCC visibility push(hidden)

enum { M_GET, M_POST, M_PUT, M_DELETE };
extern const char *const pc_method_names[];

typedef enum { R_WAITING, R_RUNNING, R_DONE } pc_rstate;

/* How a request may be retried (per request, decided by whoever builds it):
 * IDEMPOTENT: after a connection failure, a timeout before the request was sent, 408/429/5xx;
 * UNSENT: only when the request cannot have reached the server (no connection made) or the server
 *   asked for it (429, 503) -- a refresh grant, which the server redeems when it reads it;
 * NEVER: one attempt. */
typedef enum { RETRY_IDEMPOTENT, RETRY_UNSENT, RETRY_NEVER } pc_retry;

/* Per-request state of a batch; lives in a userdata (no pointers to free). */
typedef struct {
  int method;
  int decode;
  int sensitive; /* a credential exchange: its bodies never go into errors or responses */
  int loopback;  /* http(s) to a loopback host: never through a proxy */
  int body_fn;   /* the body is built anew for each attempt by a function */
  pc_retry retry;
  const char *url, *body, *scope; /* strings pinned by the batch's private table */
  size_t bodylen;
  int attempts; /* every attempt made */
  int retries;  /* attempts that were retries counted against max_retries */
  int renewed;  /* a 401 has already led to a new token */
  int token_job; /* a token request the engine added for job_scope (not one of the caller's) */
  const char *job_scope;
  lua_Integer token_gen; /* the generation of the token the last attempt carried */
  int awaiting_token;    /* due, but waits for its scope's token job (not a time to wake for) */
  int origin;            /* its slot in the client's origins while it runs */
  double not_before;
  pc_rstate state;
} pc_req;

/* A running batch. The indices are Lua stack slots, valid while the batch's function runs. */
typedef struct {
  lua_State *L;
  int ci, pi, res, terr; /* client, private tables, results, token errors by scope */
  pc_client *c;
  pc_req *rq;
  int n, done, running; /* n: the caller's requests (token jobs come after them) */
  int total, cap, rqi;  /* requests and token jobs; room in rq; rq's stack index */
  int jobs;             /* { [scope] = index of its running token job } */
  int limit; /* transfers at once for this call (its parallel, at most max_parallel) */
  int blocked; /* a due request waits for a free handle, a token or slow start */
  double soon; /* real seconds until slow start lets a due request start (HUGE_VAL: none waits) */
} pc_batch;

/* What a batch waits for before its next step (scheduler.c): the client's descriptor (its
 * sockets and libcurl's timer) for at most `seconds`, or only time: `real` seconds of slow start,
 * or seconds on the client's clock (what its sleep hook waits for). */
typedef struct {
  int sockets, real;
  double seconds;
} pc_wait;

/* transport.c */
int pc_header_name_ok(const char *s, size_t n);
/* A header value may hold no CR, LF or NUL (the one check, for headers and bearer tokens). */
int pc_header_value_ok(const char *v, size_t n);
/* Appends the line "name: v" to x's request headers; 0 when v cannot be a header value or
 * memory runs out (nothing added). */
int pc_header_add(lua_State *L, pc_xfer *x, const char *name, const char *v, size_t vn);
/* Makes x ready for a new attempt (a handle, empty buffers and headers); 0 without a handle. */
int pc_xfer_prepare(pc_client *c, pc_xfer *x);
/* Sets every option of the attempt of r on x (its header list already built). */
void pc_transport_set(lua_State *L, int ci, pc_client *c, const pc_req *r, pc_xfer *x);

/* request.c */
/* Validates request table t and pushes its private table (the strings the engine points at,
 * the header list). Misuse raises, before anything starts. */
void pc_parse_request(lua_State *L, int ci, int t, pc_req *r);

/* policy.c */
typedef struct {
  pc_kind kind;
  int retryable;
} pc_class;
pc_class pc_classify_curl(CURLcode rc, pc_xfer *x, const pc_req *r);
int pc_retryable_status(const pc_req *r, long status);
/* The wait before retry number `retry` (1, 2, ...): exponential, capped, with jitter. */
double pc_backoff(pc_client *c, lua_State *L, int ci, int retry);
/* The slot of url's origin (scheme://host:port), made if needed. */
int pc_origin_slot(pc_client *c, const char *url, double now);
/* Whether a request to origin slot i may start at `now` (pc_clock) (a token job skips slow start
 * and the window: a token is one small request that every other one waits for): YES; AT: not before *wake
 * (pc_clock); SOON: slow start allows it in *wake real seconds; FULL: when a transfer of the
 * origin ends. */
typedef enum { PC_ADMIT_YES, PC_ADMIT_AT, PC_ADMIT_SOON, PC_ADMIT_FULL } pc_admit;
pc_admit pc_origin_admit(pc_client *c, int i, double now, double *wake, int token_job);
/* Counts a request to origin slot i that starts at `now` (after pc_origin_admit said yes). */
void pc_origin_start(pc_client *c, int i, double now, int token_job);
/* An answer from origin slot i at `now`: throttled (the status, 429 or 503: pause the origin
 * until `until`) or clean (0: a 2xx). */
void pc_pace(lua_State *L, int ci, pc_client *c, int i, int throttled, double now, double until);

/* outcome.c */
void pc_push_pi(pc_batch *b, int k);
/* Common fields of an error about request k (error at the top; headers at hi, or 0). */
void pc_decorate_error(pc_batch *b, int k, int hi);
/* Stores the value at the top (a response or an error) as request k's result. */
void pc_finish(pc_batch *b, int k, int ok);
/* Decides what request k's finished attempt on x means: done, or another attempt later. */
void pc_complete(pc_batch *b, int k, pc_xfer *x, CURLcode rc);

/* scheduler.c: the batch as steps (pc_run loops them; loop.c steps them across Lua calls).
 * start pushes the batch's tables (pi, rq, res, terr, jobs: five stack slots); step returns
 * whether the batch goes on; wants says what to wait for, within cap seconds while transfers
 * run; provided takes the token provider's results (see pc_token_provided) for scope. */
void pc_batch_start(pc_batch *b, lua_State *L, int ci, int ri, int parallel);
int pc_batch_step(pc_batch *b);
pc_wait pc_batch_wants(pc_batch *b, double cap);
void pc_batch_provided(pc_batch *b, const char *scope, int ok);

#pragma GCC visibility pop

#endif
