/* The client's one descriptor: libcurl's sockets and its timer gathered behind an epoll fd that
 * lives as long as the client, so that a host's event loop polls one descriptor per client
 * however many transfers run, and never sees a closed socket's number come back as a new
 * connection. The blocking wait polls the same descriptor: one code path for both.
 *
 * libcurl tells which sockets to watch (CURLMOPT_SOCKETFUNCTION: the epoll set follows) and when
 * to call it back (CURLMOPT_TIMERFUNCTION: remembered); transfers move with
 * curl_multi_socket_action. The callbacks only touch the epoll set and a number: no Lua.
 *
 * Elsewhere than Linux: curl_multi_perform and curl_multi_poll as before, and no descriptor for
 * a host (epfd stays -1; client:start refuses). */
#include <errno.h>
#include <math.h>
#include <unistd.h>
#include "pc.h"

#ifdef __linux__
#include <sys/epoll.h>

#define EVENTS_PER_DRIVE PC_MAX_PARALLEL

static int socket_cb(CURL *e, curl_socket_t s, int what, void *ud, void *sockp) {
  (void)e, (void)sockp;
  pc_client *c = ud;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(c->epfd, EPOLL_CTL_DEL, s, NULL); /* may fail harmlessly: already closed */
    return 0;
  }
  struct epoll_event ev;
  ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
  ev.data.u64 = 0;
  ev.data.fd = s;
  if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT) epoll_ctl(c->epfd, EPOLL_CTL_ADD, s, &ev);
  return 0;
}

static int timer_cb(CURLM *m, long ms, void *ud) {
  (void)m;
  pc_client *c = ud;
  c->timer_due = ms < 0 ? HUGE_VAL : pc_mono_now() + (double)ms / 1000;
  return 0;
}

int pc_poll_open(pc_client *c) {
  c->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (c->epfd < 0) return 0;
  c->timer_due = HUGE_VAL;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, (void *)c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, (void *)c);
  return 1;
}

void pc_poll_close(pc_client *c) {
  if (c->epfd >= 0) close(c->epfd);
  c->epfd = -1;
}

static int select_flags(uint32_t ev) {
  return (ev & (EPOLLIN | EPOLLHUP) ? CURL_CSELECT_IN : 0) | (ev & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
         (ev & EPOLLERR ? CURL_CSELECT_ERR : 0);
}

void pc_poll_drive(pc_client *c) {
  struct epoll_event ev[EVENTS_PER_DRIVE];
  int still = 0, n = epoll_wait(c->epfd, ev, EVENTS_PER_DRIVE, 0);
  for (int i = 0; i < n; i++) curl_multi_socket_action(c->multi, ev[i].data.fd, select_flags(ev[i].events), &still);
  if (pc_mono_now() + 0.0005 >= c->timer_due) { /* half a millisecond early is on time */
    c->timer_due = HUGE_VAL; /* before the call: libcurl may set the next one inside it */
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &still);
  }
}

void pc_poll_wait(pc_client *c, double seconds) {
  struct epoll_event ev;
  seconds = fmax(0, fmin(seconds, pc_poll_timer(c)));
  epoll_wait(c->epfd, &ev, 1, (int)ceil(fmin(seconds, 3600) * 1000)); /* ready sockets stay ready */
}

double pc_poll_timer(pc_client *c) {
  return c->timer_due == HUGE_VAL ? HUGE_VAL : fmax(0, c->timer_due - pc_mono_now());
}

#else /* no epoll: libcurl's own poll, and no descriptor for a host */

int pc_poll_open(pc_client *c) {
  c->epfd = -1;
  c->timer_due = HUGE_VAL;
  return 1;
}

void pc_poll_close(pc_client *c) { c->epfd = -1; }

void pc_poll_drive(pc_client *c) {
  int still = 0;
  curl_multi_perform(c->multi, &still);
}

void pc_poll_wait(pc_client *c, double seconds) {
  curl_multi_poll(c->multi, NULL, 0, (int)ceil(fmax(0, fmin(seconds, 3600)) * 1000), NULL);
}

double pc_poll_timer(pc_client *c) {
  long ms = -1;
  curl_multi_timeout(c->multi, &ms);
  return ms < 0 ? HUGE_VAL : (double)ms / 1000;
}

#endif
