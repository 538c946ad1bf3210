# partnercustomers: build, test, demo, bench.
# `make` builds build/partnercustomers/core.so; `make test` runs every spec; `make demo` lists the
# sandbox's customers through the CLI.
LUA        ?= lua5.4
PKG_CONFIG ?= pkg-config
BUSTED     ?= $(shell command -v busted 2>/dev/null || echo /usr/bin/busted)
CC         ?= cc

LUA_CFLAGS  := $(shell $(PKG_CONFIG) --cflags lua5.4)
CURL_CFLAGS := $(shell $(PKG_CONFIG) --cflags libcurl)
CURL_LIBS   := $(shell $(PKG_CONFIG) --libs libcurl)
SSL_CFLAGS  := $(shell $(PKG_CONFIG) --cflags openssl)
SSL_LIBS    := $(shell $(PKG_CONFIG) --libs libssl libcrypto)

CFLAGS  ?= -O2 -g
# Only luaopen_partnercustomers_core is exported; Lua's symbols come from the host (no -llua).
MODFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -fPIC -fvisibility=hidden \
           -Wall -Wextra -Wshadow -Wstrict-prototypes
LDFLAGS_MOD = -shared -Wl,--no-undefined-version

SRC  = $(wildcard csrc/*.c)
HDRS = $(wildcard csrc/*.h)
SO   = build/partnercustomers/core.so

# Flags above are read when make starts; `test` and `demo` install missing packages first and then
# build in a sub-make, so that a fresh machine gets the right flags.
# lua-http (the sandbox's server) is installed by Debian under the 5.1 tree only.
LUA51_TREE ?= /usr/share/lua/5.1
export LUA_PATH  := ./lua/?.lua;./lua/?/init.lua;./?.lua;;$(LUA51_TREE)/?.lua;$(LUA51_TREE)/?/init.lua
export LUA_CPATH := ./build/?.so;;

.PHONY: all deps test demo bench clean check-symbols asan valgrind examples compilers rock

all: $(SO)

# Debian packages, installed only when missing (see .ci/deps).
deps:
	@.ci/deps

$(SO): $(SRC) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(MODFLAGS) $(CFLAGS) $(LUA_CFLAGS) $(CURL_CFLAGS) $(SSL_CFLAGS) $(SRC) -o $@ $(LDFLAGS_MOD) $(LDFLAGS) $(CURL_LIBS) $(SSL_LIBS)

# The exported symbols and the link line, as the brief requires them.
check-symbols: $(SO)
	@exports=$$(nm -D --defined-only $(SO) | awk '$$2 ~ /[TDB]/ {print $$3}' | grep -v '^_'); \
	  if [ "$$exports" != "luaopen_partnercustomers_core" ]; then echo "unexpected exports: $$exports"; exit 1; fi
	@if ldd $(SO) | grep -q liblua; then echo "$(SO) links liblua"; exit 1; fi
	@echo "symbols ok: only luaopen_partnercustomers_core exported, no liblua"

test: deps
	@$(MAKE) --no-print-directory $(SO) check-symbols
	$(LUA) $(BUSTED) $(BUSTED_ARGS)

demo: deps
	@$(MAKE) --no-print-directory $(SO)
	@WITH_SANDBOX_AUTH=certificate bin/with-sandbox sh -c 'echo "== AvePoint customers (v3), certificate credentials made for this run"; \
	  bin/partnercustomers customers --source avepoint-v3 --format table && \
	  echo && echo "== Report: AvePoint customers joined with their Partner Center organizations" && \
	  bin/partnercustomers report --format table'

examples: $(SO)
	@bin/with-sandbox $(LUA) examples/list_customers.lua
	@bin/with-sandbox $(LUA) examples/report.lua
	@bin/with-sandbox $(LUA) examples/event_loop.lua

bench: $(SO)
	$(LUA) bench/run.lua

# A source rock of the checkout (committed files plus uncommitted changes to them), as
# `luarocks pack` makes one: the rockspec, with its source pointed at a tarball of the tree, and that
# tarball. Installs offline: `luarocks --lua-version 5.4 build --local --deps-mode=none NAME.src.rock`.
ROCKSPEC = $(wildcard partnercustomers-*.rockspec)
ROCK_NV  = $(ROCKSPEC:.rockspec=)
ROCK_DIR = $(subst -1.rockspec,,$(ROCKSPEC))
rock:
	@[ "$(words $(ROCKSPEC))" = 1 ] || { echo "expected one rockspec, found: $(ROCKSPEC)"; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  tree=$$(git stash create); \
	  git archive --format=tar.gz --prefix=$(ROCK_DIR)/ -o "$$tmp/$(ROCK_DIR).tar.gz" $${tree:-HEAD} && \
	  sed -e 's|^  url = .*|  url = "file://'"$$tmp"'/$(ROCK_DIR).tar.gz", dir = "$(ROCK_DIR)",|' -e '/^  tag = /d' \
	    $(ROCKSPEC) > "$$tmp/$(ROCKSPEC)" && \
	  (cd "$$tmp" && luarocks --lua-version 5.4 pack $(ROCKSPEC) >/dev/null) && \
	  cp "$$tmp/$(ROCK_NV).src.rock" . && echo "$(ROCK_NV).src.rock"

# The core under each compiler of COMPILERS with -std=c99 -pedantic -Werror, each build loaded by
# lua5.4 and checked for its exports; then once more per compiler against the headers of an older
# libcurl (.ci/curlver-7.81.h: the branches for libcurl before 7.85 compile too).
COMPILERS    ?= gcc clang
STRICTFLAGS   = -std=c99 -pedantic -Werror -Wall -Wextra -Wshadow -Wstrict-prototypes \
                -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
compilers:
	@for cc in $(COMPILERS); do \
	  so=build-cc/$$cc/partnercustomers/core.so; mkdir -p $$(dirname $$so); \
	  $$cc $(STRICTFLAGS) -O2 -fPIC -fvisibility=hidden $(LUA_CFLAGS) $(CURL_CFLAGS) $(SSL_CFLAGS) $(SRC) \
	    -o $$so $(LDFLAGS_MOD) $(CURL_LIBS) $(SSL_LIBS) || exit 1; \
	  exports=$$(nm -D --defined-only $$so | awk '$$2 ~ /[TDB]/ {print $$3}' | grep -v '^_'); \
	  [ "$$exports" = luaopen_partnercustomers_core ] || { echo "$$cc: unexpected exports: $$exports"; exit 1; }; \
	  LUA_CPATH="./build-cc/$$cc/?.so;;" $(LUA) -e 'print((require "partnercustomers.core")._VERSION)' >/dev/null || exit 1; \
	  $$cc $(STRICTFLAGS) -include .ci/curlver-7.81.h $(LUA_CFLAGS) $(CURL_CFLAGS) $(SSL_CFLAGS) -fsyntax-only $(SRC) || exit 1; \
	  echo "$$cc: -std=c99 -pedantic -Werror clean, loads, exports only luaopen_partnercustomers_core; libcurl 7.81 headers ok"; \
	done

# The same specs against an ASan+UBSan build of the module, kept in its own directory so that it
# never replaces the normal build (the interpreter is not instrumented: the runtime is preloaded),
# with the collector running all the time (pause 0), as luv does, to catch unanchored values.
ASAN_SO = build-asan/partnercustomers/core.so
$(ASAN_SO): $(SRC) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(MODFLAGS) -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
	  $(LUA_CFLAGS) $(CURL_CFLAGS) $(SSL_CFLAGS) $(SRC) -o $@ $(LDFLAGS_MOD) $(CURL_LIBS) $(SSL_LIBS)

asan: $(ASAN_SO)
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=.ci/lsan.supp \
	  LUA_INIT='collectgarbage("incremental", 0, 1000)' \
	  LUA_CPATH="./build-asan/?.so;;" $(LUA) $(BUSTED) --cpath="./build-asan/?.so" $(BUSTED_ARGS)

valgrind: $(SO)
	valgrind --error-exitcode=3 --keep-debuginfo=yes --leak-check=full --errors-for-leak-kinds=definite \
	  --suppressions=.ci/valgrind.supp $(LUA) $(BUSTED) $(BUSTED_ARGS)

clean:
	rm -rf build build-asan build-cc

include spec/c/checks.mk
