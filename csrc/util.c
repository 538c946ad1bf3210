/* Helpers at the bottom of the core: growable buffers, base64, form encoding, random ids.
 * Nothing here knows of HTTP, OAuth or the client; nothing depends on the C locale. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <openssl/rand.h>
#include "pc.h"

int pc_buf_append(pc_buf *b, const char *p, size_t n) {
  if (n > ((size_t)-1) / 4 - b->len) return 0;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (q == NULL) return 0;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 1;
}

void pc_buf_free(pc_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* Empties b; a buffer grown past keep bytes is given back, so that one large answer does not
 * stay allocated for the client's lifetime. */
void pc_buf_reset(pc_buf *b, size_t keep) {
  if (b->cap > keep) pc_buf_free(b);
  b->len = 0;
}

size_t pc_base64(const unsigned char *p, size_t n, char *out, int url) {
  const char *a = url ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                      : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    size_t left = n - i;
    unsigned v = (unsigned)p[i] << 16 | (left > 1 ? (unsigned)p[i + 1] << 8 : 0) | (left > 2 ? p[i + 2] : 0);
    out[o++] = a[v >> 18 & 63];
    out[o++] = a[v >> 12 & 63];
    if (left > 1) out[o++] = a[v >> 6 & 63];
    else if (!url) out[o++] = '=';
    if (left > 2) out[o++] = a[v & 63];
    else if (!url) out[o++] = '=';
  }
  out[o] = '\0';
  return o;
}

/* RFC 3986 unreserved characters, spelled out: isalnum() follows the locale. */
static int unreserved(unsigned char ch) {
  return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
         ch == '.' || ch == '_' || ch == '~';
}

void pc_form_encode(luaL_Buffer *b, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (unreserved(ch))
      luaL_addchar(b, (char)ch);
    else {
      luaL_addchar(b, '%');
      luaL_addchar(b, hex[ch >> 4]);
      luaL_addchar(b, hex[ch & 15]);
    }
  }
}

void pc_push_basic_credential(lua_State *L, const char *id, size_t idn, const char *secret, size_t secn) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  pc_form_encode(&b, id, idn);
  luaL_addchar(&b, ':');
  pc_form_encode(&b, secret, secn);
  luaL_pushresult(&b);
  size_t n;
  const unsigned char *raw = (const unsigned char *)lua_tolstring(L, -1, &n);
  luaL_Buffer h;
  char *out = luaL_buffinitsize(L, &h, 4 * ((n + 2) / 3) + 1);
  luaL_pushresultsize(&h, pc_base64(raw, n, out, 0));
  lua_remove(L, -2);
}

int pc_uuid(char out[37]) {
  unsigned char r[16];
  if (RAND_bytes(r, (int)sizeof r) != 1) return 0;
  r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* version 4 */
  r[8] = (unsigned char)((r[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
           r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
  return 1;
}

/* Writes n bytes of data to fd (EINTR and short writes retried); 0 or an errno value. */
static int write_all(int fd, const char *data, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w < 0 ? errno : EIO;
    data += w, n -= (size_t)w;
  }
  return 0;
}

int pc_write_private(const char *path, const char *data, size_t n) {
  size_t len = strlen(path);
  if (len == 0 || path[len - 1] == '/') return EISDIR;
  const char *slash = strrchr(path, '/');
  size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0; /* with its '/' */
  char *tmp = malloc(len + 9);
  if (tmp == NULL) return ENOMEM;
  /* "dir/.name.XXXXXX": the same directory (rename stays atomic), hidden */
  snprintf(tmp, len + 9, "%.*s.%s.XXXXXX", (int)dirlen, path, path + dirlen);
  int fd = mkstemp(tmp); /* mode 0600 */
  if (fd < 0) {
    int e = errno;
    free(tmp);
    return e;
  }
  int e = write_all(fd, data, n);
  if (e == 0 && fsync(fd) != 0) e = errno;
  if (close(fd) != 0 && e == 0) e = errno;
  if (e == 0 && rename(tmp, path) != 0) e = errno;
  if (e != 0) unlink(tmp);
  free(tmp);
  return e;
}
