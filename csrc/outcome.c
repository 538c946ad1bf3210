/* The outcome of an attempt: a response, a typed error (with the ids that let a support desk
 * find the request, and no secret), or another attempt later. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "engine.h"

/* Adds to error e the ids of the response (headers at hi, or 0), else those the body gave, else
 * the ones we sent (private table at pi). */
static void add_ids(lua_State *L, int e, int hi, int pi) {
  static const char *const rid[] = {"ms-requestid", "request-id", "x-ms-request-id", "x-request-id", NULL};
  static const char *const cid[] = {"ms-correlationid", "x-ms-correlation-id", "client-request-id", NULL};
  static const char *const cv[] = {"ms-cv", NULL};
  const char *const *names[3] = {rid, cid, cv};
  const char *fields[3] = {"request_id", "correlation_id", "cv"};
  for (int f = 0; f < 3; f++) {
    int found = 0;
    for (int i = 0; hi && !found && names[f][i]; i++) {
      if (lua_getfield(L, hi, names[f][i]) == LUA_TSTRING) {
        lua_setfield(L, e, fields[f]);
        found = 1;
      } else
        lua_pop(L, 1);
    }
    if (found || f == 2) continue;
    int from_body = lua_getfield(L, e, fields[f]) != LUA_TNIL;
    lua_pop(L, 1);
    if (!from_body && lua_getfield(L, pi, fields[f]) == LUA_TSTRING) lua_setfield(L, e, fields[f]);
    else if (!from_body) lua_pop(L, 1);
  }
}

void pc_push_pi(pc_batch *b, int k) { lua_rawgeti(b->L, b->pi, k + 1); }

/* Common fields of an error about request k; error table at the top. */
void pc_decorate_error(pc_batch *b, int k, int hi) {
  lua_State *L = b->L;
  pc_req *r = &b->rq[k];
  pc_set_str(L, "method", pc_method_names[r->method]);
  pc_push_safe_url(L, r->url);
  lua_setfield(L, -2, "url");
  pc_set_int(L, "attempts", r->attempts);
  int e = lua_gettop(L);
  pc_push_pi(b, k);
  add_ids(L, e, hi, e + 1);
  lua_pop(L, 1);
  /* any field may quote a server's words: make sure none of our secrets is among them */
  pc_redact_table(L, b->ci, -1);
}

/* A token job's result pair (at the top, popped): the token cached, or its error kept for the
 * requests that wait for that scope. */
static void job_done(pc_batch *b, int k) {
  lua_State *L = b->L;
  const char *scope = b->rq[k].job_scope;
  lua_pushnil(L);
  lua_setfield(L, b->jobs, scope);
  if (!pc_token_accept(L, b->ci, scope, -1)) lua_setfield(L, b->terr, scope);
  lua_pop(L, 1);
}

/* Stores the value at the top (a response or an error) as request k's result. */
void pc_finish(pc_batch *b, int k, int ok) {
  lua_State *L = b->L;
  lua_createtable(L, 2, 0);
  lua_rotate(L, -2, 1);
  lua_rawseti(L, -2, ok ? 1 : 2);
  b->rq[k].state = R_DONE;
  if (b->rq[k].token_job) {
    job_done(b, k);
    return;
  }
  lua_rawseti(L, b->res, k + 1);
  b->done++;
}

static void emit_retry(pc_batch *b, int k, double wait, const char *reason, long status) {
  if (!pc_wants_events(b->L, b->ci)) return;
  lua_State *L = b->L;
  pc_req *r = &b->rq[k];
  lua_createtable(L, 0, 7);
  pc_set_str(L, "type", "retry");
  pc_set_str(L, "method", pc_method_names[r->method]);
  pc_push_safe_url(L, r->url);
  lua_setfield(L, -2, "url");
  pc_set_int(L, "attempt", r->attempts);
  pc_set_num(L, "wait", wait);
  pc_set_str(L, "reason", reason);
  if (status > 0) pc_set_int(L, "status", status);
  pc_emit(L, b->ci);
}

static void schedule(pc_batch *b, int k, double now, double wait) {
  b->rq[k].not_before = now + wait;
  b->rq[k].state = R_WAITING;
}

static void emit_request(pc_batch *b, int k, pc_xfer *x, CURLcode rc, long status) {
  if (!pc_wants_events(b->L, b->ci)) return;
  lua_State *L = b->L;
  pc_req *r = &b->rq[k];
  double elapsed = 0;
  curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &elapsed);
  lua_createtable(L, 0, 7);
  pc_set_str(L, "type", "request");
  pc_set_str(L, "method", pc_method_names[r->method]);
  pc_push_safe_url(L, r->url);
  lua_setfield(L, -2, "url");
  if (status > 0) pc_set_int(L, "status", status);
  pc_set_int(L, "attempt", r->attempts);
  pc_set_num(L, "elapsed", elapsed);
  if (rc != CURLE_OK) pc_set_str(L, "error", curl_easy_strerror(rc));
  pc_emit(L, b->ci);
}

/* A transfer that failed below HTTP: retried, or finished with a typed error. */
static void failed_transfer(pc_batch *b, int k, pc_xfer *x, CURLcode rc, double now) {
  lua_State *L = b->L;
  pc_client *c = b->c;
  pc_req *r = &b->rq[k];
  pc_class cl = pc_classify_curl(rc, x, r);
  if (x->oom) cl.kind = PC_E_NETWORK, cl.retryable = 0;
  double wait = cl.retryable && r->retries < c->max_retries ? pc_backoff(c, L, b->ci, r->retries + 1) : 0;
  if (cl.retryable && r->retries < c->max_retries && now + wait < c->deadline) {
    r->retries++;
    emit_retry(b, k, wait, curl_easy_strerror(rc), 0);
    schedule(b, k, now, wait);
    return;
  }
  if (x->headers_cut) cl.kind = PC_E_PROTOCOL;
  if (x->headers_over)
    lua_pushfstring(L, "response headers larger than %d KiB", PC_HEADERS_MAX / 1024);
  else if (x->headers_cut)
    lua_pushliteral(L, "the connection closed before the end of the response headers");
  else if (cl.kind == PC_E_LIMIT && (x->over_limit || rc == CURLE_FILESIZE_EXCEEDED))
    lua_pushfstring(L, "response larger than max_response_bytes (%I)", (LUAI_UACINT)c->max_response_bytes);
  else if (x->oom)
    lua_pushliteral(L, "out of memory");
  else
    lua_pushstring(L, x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
  pc_push_error(L, cl.kind, lua_tostring(L, -1));
  lua_remove(L, -2);
  pc_set_str(L, "curl_code", curl_easy_strerror(rc));
  pc_decorate_error(b, k, 0);
  pc_finish(b, k, 0);
}

/* A 2xx answer: the response, or a decode error. Headers table at hi (replaced by the result). */
static void succeeded(pc_batch *b, int k, pc_xfer *x, long status, int hi) {
  lua_State *L = b->L;
  pc_req *r = &b->rq[k];
  /* the ids the Lua layer copies into its own errors come from here: no secret among them */
  pc_redact_table(L, b->ci, hi);
  lua_createtable(L, 0, 6);
  pc_set_int(L, "status", status);
  lua_pushvalue(L, hi);
  lua_setfield(L, -2, "headers");
  pc_set_int(L, "attempts", r->attempts);
  lua_pushstring(L, r->url);
  lua_setfield(L, -2, "url");
  int ok = 1;
  if (r->decode && x->body.len > 0) {
    pc_json_rc jr = pc_json_decode(L, x->body.p, x->body.len, r->decode);
    if (jr != PC_JSON_OK) {
      lua_pushfstring(L, jr == PC_JSON_TOO_MANY ? "%s" : "response is not valid JSON (%s)", lua_tostring(L, -1));
      pc_push_error(L, jr == PC_JSON_TOO_MANY ? PC_E_LIMIT : PC_E_DECODE, lua_tostring(L, -1));
      pc_set_int(L, "status", status);
      pc_decorate_error(b, k, hi);
      ok = 0;
    } else {
      if (r->decode >= PC_DECODE_SHAPE) lua_setfield(L, -3, "shaped");
      lua_setfield(L, -2, "data");
    }
  }
  if (ok && !r->sensitive) {
    lua_pushlstring(L, x->body.p ? x->body.p : "", x->body.len);
    lua_setfield(L, -2, "body");
  }
  lua_replace(L, hi);
  lua_settop(L, hi);
  pc_finish(b, k, ok);
}

/* Pushes the message of an HTTP error; ra is the Retry-After asked for (or -1). */
static void push_http_message(lua_State *L, pc_client *c, long status, double ra) {
  if (ra > c->retry_after_cap)
    lua_pushfstring(L, "HTTP %d: the server asked to wait %f s, more than retry_after_cap (%f s)", (int)status,
                    (lua_Number)fmin(ra, 1e15), (lua_Number)c->retry_after_cap);
  else
    lua_pushfstring(L, "HTTP %d", (int)status);
}

/* A non-2xx answer that will not be retried: a typed error with what the body says. */
static void http_error(pc_batch *b, int k, pc_xfer *x, long status, double ra, int hi) {
  lua_State *L = b->L;
  pc_client *c = b->c;
  int over_cap = ra > c->retry_after_cap && pc_retryable_status(&b->rq[k], status);
  pc_kind kind = PC_E_HTTP;
  if (status == 401 || status == 403) kind = PC_E_AUTH;
  else if (status == 429) kind = PC_E_THROTTLED;
  push_http_message(L, c, status, over_cap ? ra : -1);
  pc_push_error(L, kind, lua_tostring(L, -1));
  lua_remove(L, -2);
  pc_set_int(L, "status", status);
  if (ra >= 0) pc_set_num(L, "retry_after", ra);
  if (x->body.len > 0 && pc_json_decode(L, x->body.p, x->body.len, PC_DECODE_JSON)) {
    if (lua_istable(L, -1)) pc_error_fields_from_body(L);
    lua_pop(L, 1);
  } else if (x->body.len > 0)
    lua_pop(L, 1); /* not JSON: the message stays "HTTP n" */
  if (over_cap) { /* our explanation beats the server's text */
    push_http_message(L, c, status, ra);
    lua_setfield(L, -2, "message");
  }
  if (!b->rq[k].sensitive && x->body.len > 0) pc_set_body(L, b->ci, x->body.p, x->body.len);
  pc_decorate_error(b, k, hi);
  lua_replace(L, hi);
  lua_settop(L, hi);
  pc_finish(b, k, 0);
}

/* Decides what request k's finished attempt on x means: done, or another attempt later. */
void pc_complete(pc_batch *b, int k, pc_xfer *x, CURLcode rc) {
  lua_State *L = b->L;
  pc_client *c = b->c;
  pc_req *r = &b->rq[k];
  long status = 0;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
  double now = pc_clock(L, b->ci);
  /* a connection closed inside the header block: libcurl may report the partial answer as done */
  if (rc == CURLE_OK && !x->headers_done) rc = CURLE_PARTIAL_FILE, x->headers_cut = 1;
  emit_request(b, k, x, rc, status);
  if (rc != CURLE_OK) {
    failed_transfer(b, k, x, rc, now);
    return;
  }
  pc_push_headers(L, x->rhdrs.p, x->rhdrs.len);
  int hi = lua_gettop(L);
  if (status >= 200 && status < 300) {
    pc_pace(L, b->ci, c, r->origin, 0, now, 0);
    succeeded(b, k, x, status, hi);
    return;
  }
  if (status == 401 && r->scope && !r->renewed && pc_token_renewable(L, b->ci)) {
    /* the token may have been revoked or expired early: a new one, once */
    r->renewed = 1;
    pc_token_drop(L, b->ci, r->scope, r->token_gen); /* only the token this request carried */
    emit_retry(b, k, 0, "HTTP 401: renewing the token", status);
    schedule(b, k, now, 0);
    lua_settop(L, hi - 1);
    return;
  }
  lua_getfield(L, hi, "retry-after");
  double ra = pc_retry_after_parse(lua_tostring(L, -1), pc_wall_clock(L, b->ci));
  lua_pop(L, 1);
  int again = pc_retryable_status(r, status) && !(ra > c->retry_after_cap) && r->retries < c->max_retries;
  double wait = again ? fmax(pc_backoff(c, L, b->ci, r->retries + 1), ra) : 0;
  if (status == 429 || status == 503) /* pause the origin, not only this request */
    pc_pace(L, b->ci, c, r->origin, (int)status, now, now + fmin(fmax(wait, ra), c->retry_after_cap));
  if (again && now + wait < c->deadline) { /* a wait past the deadline: the answer stands */
    r->retries++;
    char reason[64];
    snprintf(reason, sizeof reason, "HTTP %ld", status);
    emit_retry(b, k, wait, reason, status);
    schedule(b, k, now, wait);
    lua_settop(L, hi - 1);
    return;
  }
  http_error(b, k, x, status, ra, hi);
}
