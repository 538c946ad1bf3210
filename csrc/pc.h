/* partnercustomers.core: declarations shared by the C sources.
 * Everything here has hidden visibility (the Makefile builds with -fvisibility=hidden);
 * only luaopen_partnercustomers_core is exported. */
#ifndef PC_H
#define PC_H

#include <stddef.h>
#include <curl/curl.h>
#include <openssl/opensslv.h>

/* The oldest libraries the core builds against (the README states them too): curl_multi_poll is
 * 7.66; the EVP_PKEY_get_* names and openssl/types.h are OpenSSL 3.0. */
#if LIBCURL_VERSION_NUM < 0x074200
#error "partnercustomers needs libcurl 7.66 or later"
#endif
#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "partnercustomers needs OpenSSL 3.0 or later"
#endif

#include <openssl/types.h>
#include "lua.h"
#include "lauxlib.h"

/* Everything declared below is internal to the shared object, whatever the build flags
 * (the LuaRocks builtin backend passes none): only luaopen_partnercustomers_core is exported. */
#pragma GCC visibility push(hidden)

/* The version, written here only: the Lua layer and the CLI take core._VERSION, and
 * spec/version_spec.lua checks the rockspec and CHANGELOG.md against it. */
#define PC_VERSION "0.1.0"
#define PC_CLIENT_MT "partnercustomers.client"
#define PC_ERROR_MT "partnercustomers.error"
#define PC_MAX_PARALLEL 64
#define PC_ERRBODY_MAX 2048
#define PC_HEADERS_MAX (256 * 1024) /* one response's header block */
#define PC_BUF_KEEP (1024 * 1024)   /* a transfer buffer grown past this is given back after use */
#define PC_WAIT_SLICE 0.1           /* the longest blocking wait without returning to Lua (Ctrl-C) */

/* Error kinds: one table keeps the names in one place (see doc/API.md). */
#define PC_ERROR_KINDS(X) \
  X(NETWORK, "network")   \
  X(TIMEOUT, "timeout")   \
  X(TLS, "tls")           \
  X(HTTP, "http")         \
  X(AUTH, "auth")         \
  X(THROTTLED, "throttled") \
  X(DECODE, "decode")     \
  X(PROTOCOL, "protocol") \
  X(LIMIT, "limit")

typedef enum {
#define PC_KIND_ENUM(id, name) PC_E_##id,
  PC_ERROR_KINDS(PC_KIND_ENUM)
#undef PC_KIND_ENUM
  PC_E_COUNT
} pc_kind;

/* A growable byte buffer owned by a transfer slot (freed with the client, never by a Lua unwind). */
typedef struct {
  char *p;
  size_t len, cap;
} pc_buf;

/* Certificate credentials (cert.c): the key and certificate, loaded and checked once. */
#define PC_ASSERTION_LIFETIME 300 /* seconds: "a few minutes ahead" */
typedef struct {
  EVP_PKEY *key;
  X509 *cert;
  int alg_ps256;     /* PS256, else RS256 */
  int with_x5t_s256; /* add the x5t#S256 header */
  char kid[41];      /* hex SHA-1 thumbprint */
  char x5t[29];      /* base64url SHA-1 thumbprint */
  char x5t_s256[44]; /* base64url SHA-256 thumbprint */
} pc_cert;

typedef struct {
  const char *key, *cert, *pfx, *password;
} pc_cert_files;

/* One easy handle of the client's pool and what a transfer on it collects. */
typedef struct {
  CURL *easy;
  struct curl_slist *hdrs; /* request headers of the current attempt */
  pc_buf body;             /* decoded response body */
  pc_buf rhdrs;            /* response header lines of the last response */
  size_t max_bytes;
  int over_limit;          /* the write callback refused more bytes */
  int oom;                 /* an allocation failed inside a callback */
  int headers_over;        /* the header block passed PC_HEADERS_MAX */
  int headers_done;        /* the blank line that ends the last header block arrived */
  int headers_cut;         /* the connection closed inside the header block */
  int added;               /* currently added to the multi handle */
  int req;                 /* index of the batch request using it, or -1 */
  char errbuf[CURL_ERROR_SIZE];
} pc_xfer;

/* What the client keeps of one origin it talks to (scheme://host:port): see policy.c. */
#define PC_ORIGINS 8
#define PC_RAMP 0.02         /* s: slow start doubles the requests that may start this often */
#define PC_RAMP_END 12       /* doublings, after which slow start ends */
#define PC_RATE_MARGIN 0.97  /* the share of a learned rate that is used */
#define PC_RATE_GROWTH 0.002 /* a learned rate grows by this share a second without throttling */
typedef struct {
  char name[160];
  double window;       /* transfers at once, 1..max_parallel */
  double paused_until; /* on pc_clock: no new request to this origin starts before */
  double used;         /* when it was last used, to reuse the oldest slot */
  int running;
  int ramping, ramp_starts; /* slow start, and the requests started since it began */
  double born, first;  /* first use; start of the current slow start (on pc_clock) */
  double rate;         /* requests a second the origin grants (0: none learned) */
  double burst, tokens, refilled; /* the rate's bucket: size, level, last refill */
  double throttled_at; /* the last first throttling answer of a pause */
  double grown;        /* when the rate last grew */
  double clean;        /* clean answers since throttled_at */
} pc_origin;

typedef struct {
  CURLM *multi;
  CURLSH *share;
  int closed;
  int busy;
  /* the one descriptor of the client (poll.c): libcurl's sockets behind an epoll fd, and the
   * time libcurl's timer is due (pc_mono_now; HUGE_VAL: none) */
  int epfd;
  double timer_due;
  int defer; /* a host's event loop drives the call: hooks are queued for the Lua layer */
  int held;  /* a queued on_refresh_token must run before a request starts */
  int nxfers;
  /* options */
  double timeout, connect_timeout, low_speed_time;
  double retry_after_cap, backoff_base, backoff_max;
  int max_retries;
  double deadline; /* of the running call, on pc_clock (HUGE_VAL: none) */
  lua_Integer token_gen; /* generations of the tokens the client got */
  pc_origin origins[PC_ORIGINS];
  size_t max_response_bytes;
  unsigned long long rng; /* jitter, unless a random function is injected */
  pc_cert cert;           /* certificate credentials, when given */
  pc_xfer xfers[PC_MAX_PARALLEL];
} pc_client;

/* Uservalue slots of the client userdata. */
enum { PC_UV_OPTS = 1, PC_UV_TOKENS = 2, PC_UV_CALLS = 3, PC_UV_COUNT = 3 };

/* errors.c */
void pc_error_open(lua_State *L);
const char *pc_kind_name(pc_kind k);
int pc_kind_valid(const char *name);
/* Pushes a new error table of the given kind with the message; fields are added by the caller. */
void pc_push_error(lua_State *L, pc_kind kind, const char *message);
void pc_set_str(lua_State *L, const char *field, const char *value);
void pc_set_int(lua_State *L, const char *field, lua_Integer value);
void pc_set_num(lua_State *L, const char *field, lua_Number value);
/* Pushes url without any user:password@ part. */
void pc_push_safe_url(lua_State *L, const char *url);
/* Redaction of every secret client ci holds (its options' secret fields and cached tokens), in
 * every form it was sent in: as it is, form-encoded, and the whole HTTP Basic credential. Matching
 * covers the whole Lua string, NUL bytes included; each match becomes "[redacted]".
 * pc_redact_top: the string at the top, replaced in place (anything else is left alone).
 * pc_redact_table: every string value of the table at index t, and of the tables in it (one
 *   level); for errors and events alike.
 * pc_set_body: sets field "body" of the table at the top to p[0..n) redacted, then cut at
 *   PC_ERRBODY_MAX bytes (so no prefix of a secret straddling the cut survives). */
void pc_redact_top(lua_State *L, int ci);
void pc_redact_table(lua_State *L, int ci, int t);
void pc_set_body(lua_State *L, int ci, const char *p, size_t n);
int pc_l_error(lua_State *L);
int pc_l_is_error(lua_State *L);

/* json.c */
/* The most values one JSON answer may hold: every object, array, string, number, boolean and
 * null, an object member counting once (counted before decoding). A value costs at most ~150
 * bytes once decoded (an object member with a key of its own holding an empty object; an empty
 * object in an array ~80), so decoding one answer takes at most ~150 MB beside a few copies of
 * its text, whatever max_response_bytes allows. */
#define PC_JSON_MAX_VALUES 1000000
typedef enum {
  PC_JSON_INVALID = 0, /* not JSON: a message is pushed */
  PC_JSON_OK = 1,      /* the value is pushed */
  PC_JSON_TOO_MANY = 2 /* more than PC_JSON_MAX_VALUES, refused before decoding: a message is pushed */
} pc_json_rc;
/* What a request's `decode` asks for: nothing, JSON, or JSON of a known shape (a listing of
 * customers; pc_json_shape gives the mode of its name, or -1). */
enum { PC_DECODE_NONE = 0, PC_DECODE_JSON = 1, PC_DECODE_SHAPE = 2 };
int pc_json_shape(const char *name);
/* Decodes s. The value has no JSON null left (an object loses the field, an array closes up
 * around it, a top-level null is nil) and its integral numbers are integers. With a shape's mode,
 * the customers are also normalised as README.md describes (job status label and jobStatusCode,
 * managementMode, tenants) right after, and a report is pushed above the value:
 * {items = the customers, keys = what tells each apart for the pager (core.item_key, false for
 * one without a usable id)} or {problem = what is wrong with the answer}. Running out of memory raises Lua's memory error (it
 * is never blamed on the response). */
pc_json_rc pc_json_decode(lua_State *L, const char *s, size_t len, int mode);
/* core.job_status_code(x), core.job_status_labels(), core.item_key(item) */
int pc_l_job_status_code(lua_State *L);
int pc_l_job_status_labels(lua_State *L);
int pc_l_item_key(lua_State *L);

/* util.c: helpers (no HTTP, no OAuth, no client; independent of the C locale) */
int pc_buf_append(pc_buf *b, const char *p, size_t n);
void pc_buf_free(pc_buf *b);
void pc_buf_reset(pc_buf *b, size_t keep);
/* Base64 of p[0..n) into out (room for 4 * ((n + 2) / 3) + 1 bytes), NUL-terminated; returns the
 * length. url: the base64url alphabet without padding (JWT, thumbprints), else RFC 4648 with '='. */
size_t pc_base64(const unsigned char *p, size_t n, char *out, int url);
/* application/x-www-form-urlencoded of s[0..n) (unreserved characters kept, the rest %XX). */
void pc_form_encode(luaL_Buffer *b, const char *s, size_t n);
/* Pushes the HTTP Basic credential of RFC 6749 2.3.1: base64(form(id) ":" form(secret)). */
void pc_push_basic_credential(lua_State *L, const char *id, size_t idn, const char *secret, size_t secn);
/* Writes a random version-4 GUID (36 characters and a NUL); returns 0 without a random source. */
int pc_uuid(char out[37]);
/* Replaces the file at path with data[0..n), atomically: a new file of mode 0600 made in the same
 * directory (mkstemp), written, synced and renamed over path; the new file is removed on failure.
 * Returns 0, or an errno value. */
int pc_write_private(const char *path, const char *data, size_t n);

/* response.c: reading what a server sent (hostile input; raises only memory errors) */
void pc_push_headers(lua_State *L, const char *p, size_t len);
/* Retry-After (delta-seconds or an HTTP date) in seconds from now; -1 when absent or unreadable. */
double pc_retry_after_parse(const char *v, double now);
/* Copies code, message and Entra's ids from an error body (at -1) into the error (at -2). */
void pc_error_fields_from_body(lua_State *L);

/* transport.c */
void pc_xfer_release(pc_client *c, pc_xfer *x);
int pc_host_is_loopback(const char *host);
/* NULL when url may be requested (https, or http to loopback), else the reason it may not. */
const char *pc_url_problem(const char *url, char *host, size_t hostlen);

/* scheduler.c: the transfer engine (engine.h has its internals) */
/* Runs reqs (a Lua array at index ri) on client ci, at most parallel at once (0: max_parallel);
 * pushes an array of results ({response} or {nil, err}). Raises only on misuse or on an error
 * from a user hook. */
void pc_run(lua_State *L, int ci, int ri, int parallel);
/* Leaves client c idle after a call, whatever state it ended in: no handle on the multi handle,
 * no transfer counted as running, not busy, no deadline, no deferred hooks. */
void pc_idle(lua_State *L, int ci, pc_client *c);

/* loop.c: a batch that lives across Lua calls, stepped by the Lua layer between the waits it
 * hands to the host's event loop. client:start(reqs [, opts]) pushes it (core.c checks opts). */
void pc_loop_open(lua_State *L);
void pc_loop_start(lua_State *L, int ci, int ri, int parallel);

/* auth.c: tokens. It builds token requests and reads their answers; the engine runs them. */
typedef enum { PC_TOKEN_NONE, PC_TOKEN_RENEW, PC_TOKEN_FRESH } pc_token_state;
/* FRESH: use it; RENEW: still usable, but a renewal should start; NONE: none usable. */
pc_token_state pc_token_state_of(lua_State *L, int ci, const char *scope);
/* Pushes the token to send for scope (or nil); returns its generation (0 for access_token). */
lua_Integer pc_token_push(lua_State *L, int ci, const char *scope);
/* Drops scope's token if it is still generation gen (a 401 for an older one changes nothing). */
void pc_token_drop(lua_State *L, int ci, const char *scope, lua_Integer gen);
int pc_token_has_provider(lua_State *L, int ci);
/* Calls the token provider and caches its token: returns 1, or pushes an error and returns 0. */
int pc_token_from_provider(lua_State *L, int ci, const char *scope);
/* The same with the provider's results at the top (ok: it returned; else the error and a nil). */
int pc_token_provided(lua_State *L, int ci, const char *scope, int ok);
/* Pushes the token request for the client's grant (a request table for the engine). */
void pc_token_push_request(lua_State *L, int ci, const char *scope);
/* Reads the token request's result pair ({response} or {nil, err} at index pair) and caches the
 * token: returns 1, or pushes the error (a refusal is an auth error) and returns 0. */
int pc_token_accept(lua_State *L, int ci, const char *scope, int pair);
/* True when a 401 can be answered by fetching a new token. */
int pc_token_renewable(lua_State *L, int ci);
/* True when the client has any credentials at all. */
int pc_has_credentials(lua_State *L, int ci);

/* cert.c */
/* Loads and checks; returns NULL, or a message (static, or written to err) with nothing held. */
const char *pc_cert_load(pc_cert *c, const pc_cert_files *f, double now, char *err, size_t errlen);
void pc_cert_free(pc_cert *c);
/* Pushes a signed client assertion and returns 1, or returns 0 (nothing pushed). */
int pc_cert_assertion(lua_State *L, pc_cert *c, const char *client_id, const char *aud, double now, const char *jti);

/* hooks.c: the client's injected hooks and their defaults */
double pc_real_now(void);
/* Seconds on CLOCK_MONOTONIC, never injected (slow start paces the network, not the caller). */
double pc_mono_now(void);
void pc_real_sleep(double seconds);
pc_client *pc_check_client(lua_State *L, int idx);
/* Scheduling time (monotonic unless a clock is injected) and wall time (Retry-After dates,
 * assertion times, certificate validity). */
double pc_clock(lua_State *L, int ci);
double pc_wall_clock(lua_State *L, int ci);
/* A call into Lua, where lua.c's interrupt hook (Ctrl-C) can fire. */
void pc_interruptible(lua_State *L);
void pc_sleep(lua_State *L, int ci, double seconds);
double pc_random(lua_State *L, int ci);
/* Whether the client has an on_event hook (an event is not built for nobody). */
int pc_wants_events(lua_State *L, int ci);
/* Calls on_event with the table at the top (pops it); does nothing without a hook. */
void pc_emit(lua_State *L, int ci);
/* Under a host's event loop (c->defer) the hooks that may yield are not called from C: pc_defer
 * pops the function and its n - 1 arguments and queues them as one call {fn, args...} in the
 * client's PC_UV_CALLS array, which the Lua layer takes after each step and makes. */
int pc_deferring(lua_State *L, int ci);
void pc_defer(lua_State *L, int ci, int n);

/* poll.c: the client's one descriptor (epoll on Linux), fed by libcurl's socket and timer
 * callbacks; transfers move with curl_multi_socket_action. Elsewhere: curl_multi_perform and
 * curl_multi_poll, and no descriptor (epfd -1). No Lua in here. */
int pc_poll_open(pc_client *c);       /* 0 when the descriptor cannot be made */
void pc_poll_close(pc_client *c);     /* after curl_multi_cleanup */
void pc_poll_drive(pc_client *c);     /* moves every transfer that can move, without waiting */
void pc_poll_wait(pc_client *c, double seconds); /* blocks until a socket is ready, or seconds */
double pc_poll_timer(pc_client *c);   /* seconds until libcurl's timer is due (HUGE_VAL: none) */

/* sys.c: isatty, mkstemp, the terminal's width, closed 0-2 reopened (added to the table at the top) */
void pc_sys_open(lua_State *L);

#pragma GCC visibility pop

#endif
