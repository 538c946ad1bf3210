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
The `partnercustomers sandbox` command (a local fake of the API) also needs lua-http.
]],
  license = "MIT",
  labels = { "http", "api", "msp" },
}

dependencies = {
  "lua >= 5.4, < 5.5",
  "lua-cjson >= 2.1",
}

-- Only the library is looked up: Debian keeps curl/curl.h in the multiarch include directory,
-- which LuaRocks does not search but the compiler does.
external_dependencies = {
  CURL = { library = "curl" },
  OPENSSL = { library = "crypto" },
}

build = {
  type = "builtin",
  modules = {
    ["partnercustomers.core"] = {
      sources = { "csrc/auth.c", "csrc/cert.c", "csrc/core.c", "csrc/errors.c", "csrc/http.c", "csrc/json.c",
                  "csrc/response.c", "csrc/util.c", "csrc/hooks.c" },
      defines = { "_DEFAULT_SOURCE" },
      libraries = { "curl", "ssl", "crypto" },
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
}

test = {
  type = "busted",
}
