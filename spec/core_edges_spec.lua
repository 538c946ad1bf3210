-- The core at the edges of what servers and callers send: token lifetimes, Retry-After values,
-- tokens a header cannot carry, timeouts on reused connections, closing a running client.
local core = require "partnercustomers.core"
local sandbox = require "spec.helpers.sandbox"
local fake_time = require("spec.helpers.util").fake_time

local SCOPE = "partner.customers.read.all"

describe("partnercustomers.core at the edges", function()
  local sb
  setup(function() sb = sandbox.start { count = 4, seed = 11 } end)
  teardown(function() sb:stop() end)
  before_each(function()
    sb:faults {}
    sb:clear_log()
  end)

  local function url() return sb.url .. "/partner/customers" end

  describe("token lifetimes", function()
    -- a provider returning the sandbox's token with the given expires_in; counts its calls
    local function provider_client(expires_in, clock)
      local calls = { n = 0 }
      local token = sb:token(SCOPE)
      local c = core.new { token = function() calls.n = calls.n + 1; return token, expires_in end, clock = clock }
      return c, calls
    end

    for _, v in ipairs { 0, -5, "0x10", "soon", 0 / 0 } do
      it("uses a token whose expires_in is " .. tostring(v) .. " for a short while, not once or forever", function()
        local clock = fake_time()
        local c <close>, calls = provider_client(v, clock.clock)
        local reqs = {}
        for i = 1, 4 do reqs[i] = { url = url(), scope = SCOPE } end
        for _, r in ipairs(c:batch(reqs)) do assert.equal(200, r[1].status) end
        assert.equal(1, calls.n) -- one fetch serves the batch
        clock.now = clock.now + 30
        assert(c:request { url = url(), scope = SCOPE })
        assert.equal(1, calls.n)
        clock.now = clock.now + 60 -- past the short lifetime: renewed, never cached for ever
        assert(c:request { url = url(), scope = SCOPE })
        assert.equal(2, calls.n)
      end)
    end

    it("refuses a token with CR or LF from a provider as an auth error, and sends nothing", function()
      local c <close> = core.new { token = function() return "abc\r\nX-Injected: 1", 3600 end }
      local res, err = c:request { url = url(), scope = SCOPE }
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.equal(0, #sb:log())
    end)

    it("refuses an access_token option with CR, LF or NUL as misuse", function()
      for _, t in ipairs { "a\r\nX: 1", "a\nb", "a\0b" } do
        assert.error_matches(function() core.new { access_token = t } end, "access_token")
      end
    end)
  end)

  describe("Retry-After", function()
    local function client(extra)
      local t = fake_time()
      local o = { access_token = sb:token(SCOPE), max_retries = 1, backoff_base = 0.01, backoff_max = 0.01,
                  clock = t.clock, sleep = t.sleep, random = function() return 0 end }
      local waits = t.sleeps
      for k, v in pairs(extra or {}) do o[k] = v end
      return core.new(o), waits
    end

    it("ignores hex, signed and garbage values (the backoff applies)", function()
      for _, ra in ipairs { "0x10", "-5", "+5", "1e3", "soon", "12abc" } do
        sb:faults { { type = "status", status = 503, retry_after = ra, path = "^/partner/customers$", times = 1 } }
        local c <close>, waits = client()
        assert(c:request { url = url(), scope = SCOPE })
        assert.equal(1, #waits, ra)
        assert.is_true(waits[1] < 1, ra .. " was read as a number of seconds")
      end
    end)

    it("reads a fraction exactly and reports it as it was", function()
      sb:faults { { type = "status", status = 503, retry_after = "120.5", path = "^/partner/customers$", times = 2 } }
      local c <close> = client { retry_after_cap = 120 }
      local _, err = c:request { url = url(), scope = SCOPE }
      assert.equal(120.5, err.retry_after)
      assert.matches("wait 120.5 s", err.message, 1, true)
    end)

    it("keeps a huge value or a far date whole, without a negative or wrapped number", function()
      for _, ra in ipairs { "3000000000", "Fri, 01 Jan 2100 00:00:00 GMT" } do
        sb:faults { { type = "status", status = 429, retry_after = ra, path = "^/partner/customers$", times = 1 } }
        local c <close> = client()
        local _, err = c:request { url = url(), scope = SCOPE }
        assert.equal("throttled", err.kind)
        assert.is_true(err.retry_after > 1e8, ra)
        assert.not_matches("%-%d", err.message)
        assert.equal(1, err.attempts)
      end
    end)
  end)

  it("does not retry a timeout on a reused connection, where the request was sent", function()
    local c <close> = core.new { access_token = sb:token(SCOPE), timeout = 0.5, backoff_base = 0.001,
                                 sleep = function() end }
    assert(c:request { url = url(), scope = SCOPE }) -- opens the keep-alive connection
    sb:faults { { type = "hang", max = 2, path = "^/partner/customers$", times = 3 } }
    local res, err = c:request { url = url(), scope = SCOPE }
    assert.is_nil(res)
    assert.equal("timeout", err.kind)
    assert.equal(1, err.attempts)
  end)

  it("refuses to close a running client from a hook or a to-be-closed variable, leaving it usable", function()
    local c
    local tried, why = 0, nil
    c = core.new { access_token = sb:token(SCOPE), on_event = function(e)
      if e.type == "request" and tried == 0 then
        tried = 1
        local ok, msg = pcall(c.close, c)
        why = not ok and msg
        ok, msg = pcall(function() local _ <close> = c end)
        tried = ok and 2 or 3
      end
    end }
    assert(c:request { url = url(), scope = SCOPE })
    assert.matches("while it runs a request", why)
    assert.equal(3, tried)
    assert.matches("%(0x", tostring(c)) -- not closed
    assert(c:request { url = url(), scope = SCOPE })
    c:close()
    assert.matches("closed", tostring(c))
  end)
  it("gives back the buffers of large answers, so that an idle client holds none of them", function()
    -- in a child with a fixed mmap threshold, so that freed buffers leave the resident set at once
    local script = ([[
      local core = require "partnercustomers.core"
      local c = core.new { access_token = %q, max_parallel = 8 }
      local reqs = {}
      for i = 1, 8 do reqs[i] = { url = %q, scope = %q, decode = false } end
      for _, r in ipairs(c:batch(reqs)) do assert(r[1] and #r[1].body > 4e6, r[2] and tostring(r[2])) end
      reqs = nil
      collectgarbage(); collectgarbage()
      local kb = io.open("/proc/self/status"):read("a"):match("VmRSS:%%s*(%%d+)")
      io.write(kb)
    ]]):format(sb:token(SCOPE), url(), SCOPE)
    sb:faults { { type = "large", bytes = 5 * 1024 * 1024, path = "^/partner/customers$", times = 8 } }
    local p = assert(io.popen(("env -u LD_PRELOAD LUA_CPATH='./build/?.so;;' MALLOC_MMAP_THRESHOLD_=131072 lua5.4 -e %q"):format(script)))
    local kb = tonumber(p:read("a"))
    p:close()
    assert.is_number(kb)
    -- eight 5 MiB answers kept in 8 MiB buffers would be 64 MiB on their own
    assert.is_true(kb < 40 * 1024, ("resident set after the batch: %d KiB"):format(kb))
  end)
end)
