# C-level checks of partnercustomers.core, included by the Makefile (`include spec/c/checks.mk`):
#   make alloc-sweep   allocation-failure sweep under ASan+UBSan+LSan   (bounded: SWEEP_SECONDS, 300 s)
#   make fuzz          libFuzzer over the response path                 (bounded: FUZZ_SECONDS, 60 s)
#   make tsan          two Lua states on two threads under TSan          (bounded: TSAN_TIMEOUT, 120 s)
# Each builds what it needs with clang (libclang-rt-14-dev), under build/c/ (and build-tsan/ for the
# TSan module), never touching build/ or build-asan/'s module. Sources: spec/c/*.c, spec/c/*.lua,
# the seed corpus spec/c/corpus/. See spec/c/README.md.
CLANG      ?= clang
C_BUILD    := build/c
CJSON_DIR  ?= /usr/lib/x86_64-linux-gnu/lua/5.4
# the module's own flags (MODFLAGS) plus the sanitizer's; the hosts link liblua5.4, the modules never do
SAN_COMMON  = -O1 -g -fno-omit-frame-pointer
HOST_FLAGS  = -std=c99 -Wall -Wextra -Wshadow -Wstrict-prototypes $(SAN_COMMON) $(LUA_CFLAGS)
LUA_LIBS   := $(shell $(PKG_CONFIG) --libs lua5.4)

.PHONY: alloc-sweep fuzz tsan c-checks-clean
clean: c-checks-clean
c-checks-clean:
	rm -rf $(C_BUILD) build-tsan

# ---- make alloc-sweep: every N from 1 to the run's allocation count, in three passes ---------------
# Bounded by SWEEP_SECONDS (default 300 s for all the passes, plus the build and the sandbox's start;
# a full sweep takes about 150 s on 2 cores): past the budget the requests stage is swept with a
# stride, and the output says so. SWEEP_PASSES: from, stress, once (a comma list). SWEEP_ONLY=N or
# A-B reruns a finding (with full leak stacks). SWEEP_LSAN_EVERY=K: one leak check every K runs.
SWEEP_SECONDS ?= 300
SWEEP_ONLY    ?=
SWEEP_PASSES  ?= from,stress,once
SWEEP_SO   = $(C_BUILD)/sweep/partnercustomers/core.so
SWEEP_HOST = $(C_BUILD)/alloc_sweep

$(SWEEP_SO): $(SRC) $(HDRS) spec/c/checks.mk
	@mkdir -p $(dir $@)
	$(CLANG) $(MODFLAGS) $(SAN_COMMON) -fsanitize=address,undefined -fno-sanitize-recover=all \
	  $(LUA_CFLAGS) $(CURL_CFLAGS) $(SSL_CFLAGS) $(SRC) -o $@ -shared $(CURL_LIBS) $(SSL_LIBS)

$(SWEEP_HOST): spec/c/alloc_sweep.c spec/c/checks.mk
	@mkdir -p $(dir $@)
	$(CLANG) $(HOST_FLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all \
	  $< -o $@ $(LUA_LIBS) -ldl

# $(SO): bin/with-sandbox starts the sandbox through the CLI, which loads the normal core
alloc-sweep: $(SO) $(SWEEP_SO) $(SWEEP_HOST)
	@start=$$(date +%s); \
	WITH_SANDBOX_AUTH=certificate SANDBOX_ARGS="--quiet --count 30 --odata-page-size 10" \
	ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=32$(if $(SWEEP_ONLY),:fast_unwind_on_malloc=0) LSAN_OPTIONS=suppressions=spec/c/lsan.supp:print_suppressions=0 \
	  bin/with-sandbox $(SWEEP_HOST) spec/c/sweep_run.lua "$(C_BUILD)/sweep/?.so" \
	  $(SWEEP_SECONDS) $(SWEEP_PASSES) $(SWEEP_ONLY) -- $(abspath $(SWEEP_SO)); \
	rc=$$?; echo "alloc-sweep: $$(( $$(date +%s) - start )) s wall, exit $$rc"; exit $$rc

# ---- make fuzz: libFuzzer over the response path for FUZZ_SECONDS (default 60 s, plus the build) --
# Seeds: spec/c/corpus/ (read only); what the fuzzer finds is kept in build/c/fuzz-corpus/, a crash
# in build/c/fuzz-artifacts/ (reproduce: build/c/fuzz_response FILE). Fails on any finding.
FUZZ_SECONDS ?= 60
FUZZ_BIN = $(C_BUILD)/fuzz_response

$(FUZZ_BIN): spec/c/fuzz_response.c $(SRC) $(HDRS) spec/c/checks.mk
	@mkdir -p $(dir $@)
	$(CLANG) $(MODFLAGS) $(SAN_COMMON) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Icsrc \
	  -DCJSON_CPATH='"$(CJSON_DIR)/?.so"' $(LUA_CFLAGS) $(CURL_CFLAGS) $(SSL_CFLAGS) \
	  spec/c/fuzz_response.c $(SRC) -o $@ $(LUA_LIBS) $(CURL_LIBS) $(SSL_LIBS) -lm

fuzz: $(FUZZ_BIN)
	@mkdir -p $(C_BUILD)/fuzz-corpus $(C_BUILD)/fuzz-artifacts
	@spec/c/run-fuzz.sh $(FUZZ_BIN) $(FUZZ_SECONDS) $(C_BUILD)/fuzz-corpus spec/c/corpus $(C_BUILD)/fuzz-artifacts

# ---- make tsan: two Lua states on two threads, TSAN_REQUESTS requests each, under TSan ----------
# Bounded by TSAN_TIMEOUT (default 120 s; a run takes a few seconds). Fails on any TSan report.
TSAN_REQUESTS ?= 300
TSAN_TIMEOUT  ?= 120
TSAN_SO   = build-tsan/partnercustomers/core.so
TSAN_HOST = $(C_BUILD)/threads

$(TSAN_SO): $(SRC) $(HDRS) spec/c/checks.mk
	@mkdir -p $(dir $@)
	$(CLANG) $(MODFLAGS) $(SAN_COMMON) -fsanitize=thread $(LUA_CFLAGS) $(CURL_CFLAGS) $(SSL_CFLAGS) $(SRC) \
	  -o $@ -shared $(CURL_LIBS) $(SSL_LIBS)

$(TSAN_HOST): spec/c/threads.c spec/c/checks.mk
	@mkdir -p $(dir $@)
	$(CLANG) $(HOST_FLAGS) -fsanitize=thread $< -o $@ $(LUA_LIBS) -lpthread

tsan: $(SO) $(TSAN_SO) $(TSAN_HOST)
	@spec/c/run-tsan.sh $(TSAN_HOST) $(TSAN_TIMEOUT) spec/c/threads_run.lua "build-tsan/?.so;$(CJSON_DIR)/?.so" \
	  $(TSAN_REQUESTS)
