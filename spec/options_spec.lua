-- Misuse of pc.avepoint and of its methods: every bad option raises at the caller's line with a
-- message naming the option; the caller's tables are never modified; output is the same in any locale.
-- No network is used.
local pc = require "partnercustomers"

local HERE = "options_spec%.lua:%d+: "

-- Calls f and returns the raw error message (luassert's error_matches strips the position).
local function misuse(f)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected an error")
  assert.equal("string", type(err))
  return err
end

-- Asserts that f raises at this spec's line a partnercustomers message containing every needle.
local function raises(f, ...)
  local err = misuse(f)
  assert.matches("^[^\n]*" .. HERE .. "partnercustomers: ", err)
  for _, needle in ipairs { ... } do
    assert.truthy(err:find(needle, 1, true), ("%q not in %q"):format(needle, err))
  end
  return err
end

local function deep_copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = deep_copy(v) end
  return c
end

local LOOP = "http://127.0.0.1:9" -- nothing listens there; these tests never send a request

local function with(extra)
  local o = { access_token = "tok-123456", base_url = LOOP }
  for k, v in pairs(extra) do o[k] = v end
  return o
end

describe("pc.avepoint options", function()
  it("needs a table", function()
    raises(function() pc.avepoint("x") end, "pc.avepoint expects an option table")
    raises(function() pc.avepoint(42) end, "option table")
  end)

  it("refuses unknown keys, naming them", function()
    raises(function() pc.avepoint(with { timeuot = 3 }) end, "unknown option 'timeuot'")
    raises(function() pc.avepoint(with { [1] = "x" }) end, "unknown option '1'")
    raises(function() pc.avepoint(with { customer_ids = { "a" } }) end,
           "unknown option 'customer_ids'")
  end)

  it("refuses every bad type, naming the option", function()
    local bad = {
      client_id = 1, client_secret = {}, certificate = "app.pfx", access_token = 5, token = "f",
      environment = 1, base_url = 1, token_url = true, timeout = "3", connect_timeout = "1",
      max_retries = "2", max_parallel = {}, max_response_bytes = "1", ca_file = 1, proxy = 2,
      user_agent = {}, on_event = "f", clock = 1, sleep = true, v3 = 1,
    }
    for name, value in pairs(bad) do
      raises(function() pc.avepoint(with { [name] = value }) end, "option '" .. name .. "' must be")
    end
    raises(function() pc.avepoint(with { access_token = "" }) end, "option 'access_token'")
    raises(function() pc.avepoint(with { access_token = "a\r\nX: y" }) end, "option 'access_token'")
    raises(function() pc.avepoint(with { user_agent = "ua\nX-Evil: 1" }) end, "option 'user_agent'")
  end)

  it("refuses values out of range", function()
    local bad = {
      timeout = { 0, 0.0009, -1, 0 / 0, math.huge, 86401 },
      connect_timeout = { 0, -0.5, 3601 },
      max_retries = { -1, 11, 1.5 },
      max_parallel = { 0, 65 },
      max_response_bytes = { 0, -5, 1.5, 1e12 + 1 },
      environment = { "mars", "" },
      v3 = { "put", "" },
    }
    for name, values in pairs(bad) do
      for _, v in ipairs(values) do
        raises(function() pc.avepoint(with { [name] = v }) end, "option '" .. name .. "' must be")
      end
    end
    local err = raises(function() pc.avepoint(with { max_retries = 11 }) end)
    assert.matches("from 0 to 10 %(got 11%)", err)
  end)

  it("accepts values in range, integral floats as integers", function()
    local ave = pc.avepoint(with {
      timeout = 0.001, connect_timeout = 3600, max_retries = 0, max_parallel = 64,
      max_response_bytes = 1e12, environment = "GOV", v3 = "Batch",
      clock = function() return 0 end, sleep = function() end, on_event = function() end,
      user_agent = "spec", proxy = "http://127.0.0.1:3128",
    })
    ave:close()
  end)

  describe("URLs", function()
    it("allow https anywhere and http to loopback", function()
      for _, url in ipairs { "https://graph.example.com", "https://graph.example.com:8443/api/",
                             "HTTPS://Graph.Example.com", "http://127.0.0.1:8080",
                             "http://127.1.2.3", "http://localhost:1234", "http://LOCALHOST",
                             "http://[::1]:8080/" } do
        pc.avepoint(with { base_url = url, token_url = url }):close()
      end
    end)

    it("refuse plain http elsewhere and everything else", function()
      for _, url in ipairs { "http://graph.example.com", "http://128.0.0.1", "http://10.0.0.1",
                             "http://127.0.0.1.example.com", "http://localhost.example.com",
                             "http://[::2]", "http://127.0.0.256", "ftp://127.0.0.1",
                             "graph.example.com", "https://", "https://:443",
                             "https://user:pass@graph.example.com", "https://h/p?q=1",
                             "https://h/#f", "https://h:0", "https://h:65536", "https://h:x" } do
        raises(function() pc.avepoint(with { base_url = url }) end, "option 'base_url' must be")
        raises(function() pc.avepoint(with { token_url = url }) end, "option 'token_url' must be")
      end
    end)

    it("say why http is refused", function()
      raises(function() pc.avepoint(with { base_url = "http://example.com" }) end,
             "uses plain http:// to a host that is not loopback")
    end)

    it("follow the core's one loopback rule, so an accepted URL is never refused on use", function()
      local core = require "partnercustomers.core"
      -- libcurl reads 127.1 as 127.0.0.1, and 127.0.0.08 as a host name
      pc.avepoint(with { base_url = "http://127.1:9", token_url = "http://127.1:9/t" }):close()
      raises(function() pc.avepoint(with { base_url = "http://127.0.0.08" }) end,
             "option 'base_url' must be", "not loopback")
      for _, url in ipairs { "http://127.1", "http://127.0.0.08", "http://0x7f.1", "http://2130706433",
                             "http://[::ffff:127.0.0.1]", "http://localhost.",
                             "http://[0:0:0:0:0:0:0:1]", "http://127.0.0.1 ", "https://h/a b" } do
        local ok = pcall(pc.avepoint, with { base_url = url })
        assert.equal(core.url_problem(url) == nil, ok, url)
      end
    end)
  end)

  describe("credentials", function()
    it("are required", function()
      raises(function() pc.avepoint { base_url = LOOP } end, "needs credentials")
      raises(function() pc.avepoint() end, "needs credentials")
    end)

    it("come one way only", function()
      local pairs_of_ways = {
        { client_id = "id", client_secret = "secret-1", access_token = "tok-1" },
        { access_token = "tok-1", token = function() end },
        { client_id = "id", client_secret = "secret-1", token = function() end },
        { certificate = { pfx = "a.pfx" }, client_id = "id", client_secret = "secret-1" },
        { certificate = { pfx = "a.pfx" }, access_token = "tok-1" },
        { client_id = "id", access_token = "tok-1" },
      }
      for _, o in ipairs(pairs_of_ways) do
        o.base_url = LOOP
        raises(function() pc.avepoint(o) end, "one kind of credentials")
      end
    end)

    it("need both client_id and client_secret", function()
      raises(function() pc.avepoint { client_id = "id", base_url = LOOP } end,
             "option 'client_id' needs option 'client_secret'")
      raises(function() pc.avepoint { client_secret = "secret-1", base_url = LOOP } end,
             "option 'client_secret' needs option 'client_id'")
    end)

    it("refuse a certificate file that cannot be read, naming it, at the caller's line", function()
      raises(function()
        pc.avepoint { client_id = "id", certificate = { pfx = "no-such-app.pfx", password = "pw" } }
      end, "certificate.pfx: cannot read 'no-such-app.pfx'")
    end)

    it("never appear in a message", function()
      local secret = "s3cr3t-value-xyz"
      local err = misuse(function()
        pc.avepoint { client_id = "id", client_secret = secret, timeout = -1 }
      end)
      assert.falsy(err:find(secret, 1, true))
      err = misuse(function() pc.avepoint { client_id = "id", client_secret = 123456789 } end)
      assert.falsy(err:find("123456789", 1, true))
      err = misuse(function() pc.avepoint { access_token = secret, environment = secret } end)
      assert.falsy(err:find(secret, 1, true))
    end)

    it("accept each way", function()
      pc.avepoint { client_id = "id", client_secret = "secret-1", base_url = LOOP,
                    token_url = LOOP .. "/connect/token" }:close()
      pc.avepoint { access_token = "tok-1" }:close()
      pc.avepoint { token = function() return "tok", 3600 end }:close()
    end)
  end)

  it("leaves the caller's table as it was", function()
    local opts = {
      client_id = "id", client_secret = "secret-1", environment = "AOS2", base_url = LOOP .. "/",
      timeout = 2.0, max_retries = 1.0, on_event = function() end,
    }
    local before = deep_copy(opts)
    local ave = pc.avepoint(opts)
    assert.same(before, opts)
    ave:close()
    assert.same(before, opts)
  end)
end)

describe("avepoint methods", function()
  local ave
  before_each(function() ave = pc.avepoint(with {}) end)
  after_each(function() ave:close() end)

  it("check page_index and page_size", function()
    raises(function() ave:customer_page(0) end, "page_index must be a positive integer (got 0)")
    raises(function() ave:customer_page(1.5) end, "page_index")
    raises(function() ave:customer_page("1") end, "page_index")
    raises(function() ave:customer_page(1, 0) end, "page_size must be an integer from 1 to 100")
    raises(function() ave:customer_page(1, 101) end, "page_size")
    raises(function() ave:customer_page(1, "10") end, "page_size")
    for _, m in ipairs { "pages", "each_customer", "all_customers" } do
      raises(function() ave[m](ave, { page_size = 0 }) end, m .. ": option 'page_size'")
      raises(function() ave[m](ave, { page_size = 101 }) end, "option 'page_size'")
      raises(function() ave[m](ave, { page_size = 50.5 }) end, "option 'page_size'")
    end
  end)

  it("refuse unknown options", function()
    raises(function() ave:customers { page_size = 10 } end, "customers: unknown option 'page_size'")
    raises(function() ave:customer_page(1, 10, { page_size = 10 }) end,
           "customer_page: unknown option 'page_size'")
    raises(function() ave:pages { parallel = 2 } end, "pages: unknown option 'parallel'")
    raises(function() ave:each_customer { progress = print } end, "unknown option 'progress'")
    raises(function() ave:all_customers { pagesize = 10 } end, "unknown option 'pagesize'")
    raises(function() ave:pages "x" end, "pages expects an option table")
  end)

  it("check max_pages on every listing: an integer >= 1", function()
    for _, m in ipairs { "customers", "pages", "each_customer", "all_customers" } do
      for _, bad in ipairs { 0, -1, 1.5, "2", 0 / 0 } do
        raises(function() ave[m](ave, { max_pages = bad }) end,
               m .. ": option 'max_pages' must be an integer >= 1")
      end
    end
    ave:pages { max_pages = 1 }
    ave:each_customer { max_pages = 2.0 }
    raises(function() ave:customer_page(1, 10, { max_pages = 1 }) end, "unknown option 'max_pages'")
  end)

  it("check all_customers' parallel and progress", function()
    raises(function() ave:all_customers { parallel = 0 } end, "option 'parallel'")
    raises(function() ave:all_customers { parallel = 65 } end, "option 'parallel'")
    raises(function() ave:all_customers { progress = "x" } end, "option 'progress' must be a function")
  end)

  it("check v3 and customer_ids", function()
    raises(function() ave:pages { v3 = "post" } end, "option 'v3' must be one of \"get\", \"batch\"")
    for _, ids in ipairs { {}, { 1 }, { "" }, { "a", nil, "c" }, { x = "a" }, "a" } do
      raises(function() ave:pages { v3 = "batch", customer_ids = ids } end,
             "option 'customer_ids' must be a non-empty array of non-empty strings")
    end
    raises(function() ave:customer_page(1, 10, { customer_ids = { "a" } }) end,
           "option 'customer_ids' needs v3 = \"batch\"")
    raises(function() ave:each_customer { customer_ids = { "a" }, v3 = "get" } end,
           "needs v3 = \"batch\"")
    raises(function() ave:all_customers { customer_ids = { "a" }, v3 = "GET" } end,
           "needs v3 = \"batch\"")
  end)

  it("leave the caller's tables as they were", function()
    local opts = { v3 = "batch", customer_ids = { "a", "b" }, page_size = 10.0 }
    local before = deep_copy(opts)
    ave:pages(opts)
    ave:each_customer(opts)
    assert.same(before, opts)
  end)

  it("must be called with a colon, on an open client", function()
    raises(function() ave.customer_page(1, 10) end, "call it as ave:customer_page(...)")
    raises(function() ave.pages { } end, "call it as ave:pages(...)")
    raises(function() ave.close() end, "call it as ave:close()")
    ave:close()
    ave:close() -- closing twice is fine
    raises(function() ave:customers() end, "closed")
    raises(function() ave:pages() end, "closed")
  end)

  it("close with <close>", function()
    local other
    do
      local a <close> = pc.avepoint(with {})
      other = a
    end
    raises(function() other:customers() end, "closed")
  end)
end)

-- A locale whose decimal point is a comma, generated for this run (no root needed: localedef
-- writes it under a directory of ours, which LOCPATH names for the child Lua). Needs Debian's
-- `locales` package (the de_DE source); localedef itself is in libc-bin.
describe("output under a locale with a decimal comma", function()
  local helpers = require "spec.helpers.util"
  local dir

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    helpers.sh("mkdir -m 700 " .. helpers.shell_quote(dir) .. " && localedef -i de_DE -f UTF-8 "
               .. helpers.shell_quote(dir .. "/de_DE.UTF-8"))
  end)
  teardown(function() os.execute("rm -rf " .. helpers.shell_quote(dir)) end)

  -- Runs `code` in a child lua5.4 under de_DE.UTF-8 (asserting that it has a decimal comma) and
  -- returns what it printed. The child loads Lua modules only: no sanitizer preload for it.
  local function under_comma_locale(code)
    local script = 'assert(os.setlocale("de_DE.UTF-8"), "no de_DE.UTF-8") '
      .. 'assert(("%.1f"):format(1.5) == "1,5", "not a comma locale") ' .. code
    local path = "./lua/?.lua;./lua/?/init.lua;" .. (os.getenv("LUA_PATH") or "") .. ";;"
    local cmd = "cd " .. helpers.shell_quote(helpers.ROOT) .. " && env -u LD_PRELOAD LOCPATH=" .. helpers.shell_quote(dir)
      .. " LUA_PATH=" .. helpers.shell_quote(path) .. " " .. (os.getenv("LUA") or "lua5.4") .. " -e " .. helpers.shell_quote(script) .. " 2>&1"
    local p = assert(io.popen(cmd, "r"))
    local out = p:read("a")
    assert(p:close(), out)
    return out
  end

  it("util.json_encode writes numbers with a dot", function()
    local out = under_comma_locale [[
      local util = require "partnercustomers.util"
      print(util.json_encode { 1.5, 0.1, -2.5e-7, 1e300, 3, 2^53 + 0.0, 1 / 3, { x = 12.25 } })
    ]]
    assert.equal('[1.5,0.1,-2.5e-07,1e+300,3,9007199254740992,0.33333333333333331,{"x":12.25}]\n', out)
  end)

  it("the csv and json formats write a float field with a dot", function()
    local out = under_comma_locale [[
      local format = require "partnercustomers.format"
      local parts = {}
      local out = { write = function(self, ...)
        for _, s in ipairs { ... } do parts[#parts + 1] = s end
        return self
      end }
      for _, name in ipairs { "csv", "json" } do
        local w = format.writer(name, out)
        assert(w:add { id = "c1", organization = "O", jobStatus = 7.5, tenants = {} })
        assert(w:finish())
      end
      io.write(table.concat(parts))
    ]]
    assert.matches("c1,O,,7.5,", out, 1, true)
    assert.matches('"jobStatus":7.5', out, 1, true)
    assert.not_matches("7,5", out, 1, true)
  end)
end)

describe("require 'partnercustomers'", function()
  it("sets no global and prints nothing", function()
    for name in pairs(package.loaded) do
      if name:match("^partnercustomers") and name ~= "partnercustomers.core" then
        package.loaded[name] = nil
      end
    end
    local assigned, printed = {}, false
    local real_print, real_write = _G.print, io.write
    _G.print = function() printed = true end
    io.write = function() printed = true end
    setmetatable(_G, { __newindex = function(t, k, v)
      assigned[#assigned + 1] = tostring(k)
      rawset(t, k, v)
    end })
    local ok, loaded = pcall(require, "partnercustomers")
    setmetatable(_G, nil)
    _G.print, io.write = real_print, real_write
    assert.is_true(ok, tostring(loaded))
    assert.same({}, assigned)
    assert.is_false(printed)
    assert.equal(require("partnercustomers.core")._VERSION, loaded._VERSION)
    assert.equal("function", type(loaded.avepoint))
    assert.equal("partnercustomers.error", loaded.Error.__name)
  end)
end)
