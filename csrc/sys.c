/* System calls the command line needs without a shell: isatty, the terminal's width,
 * and the standard descriptors made safe (a closed 0-2 would be taken by the next socket). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "pc.h"

/* core.isatty(fd) -> boolean */
static int l_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  lua_pushboolean(L, fd >= 0 && fd <= 1024 && isatty((int)fd) == 1);
  return 1;
}

/* core.terminal_columns(fd) -> columns of the terminal on fd, or nil */
static int l_terminal_columns(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  struct winsize ws;
  if (fd < 0 || fd > 1024 || ioctl((int)fd, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, ws.ws_col);
  return 1;
}

/* core.reopen_std() -> how many of the descriptors 0, 1 and 2 were closed and now read from or
 * write to /dev/null, so that no file or socket opened later takes one of them. */
static int l_reopen_std(lua_State *L) {
  int reopened = 0;
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    int nfd = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (nfd < 0) return luaL_error(L, "partnercustomers: cannot open /dev/null: %s", strerror(errno));
    if (nfd != fd) { /* cannot happen (the lowest free one is fd), but never leave it astray */
      dup2(nfd, fd);
      close(nfd);
    }
    reopened++;
  }
  lua_pushinteger(L, reopened);
  return 1;
}

static const luaL_Reg sys_funcs[] = {
  {"isatty", l_isatty}, {"terminal_columns", l_terminal_columns},
  {"reopen_std", l_reopen_std}, {NULL, NULL},
};

void pc_sys_open(lua_State *L) { luaL_setfuncs(L, sys_funcs, 0); }
