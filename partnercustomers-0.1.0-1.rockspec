rockspec_format = "3.0"
package = "partnercustomers"
version = "0.1.0-1"

source = {
  -- set by the release process; `luarocks make` in a checkout does not fetch anything
  url = "git+https://example.invalid/partnercustomers.git",
  tag = "v0.1.0",
}

description = {
  summary = "Customer inventory from the AvePoint Graph API for managed service partners",
  detailed = [[
A Lua 5.4 module with a C core on libcurl: customers, backup job status and tenants from
AvePoint Elements for Partners, with retries, token caching, response caps and secret-free errors.
The `partnercustomers sandbox` command (a local fake of the API) also needs lua-http and luaossl.
]],
  license = "MIT",
  labels = { "http", "api", "msp" },
}

dependencies = {
  "lua >= 5.4, < 5.5",
  "lua-cjson >= 2.1",
  "argparse >= 0.6", -- the partnercustomers command (Debian: lua-argparse)
}

-- A libcurl or an OpenSSL under another prefix (CURL_DIR=/opt/curl, OPENSSL_DIR=...) is used whole:
-- the module compiles with that prefix's headers (incdirs below) and links its libraries. OpenSSL's
-- header is checked as well as its library; curl's is not, because Debian keeps curl/curl.h in the
-- multiarch include directory, which LuaRocks does not search (the compiler does).
-- Minimum versions: libcurl 7.66, OpenSSL 3.0 (csrc/pc.h refuses older headers).
external_dependencies = {
  CURL = { library = "curl" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
}

-- What the specs need besides the runtime; the `partnercustomers sandbox` command needs lua-http
-- (module http, on cqueues) and luaossl (openssl) too. Neither is a dependency of the library: a
-- user who never starts the sandbox does not need them (Debian: lua-http, lua-luaossl).
test_dependencies = {
  "busted >= 2",
  "http >= 0.4",
  "luaossl",
  "luasocket",
}

build = {
  type = "builtin",
  modules = {
    ["partnercustomers.core"] = {
      sources = { "csrc/auth.c", "csrc/cert.c", "csrc/core.c", "csrc/errors.c", "csrc/hooks.c", "csrc/json.c", "csrc/loop.c",
                  "csrc/outcome.c", "csrc/policy.c", "csrc/poll.c", "csrc/request.c", "csrc/response.c", "csrc/scheduler.c",
                  "csrc/sys.c", "csrc/transport.c", "csrc/util.c" },
      defines = { "_DEFAULT_SOURCE" },
      libraries = { "curl", "ssl", "crypto" },
      incdirs = { "$(CURL_INCDIR)", "$(OPENSSL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(OPENSSL_LIBDIR)" },
    },
    ["partnercustomers"] = "lua/partnercustomers/init.lua",
    ["partnercustomers.avepoint"] = "lua/partnercustomers/avepoint.lua",
    ["partnercustomers.cli"] = "lua/partnercustomers/cli.lua",
    ["partnercustomers.device_login"] = "lua/partnercustomers/device_login.lua",
    ["partnercustomers.format"] = "lua/partnercustomers/format.lua",
    ["partnercustomers.job_status"] = "lua/partnercustomers/job_status.lua",
    ["partnercustomers.login_cmd"] = "lua/partnercustomers/login_cmd.lua",
    ["partnercustomers.pager"] = "lua/partnercustomers/pager.lua",
    ["partnercustomers.partnercenter"] = "lua/partnercustomers/partnercenter.lua",
    ["partnercustomers.report"] = "lua/partnercustomers/report.lua",
    ["partnercustomers.util"] = "lua/partnercustomers/util.lua",
    ["partnercustomers.sandbox"] = "lua/partnercustomers/sandbox/init.lua",
    ["partnercustomers.sandbox.assertion"] = "lua/partnercustomers/sandbox/assertion.lua",
    ["partnercustomers.sandbox.data"] = "lua/partnercustomers/sandbox/data.lua",
    ["partnercustomers.sandbox.device"] = "lua/partnercustomers/sandbox/device.lua",
    ["partnercustomers.sandbox.faults"] = "lua/partnercustomers/sandbox/faults.lua",
    ["partnercustomers.sandbox.json"] = "lua/partnercustomers/sandbox/json.lua",
    ["partnercustomers.sandbox.partnercenter"] = "lua/partnercustomers/sandbox/partnercenter.lua",
    ["partnercustomers.sandbox.server"] = "lua/partnercustomers/sandbox/server.lua",
    ["partnercustomers.sandbox.service"] = "lua/partnercustomers/sandbox/service.lua",
  },
  install = {
    bin = { partnercustomers = "bin/partnercustomers" },
  },
  -- none: LuaRocks then installs README.md, LICENSE and CHANGELOG.md as the rock's documentation
  copy_directories = {},
}

test = {
  type = "busted",
}
