-- The C core (partnercustomers.core) against a real HTTP peer: the sandbox on 127.0.0.1,
-- and openssl s_server for TLS. The clock and the sleep are injected wherever waits are checked.
local core = require "partnercustomers.core"
local sandbox = require "spec.helpers.sandbox"

local V3 = "/partner/external/v3/general/customers"
local SCOPE = "elements.customers.read.all"
local PSCOPE = "partner.customers.read.all"

local fake_time = require("spec.helpers.util").fake_time

local function count(log, pred)
  local n = 0
  for _, e in ipairs(log) do
    if pred(e) then n = n + 1 end
  end
  return n
end

local function is_token_request(e) return e.path == "/connect/token" end

describe("partnercustomers.core", function()
  local sb
  setup(function() sb = sandbox.start { count = 12, seed = 3, token_ttl = 3600 } end)
  teardown(function() sb:stop() end)
  before_each(function()
    sb:faults {}
    sb:clear_log()
  end)

  -- A client holding a fixed sandbox token, and a GET of /partner/customers with it.
  local function client(opts)
    local o = { access_token = sb:token(PSCOPE) }
    for k, v in pairs(opts or {}) do o[k] = v end
    return core.new(o)
  end
  local function get(c, extra)
    local req = { url = sb.url .. "/partner/customers", scope = PSCOPE }
    for k, v in pairs(extra or {}) do req[k] = v end
    return c:request(req)
  end

  local function cc_client(opts)
    opts = opts or {}
    local o = {
      client_credentials = { token_url = sb.token_url, client_id = sb.client_id, client_secret = opts.secret or sb.client_secret },
      max_retries = 3, backoff_base = 0.5, backoff_max = 30, random = function() return 1 end,
    }
    for k, v in pairs(opts) do
      if k ~= "secret" then o[k] = v end
    end
    return core.new(o)
  end

  describe("module", function()
    it("exports its version, libcurl's and the error metatable", function()
      assert.matches("^partnercustomers %d+%.%d+%.%d+$", core._VERSION)
      assert.matches("^libcurl/", core.curl_version)
      assert.equal("partnercustomers.error", core.Error.__name)
    end)

    it("makes and recognises error objects", function()
      local e = core.error { kind = "protocol", message = "page did not advance" }
      assert.is_true(core.is_error(e))
      assert.is_false(core.is_error({ kind = "protocol" }))
      assert.is_false(core.is_error("x"))
      assert.matches("^partnercustomers: protocol error: page did not advance$", tostring(e))
      assert.has_error(function() core.error { kind = "nope" } end)
    end)
  end)

  describe("new", function()
    it("refuses unknown options, wrong types and values out of range, naming the option", function()
      assert.has_error(function() core.new { timout = 3 } end, "partnercustomers: unknown option 'timout'")
      assert.error_matches(function() core.new { timeout = "3" } end, "option 'timeout' must be a number")
      assert.error_matches(function() core.new { timeout = 0 } end, "option 'timeout'")
      assert.error_matches(function() core.new { max_retries = 11 } end, "option 'max_retries'")
      assert.error_matches(function() core.new { max_retries = 1.5 } end, "option 'max_retries' must be an integer")
      assert.error_matches(function() core.new { max_parallel = 65 } end, "option 'max_parallel'")
      assert.error_matches(function() core.new { on_event = true } end, "option 'on_event' must be a function")
      assert.error_matches(function() core.new { proxy = "" } end, "option 'proxy' must be a string")
      assert.error_matches(function() core.new { user_agent = "a\r\nX-Evil: 1" } end, "user_agent")
    end)

    it("refuses two kinds of credentials and incomplete client credentials", function()
      assert.error_matches(function() core.new { access_token = "abcd", token = function() end } end, "only one of")
      assert.error_matches(function() core.new { client_credentials = { token_url = "https://x/t", client_id = "a" } } end,
        "exactly one of 'client_secret' and 'certificate'")
      assert.error_matches(function() core.new { client_credentials = { token_url = "https://x/t", client_secret = "s" } } end,
        "client_credentials.client_id")
      assert.error_matches(function()
        core.new { client_credentials = { token_url = "http://login.example.com/t", client_id = "a", client_secret = "b" } }
      end, "token_url.*plain http")
      assert.error_matches(function()
        core.new { client_credentials = { token_url = "https://x/t", client_id = "a", client_secret = "b", extra = 1 } }
      end, "unknown field")
    end)

    it("never modifies the caller's table", function()
      local opts = { timeout = 5, client_credentials = { token_url = "https://x/t", client_id = "a", client_secret = "bbbb" } }
      core.new(opts):close()
      assert.same({ timeout = 5, client_credentials = { token_url = "https://x/t", client_id = "a", client_secret = "bbbb" } }, opts)
    end)
  end)

  describe("lifecycle", function()
    it("closes idempotently; a closed client refuses to work", function()
      local c = core.new {}
      assert.matches("^partnercustomers%.client %(0x%x+%)$", tostring(c))
      c:close()
      c:close()
      assert.equal("partnercustomers.client (closed)", tostring(c))
      assert.has_error(function() c:request { url = sb.url .. "/_sandbox/customers" } end,
        "attempt to use a closed partnercustomers client")
    end)

    it("closes through <close> and is collected when unreachable", function()
      local weak = setmetatable({}, { __mode = "v" })
      do
        local c <close> = core.new {}
        weak[1] = c
        assert.truthy(c:request { url = sb.url .. "/_sandbox/customers" })
      end
      assert.matches("closed", tostring(weak[1]))
      weak[2] = core.new {}
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak[2])
    end)
  end)

  describe("request validation", function()
    local c
    setup(function() c = core.new {} end)
    teardown(function() c:close() end)

    it("allows plain http only to loopback hosts", function()
      assert.error_matches(function() c:request { url = "http://example.com/x" } end, "plain http://")
      assert.error_matches(function() c:request { url = "http://10.0.0.1/x" } end, "plain http://")
      assert.error_matches(function() c:request { url = "ftp://127.0.0.1/x" } end, "must use https://")
      assert.error_matches(function() c:request { url = "not a url" } end, "not a valid absolute URL")
    end)

    it("keeps credentials in a URL out of its messages", function()
      local ok, err = pcall(c.request, c, { url = "http://user:hunter22@example.com/x" })
      assert.is_false(ok)
      assert.not_matches("hunter22", err)
    end)

    it("refuses header values with CR or LF, bad names, unknown fields, unknown methods", function()
      assert.error_matches(function()
        c:request { url = sb.url .. "/x", headers = { ["X-A"] = "1\r\nX-B: 2" } }
      end, "CR, LF or NUL")
      assert.error_matches(function() c:request { url = sb.url .. "/x", headers = { ["Bad Name"] = "1" } } end,
        "invalid header name")
      assert.error_matches(function() c:request { url = sb.url .. "/x", verb = "GET" } end, "unknown request field 'verb'")
      assert.error_matches(function() c:request { url = sb.url .. "/x", method = "PATCH" } end, "unsupported method")
      assert.error_matches(function() c:request { url = sb.url .. "/x", scope = SCOPE } end, "needs credentials")
    end)
  end)

  describe("responses", function()
    it("decodes JSON: null is absent, integral numbers are integers", function()
      local c <close> = client {}
      local res = assert(c:request { url = sb.url .. "/_sandbox/customers" })
      assert.equal(200, res.status)
      assert.matches("json", res.headers["content-type"])
      assert.equal(12, #res.data)
      local nulls = 0
      for _, cu in ipairs(res.data) do
        assert.equal("integer", math.type(cu.jobStatus))
        assert.equal("integer", math.type(cu.managementMode))
        if cu.ownerEmail == nil or cu.countryOrRegion == nil then nulls = nulls + 1 end
      end
      assert.matches("null", res.body) -- the wire had nulls ...
      assert.is_true(nulls > 0)        -- ... and none reached the table
    end)

    it("sends a User-Agent naming the module and libcurl, and offers compression", function()
      local c <close> = client { user_agent = "msp-sync/2.0" }
      assert(c:request { url = sb.url .. "/_sandbox/customers" })
      get(c) -- a logged (non-admin) path
      local log = sb:log()
      local h = log[#log].headers
      assert.matches("^msp%-sync/2%.0 partnercustomers/0%.1%.0 libcurl/", h["user-agent"])
      assert.matches("gzip", h["accept-encoding"])
    end)

    it("turns malformed JSON and an HTML page with status 200 into decode errors", function()
      local c <close> = client {}
      for _, fault in ipairs { "malformed", "html" } do
        sb:faults { { type = fault } }
        local res, err = get(c)
        assert.is_nil(res)
        assert.equal("decode", err.kind)
        assert.equal(200, err.status)
        assert.equal(1, err.attempts)
      end
    end)

    it("hands back the raw body when asked not to decode", function()
      local c <close> = client {}
      sb:faults { { type = "html" } }
      local res = assert(get(c, { decode = false }))
      assert.matches("<html", res.body)
      assert.is_nil(res.data)
    end)

    it("stops a response over max_response_bytes, and a gzip bomb, as a limit error", function()
      local c <close> = client { max_response_bytes = 64 * 1024 }
      sb:faults { { type = "large", bytes = 512 * 1024 } }
      local res, err = get(c)
      assert.is_nil(res)
      assert.equal("limit", err.kind)
      sb:faults { { type = "gzip_bomb", bytes = 20 * 1024 * 1024 } }
      res, err = get(c)
      assert.is_nil(res)
      assert.equal("limit", err.kind)
      assert.equal(1, err.attempts)
    end)

    it("reads code and message from an error body", function()
      local c <close> = client { max_retries = 0 }
      sb:faults { { type = "status", status = 404, body = '{"code": 3000, "description": "no such customer"}' } }
      local _, err = get(c)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.equal("3000", err.code)
      assert.equal("no such customer", err.message)
      assert.matches("^partnercustomers: http error 404 %(code 3000%): no such customer %[GET http://127", tostring(err))
    end)
  end)

  describe("retries", function()
    for _, status in ipairs { 408, 429, 500, 502, 503, 504 } do
      it("retries " .. status .. " with exponential backoff and succeeds", function()
        local t = fake_time()
        local c <close> = client { clock = t.clock, sleep = t.sleep, random = function() return 1 end, backoff_base = 0.5 }
        sb:faults { { type = "status", status = status, times = 2 } }
        local res = assert(get(c))
        assert.equal(200, res.status)
        assert.equal(3, res.attempts)
        assert.same({ 0.5, 1.0 }, t.sleeps)
      end)
    end

    it("keeps at least half of each backoff step as jitter", function()
      local t = fake_time()
      local c <close> = client { clock = t.clock, sleep = t.sleep, random = function() return 0 end,
        backoff_base = 2, backoff_max = 5, max_retries = 4 }
      sb:faults { { type = "status", status = 503, times = 4 } }
      assert(get(c))
      assert.same({ 1, 2, 2.5, 2.5 }, t.sleeps) -- steps 2, 4, 5 (capped), 5 halved
    end)

    it("gives up after max_retries with the last status, and a 429 becomes throttled", function()
      local t = fake_time()
      local c <close> = client { clock = t.clock, sleep = t.sleep, max_retries = 2 }
      sb:faults { { type = "status", status = 429, times = -1 } }
      local res, err = get(c)
      assert.is_nil(res)
      assert.equal("throttled", err.kind)
      assert.equal(429, err.status)
      assert.equal(3, err.attempts)
      assert.equal(2, #t.sleeps)
      assert.equal(3, count(sb:log(), function(e) return e.path == "/partner/customers" end))
    end)

    it("waits for Retry-After in seconds when it is longer than the backoff", function()
      local t = fake_time()
      local c <close> = client { clock = t.clock, sleep = t.sleep, random = function() return 1 end }
      sb:faults { { type = "status", status = 429, retry_after = "7" } }
      assert(get(c))
      assert.same({ 7 }, t.sleeps)
    end)

    it("waits for Retry-After given as an HTTP date", function()
      local t = fake_time(1700000000)
      local c <close> = client { clock = t.clock, sleep = t.sleep, random = function() return 1 end }
      sb:faults { { type = "status", status = 503, retry_after = os.date("!%a, %d %b %Y %H:%M:%S GMT", 1700000000 + 9) } }
      assert(get(c))
      assert.same({ 9 }, t.sleeps)
    end)

    it("keeps the backoff when Retry-After is shorter", function()
      local t = fake_time()
      local c <close> = client { clock = t.clock, sleep = t.sleep, random = function() return 1 end, backoff_base = 4 }
      sb:faults { { type = "status", status = 503, retry_after = "1" } }
      assert(get(c))
      assert.same({ 4 }, t.sleeps)
    end)

    it("fails at once with retry_after set when Retry-After is beyond the cap", function()
      local t = fake_time()
      local c <close> = client { clock = t.clock, sleep = t.sleep, retry_after_cap = 120 }
      sb:faults { { type = "status", status = 429, retry_after = "600" } }
      local res, err = get(c)
      assert.is_nil(res)
      assert.equal("throttled", err.kind)
      assert.equal(600, err.retry_after)
      assert.equal(1, err.attempts)
      assert.same({}, t.sleeps)
      assert.matches("retry_after_cap", err.message)
    end)

    it("never retries other 4xx", function()
      local t = fake_time()
      local c <close> = client { clock = t.clock, sleep = t.sleep }
      for _, status in ipairs { 400, 403, 404, 409 } do
        sb:clear_log()
        sb:faults { { type = "status", status = status } }
        local _, err = get(c)
        assert.equal(status, err.status)
        assert.equal(1, err.attempts)
        assert.equal(status == 403 and "auth" or "http", err.kind)
      end
      assert.same({}, t.sleeps)
    end)

    it("retries a dropped connection, then succeeds", function()
      local t = fake_time()
      local c <close> = client { clock = t.clock, sleep = t.sleep }
      sb:faults { { type = "drop", times = 2 } }
      local res = assert(get(c))
      assert.equal(3, res.attempts)
      assert.equal(2, #t.sleeps)
    end)

    it("reports a refused connection as a network error after every retry", function()
      local t = fake_time()
      local c <close> = client { clock = t.clock, sleep = t.sleep, max_retries = 2 }
      local res, err = c:request { url = "http://127.0.0.1:1/nothing" }
      assert.is_nil(res)
      assert.equal("network", err.kind)
      assert.equal(3, err.attempts)
      assert.equal(2, #t.sleeps)
    end)
  end)

  describe("timeouts", function()
    it("ends a hung response with a timeout error, not retried", function()
      local c <close> = client { timeout = 0.5, sleep = function() error("must not sleep") end }
      sb:faults { { type = "hang", max = 5 } }
      local res, err = get(c)
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      assert.equal(1, err.attempts)
    end)

    it("waits for a slow response within the timeout", function()
      local c <close> = client { timeout = 5 }
      sb:faults { { type = "slow", delay = 0.2 } }
      assert(get(c))
    end)
  end)

  describe("tokens", function()
    it("gets a client-credentials token once per scope and sends it as a bearer", function()
      local c <close> = cc_client()
      for _ = 1, 3 do assert(c:request { url = sb.url .. V3, scope = SCOPE }) end
      assert(c:request { url = sb.url .. "/partner/customers", scope = "partner.customers.read.all" })
      local log = sb:log()
      assert.equal(2, count(log, is_token_request))
      local form = log[1].body
      assert.matches("grant_type=client_credentials", form)
      assert.matches("scope=elements.customers.read.all", form)
      assert.truthy(form:find("client_id=" .. sb.client_id, 1, true))
      assert.matches("client_secret=%[redacted%]", form) -- the secret travelled in the body
      assert.equal("application/x-www-form-urlencoded", log[1].headers["content-type"])
      local v3_token = log[2].token
      assert.truthy(v3_token)
      assert.equal(3, count(log, function(e) return e.path == V3 and e.token == v3_token end))
      assert.equal(1, count(log, function(e) return e.path == "/partner/customers" and e.token and e.token ~= v3_token end))
    end)

    it("renews a token a little before it expires", function()
      local t = fake_time(os.time())
      local c <close> = cc_client { clock = t.clock, sleep = t.sleep }
      assert(c:request { url = sb.url .. V3, scope = SCOPE })
      t.now = t.now + 3600 - 61
      assert(c:request { url = sb.url .. V3, scope = SCOPE })
      assert.equal(1, count(sb:log(), is_token_request))
      t.now = t.now + 2
      assert(c:request { url = sb.url .. V3, scope = SCOPE })
      assert.equal(2, count(sb:log(), is_token_request))
    end)

    it("answers a 401 by fetching a new token and retrying once", function()
      local c <close> = cc_client()
      assert(c:request { url = sb.url .. V3, scope = SCOPE })
      sb:revoke()
      sb:clear_log()
      local res = assert(c:request { url = sb.url .. V3, scope = SCOPE })
      assert.equal(2, res.attempts)
      assert.equal(1, count(sb:log(), is_token_request))
    end)

    it("does not loop when the new token is refused too", function()
      local c <close> = cc_client()
      sb:faults { { type = "expire_token", times = -1 } }
      local res, err = c:request { url = sb.url .. V3, scope = SCOPE }
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.equal(401, err.status)
      assert.equal(2, err.attempts)
      assert.equal(2, count(sb:log(), is_token_request))
    end)

    it("reports a wrong secret as an auth error, tried once, with no secret anywhere", function()
      local events = {}
      local wrong = "wrong-" .. sb.client_secret
      local c <close> = cc_client { secret = wrong, on_event = function(e) events[#events + 1] = e end }
      local res, err = c:request { url = sb.url .. V3, scope = SCOPE }
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.equal("invalid_client", err.code)
      assert.equal(1, err.attempts)
      assert.equal(1, count(sb:log(), is_token_request))
      assert.equal(0, count(sb:log(), function(e) return e.path == V3 end))
      local everything = tostring(err)
      for k, v in pairs(err) do everything = everything .. tostring(k) .. tostring(v) end
      for _, e in ipairs(events) do
        for k, v in pairs(e) do everything = everything .. tostring(k) .. tostring(v) end
      end
      assert.not_matches(wrong, everything, 1, true)
      assert.not_matches(sb.client_secret, everything, 1, true)
    end)

    it("uses a fixed access_token as it is and cannot renew it", function()
      local c <close> = core.new { access_token = "not-a-sandbox-token" }
      local res, err = c:request { url = sb.url .. V3, scope = SCOPE }
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.equal(401, err.status)
      assert.equal(1, err.attempts)
      assert.not_matches("not-a-sandbox-token", tostring(err), 1, true)
    end)

    it("calls a token provider per scope, caches its answer and reports its failure as auth", function()
      local calls = {}
      local fetcher <close> = cc_client()
      local c <close> = core.new { token = function(scope)
        calls[#calls + 1] = scope
        -- the provider gets its token from the sandbox through another client
        local res = assert(fetcher:request {
          method = "POST", url = sb.token_url, sensitive = true,
          headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
          body = "grant_type=client_credentials&client_id=" .. sb.client_id .. "&client_secret=" .. sb.client_secret .. "&scope=" .. scope,
        })
        return res.data.access_token, res.data.expires_in
      end }
      assert(c:request { url = sb.url .. V3, scope = SCOPE })
      assert(c:request { url = sb.url .. V3, scope = SCOPE })
      assert.same({ SCOPE }, calls)

      local failing <close> = core.new { token = function() error("vault unreachable") end }
      local res, err = failing:request { url = sb.url .. V3, scope = SCOPE }
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.matches("vault unreachable", err.message)
      local empty <close> = core.new { token = function() return nil, "no token today" end }
      res, err = empty:request { url = sb.url .. V3, scope = SCOPE }
      assert.equal("auth", err.kind)
      assert.matches("no token today", err.message)
    end)
  end)

  describe("events", function()
    it("reports requests, retries and tokens, without any secret or token", function()
      local events = {}
      local t = fake_time()
      local c <close> = cc_client { clock = t.clock, sleep = t.sleep, on_event = function(e) events[#events + 1] = e end }
      sb:faults { { type = "status", status = 503, path = V3 } }
      assert(c:request { url = sb.url .. V3, scope = SCOPE })
      local types = {}
      for _, e in ipairs(events) do types[#types + 1] = e.type end
      assert.same({ "request", "token", "request", "pace", "retry", "request", "pace" }, types)
      assert.equal(503, events[3].status)
      assert.equal(1, events[4].window) -- one request was running: halved, at least 1
      assert.equal("throttled", events[4].reason)
      assert.is_nil(events[4].rate) -- a rate is learned from 429s only
      assert.equal(2, events[7].window) -- the clean answer widens it again
      assert.equal("clean answers", events[7].reason)
      assert.equal("HTTP 503", events[5].reason)
      assert.equal(SCOPE, events[2].scope)
      assert.equal(3600, events[2].expires_in)
      assert.equal("integer", math.type(events[2].expires_in))
      local dump = ""
      for _, e in ipairs(events) do
        for k, v in pairs(e) do dump = dump .. k .. "=" .. tostring(v) .. ";" end
      end
      assert.not_matches(sb.client_secret, dump, 1, true)
      assert.not_matches("Bearer", dump, 1, true)
    end)

    it("raises an error from the hook after abandoning the request, and stays usable", function()
      local c <close> = client { on_event = function() error("hook broke") end }
      assert.error_matches(function() get(c) end, "hook broke")
      local ok = client {}
      assert(get(ok))
      ok:close()
    end)

    it("refuses a request made from inside its own hook", function()
      local c
      c = client { on_event = function() get(c) end }
      assert.error_matches(function() get(c) end, "already running")
      c:close()
    end)
  end)

  describe("batch", function()
    it("runs several requests at once and answers in order", function()
      local c <close> = client { max_parallel = 4, max_retries = 0 }
      sb:faults { { type = "slow", delay = 0.3, times = 4 }, }
      local reqs = {}
      for i = 1, 6 do reqs[i] = { url = sb.url .. "/partner/customers?i=" .. i, scope = PSCOPE } end
      reqs[7] = { url = "http://127.0.0.1:1/refused" }
      local started = core.now()
      local results = c:batch(reqs)
      local elapsed = core.now() - started
      assert.equal(7, #results)
      for i = 1, 6 do
        assert.equal(200, results[i][1].status)
        assert.matches("i=" .. i .. "$", results[i][1].url)
      end
      assert.is_nil(results[7][1])
      assert.equal("network", results[7][2].kind)
      assert.is_true(elapsed < 1.0, "four slow answers ran one after another")
    end)
  end)

  describe("proxy", function()
    -- the raw peer as a forward proxy that refuses every tunnel: its log shows what reached it
    local rawpeer = require "spec.helpers.rawpeer"
    local peer
    before_each(function()
      peer = rawpeer.start()
      peer:script { api = { rawpeer.then_close(rawpeer.response(403, {}, "")) } }
    end)
    after_each(function() peer:stop() end)

    local function connected_to(host)
      for _, r in ipairs(peer:log()) do
        if r.method == "CONNECT" and r.path == host then return true end
      end
      return false
    end

    it("sends https requests through the proxy option", function()
      local c <close> = core.new { proxy = peer.url, max_retries = 0, connect_timeout = 2 }
      local res, err = c:request { url = "https://partner.invalid/customers" }
      assert.is_nil(res)
      assert.is_true(core.is_error(err))
      assert.is_true(connected_to("partner.invalid:443"), "the proxy saw no CONNECT")
    end)

    it("honours libcurl's https_proxy variable without the option", function()
      local script = "local c = require('partnercustomers.core').new { max_retries = 0, connect_timeout = 2 }; " ..
        "local _, e = c:request { url = 'https://partner.invalid/x' }; io.write(tostring(e and e.kind))"
      local p = assert(io.popen(("env https_proxy=%s no_proxy= lua5.4 -e %q"):format(peer.url, script)))
      local out = p:read("a")
      p:close()
      assert.is_true(out ~= "nil" and out ~= "")
      assert.is_true(connected_to("partner.invalid:443"))
    end)

    it("never sends a loopback request through a proxy, from the option or the environment", function()
      local c <close> = core.new { proxy = peer.url, max_retries = 0 }
      local _, err = c:request { url = sb.url .. "/_sandbox/nothing-here" }
      assert.equal(404, err.status) -- answered by the sandbox itself
      local script = ("local c = require('partnercustomers.core').new { max_retries = 0 }; " ..
        "local _, e = c:request { url = %q }; io.write(tostring(e and e.status))"):format(sb.url .. "/_sandbox/none")
      local env = ("env http_proxy=%s HTTP_PROXY=%s ALL_PROXY=%s all_proxy=%s no_proxy= NO_PROXY="):format(
        peer.url, peer.url, peer.url, peer.url)
      local p = assert(io.popen(("%s lua5.4 -e %q"):format(env, script)))
      local out = p:read("a")
      p:close()
      assert.equal("404", out)
      assert.same({}, peer:log())
    end)

    it("reports a dead proxy as a network error", function()
      local dead <close> = core.new { proxy = "http://127.0.0.1:1", max_retries = 0 }
      local res, err = dead:request { url = "https://partner.invalid/x" }
      assert.is_nil(res)
      assert.equal("network", err.kind)
    end)
  end)

  describe("TLS", function()
    local dir, server, port
    setup(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. dir))
      -- a throwaway self-signed certificate, made now, never committed
      assert(os.execute(("env -u LD_PRELOAD openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem -days 1 " ..
        "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost 2>/dev/null"):format(dir, dir)))
      server = io.popen(("exec env -u LD_PRELOAD timeout 30 openssl s_server -accept 127.0.0.1:0 -cert %s/cert.pem -key %s/key.pem -www -naccept 2 2>&1")
        :format(dir, dir))
      for line in server:lines() do
        port = line:match("^ACCEPT 127%.0%.0%.1:(%d+)")
        if port then break end
      end
      assert(port, "openssl s_server did not start")
    end)
    teardown(function()
      server:close()
      os.execute("rm -rf " .. dir)
    end)

    it("refuses a certificate it cannot verify as a tls error, not retried", function()
      local t = fake_time()
      local c <close> = core.new { clock = t.clock, sleep = t.sleep }
      local res, err = c:request { url = "https://127.0.0.1:" .. port .. "/", decode = false }
      assert.is_nil(res)
      assert.equal("tls", err.kind)
      assert.equal(1, err.attempts)
    end)

    it("trusts the certificate given as ca_file", function()
      local c <close> = core.new { ca_file = dir .. "/cert.pem" }
      local res = assert(c:request { url = "https://127.0.0.1:" .. port .. "/", decode = false })
      assert.equal(200, res.status)
    end)
  end)
end)
