-- How token requests are retried: each attempt carries a body built anew (a fresh client
-- assertion), and a refresh grant, which the server redeems when it reads it, is retried only
-- when it cannot have been read (or the server asks for it: 429, 503).
local core = require "partnercustomers.core"
local sandbox = require "spec.helpers.sandbox"
local helpers = require "spec.helpers.util"

local PC_SCOPE_V2 = "https://api.partnercenter.microsoft.com/.default"

local function path_of(url) return (url:match("^https?://[^/]+(/[^?#]*)")) end
-- a fault rule's path is a Lua pattern
local function pattern(path) return "^" .. path:gsub("%p", "%%%0") .. "$" end

local function count_path(log, path)
  local n = 0
  for _, e in ipairs(log) do if e.path == path then n = n + 1 end end
  return n
end

describe("token request retries", function()
  local sb, dir
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    helpers.sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem -days 2 -subj /CN=retry 2>/dev/null")
      :format(dir, dir))
    sb = sandbox.start { count = 4, seed = 3, client_cert = dir .. "/cert.pem" }
  end)
  teardown(function()
    sb:stop()
    os.execute("rm -rf " .. dir)
  end)
  before_each(function()
    sb:faults {}
    sb:clear_log()
  end)

  it("signs a fresh assertion for every attempt of a client-credentials request", function()
    local jtis = {}
    local c <close> = core.new {
      client_credentials = { token_url = sb.token_url, client_id = sb.client_id,
                             certificate = { key = dir .. "/key.pem", cert = dir .. "/cert.pem" } },
      jti = function() local id = core.uuid(); jtis[#jtis + 1] = id; return id end,
      sleep = function() end, backoff_base = 0.001,
    }
    sb:faults { { type = "status", status = 503, path = "/connect/token", times = 2 } }
    local res, err = c:request { url = sb.url .. "/partner/customers", scope = "partner.customers.read.all" }
    assert.is_nil(err)
    assert.equal(200, res.status)
    assert.equal(3, count_path(sb:log(), "/connect/token"))
    assert.equal(3, #jtis)
    assert.is_true(jtis[1] ~= jtis[2] and jtis[2] ~= jtis[3] and jtis[1] ~= jtis[3])
  end)

  local function refresh_client(token_url)
    return core.new {
      refresh_token = { token_url = token_url, client_id = sb.client_id, client_secret = sb.client_secret,
                        refresh_token = sb:refresh_token() },
      sleep = function() end, backoff_base = 0.001, timeout = 2,
    }
  end

  it("never replays a refresh grant after a dropped exchange or a 500", function()
    local path = path_of(sb.pc_token_url_v2)
    for _, fault in ipairs { { type = "drop" }, { type = "status", status = 500 }, { type = "status", status = 502 } } do
      local c <close> = refresh_client(sb.pc_token_url_v2)
      local url = sb:pc_org_url()
      sb:clear_log()
      fault.path, fault.times = pattern(path), 1
      sb:faults { fault }
      local res, err = c:request { url = url, scope = PC_SCOPE_V2 }
      assert.is_nil(res, fault.type)
      assert.is_true(core.is_error(err))
      assert.equal(1, err.attempts, fault.type)
      assert.equal(1, count_path(sb:log(), path), fault.type)
    end
  end)

  it("retries a refresh grant the server asked to retry (429, 503)", function()
    local path = path_of(sb.pc_token_url_v2)
    for _, st in ipairs { 429, 503 } do
      local c <close> = refresh_client(sb.pc_token_url_v2)
      local url = sb:pc_org_url()
      sb:clear_log()
      sb:faults { { type = "status", status = st, path = pattern(path), times = 1, retry_after = 0 } }
      local res, err = c:request { url = url, scope = PC_SCOPE_V2 }
      assert.is_nil(err, tostring(st))
      assert.equal(200, res.status)
      assert.equal(2, count_path(sb:log(), path))
    end
  end)

  it("retries a refresh grant that never reached a server (connection refused)", function()
    local attempts = 0
    local c <close> = core.new {
      refresh_token = { token_url = "http://127.0.0.1:1/tenant/oauth2/v2.0/token", client_id = "a",
                        refresh_token = "r-token-value" },
      sleep = function() end, backoff_base = 0.001, max_retries = 2,
      on_event = function(e) if e.type == "request" then attempts = attempts + 1 end end,
    }
    local res, err = c:request { url = sb.url .. "/v1/customers", scope = PC_SCOPE_V2 }
    assert.is_nil(res)
    assert.equal("network", err.kind)
    assert.equal(3, attempts)
  end)

  it("retries a client-credentials request after a dropped exchange", function()
    local c <close> = core.new {
      client_credentials = { token_url = sb.token_url, client_id = sb.client_id, client_secret = sb.client_secret },
      sleep = function() end, backoff_base = 0.001,
    }
    sb:faults { { type = "drop", path = "/connect/token", times = 1 } }
    local res, err = c:request { url = sb.url .. "/partner/customers", scope = "partner.customers.read.all" }
    assert.is_nil(err)
    assert.equal(200, res.status)
    assert.equal(2, count_path(sb:log(), "/connect/token"))
  end)

  it("takes the retry policy of a request as data, and refuses an unknown one", function()
    local c <close> = core.new { sleep = function() end, backoff_base = 0.001 }
    sb:faults { { type = "status", status = 503, path = "/no/such/route", times = 1 } }
    local _, err = c:request { url = sb.url .. "/no/such/route", retry = "never" }
    assert.equal(503, err.status)
    assert.equal(1, err.attempts)
    assert.error_matches(function() c:request { url = sb.url, retry = "sometimes" } end, "retry")
    assert.error_matches(function() c:request { url = sb.url, body = "x" } end, "GET request cannot have a body")
  end)

  it("builds a body per attempt from a function", function()
    local n = 0
    local c <close> = core.new { sleep = function() end, backoff_base = 0.001 }
    sb:faults { { type = "status", status = 503, path = "/no/such/route", times = 2 } }
    local _, err = c:request { url = sb.url .. "/no/such/route", method = "POST",
                               body = function() n = n + 1; return "attempt " .. n end }
    assert.equal(3, n)
    assert.equal(3, err.attempts)
  end)
  it("fetches one token for a wave of 401s: a 401 drops only the token that request carried", function()
    local c <close> = core.new {
      client_credentials = { token_url = sb.token_url, client_id = sb.client_id, client_secret = sb.client_secret },
      max_parallel = 6,
    }
    local reqs = {}
    for i = 1, 6 do reqs[i] = { url = sb.url .. "/partner/customers?i=" .. i, scope = "partner.customers.read.all" } end
    for _, r in ipairs(c:batch(reqs)) do assert.equal(200, r[1].status) end
    sb:revoke()
    sb:clear_log()
    for _, r in ipairs(c:batch(reqs)) do assert.equal(200, r[1].status) end
    assert.equal(1, count_path(sb:log(), "/connect/token"))
  end)
end)
