-- The core's call options (parallel, deadline), its short waits (Ctrl-C), and client:redact.
local core = require "partnercustomers.core"
local sandbox = require "spec.helpers.sandbox"
local helpers = require "spec.helpers.util"

local SCOPE = "partner.customers.read.all"

describe("partnercustomers.core calls", function()
  local sb
  setup(function() sb = sandbox.start { count = 4, seed = 5 } end)
  teardown(function() sb:stop() end)
  before_each(function()
    sb:faults {}
    sb:clear_log()
  end)

  local function url(i) return sb.url .. "/partner/customers" .. (i and ("?i=" .. i) or "") end

  it("runs at most `parallel` transfers of a call at once, refilling each freed slot", function()
    local c <close> = core.new { access_token = sb:token(SCOPE), max_parallel = 8 }
    sb:faults { { type = "slow", delay = 0.2, path = "^/partner/customers$", times = 12 } }
    local reqs = {}
    for i = 1, 12 do reqs[i] = { url = url(i), scope = SCOPE } end
    local t0 = core.now()
    local results = c:batch(reqs, { parallel = 3 })
    local elapsed = core.now() - t0
    for i, r in ipairs(results) do
      assert.equal(200, r[1].status)
      assert.matches("i=" .. i .. "$", r[1].url)
    end
    -- 4 waves of 0.2 s; with all 8 slots it would be 2 waves
    assert.is_true(elapsed >= 0.75, "12 requests of 0.2 s, 3 at a time, took " .. elapsed)
    assert.is_true(elapsed < 12 * 0.2, "the calls ran one after another")
  end)

  it("refuses a parallel above max_parallel, and unknown call options, as misuse", function()
    local c <close> = core.new { max_parallel = 4 }
    assert.error_matches(function() c:batch({}, { parallel = 5 }) end, "max_parallel %(4%)")
    assert.error_matches(function() c:batch({}, { parallel = 0 }) end, "parallel")
    assert.error_matches(function() c:request({ url = url() }, { speed = 1 }) end, "unknown call option 'speed'")
    assert.error_matches(function() c:request({ url = url() }, { deadline = -1 }) end, "deadline")
  end)

  it("ends a call at its deadline: no retry past it, no request started after it", function()
    local c <close> = core.new { access_token = sb:token(SCOPE), backoff_base = 5, backoff_max = 5,
                                 random = function() return 0 end }
    sb:faults { { type = "status", status = 503, path = "^/partner/customers$", times = 10 } }
    local t0 = core.now()
    local res, err = c:request({ url = url(), scope = SCOPE }, { deadline = 1 })
    assert.is_nil(res)
    assert.equal(503, err.status) -- the backoff (at least 2.5 s) would end past the deadline
    assert.equal(1, err.attempts)
    assert.is_true(core.now() - t0 < 1)
    sb:faults { { type = "hang", max = 3, path = "^/partner/customers$", times = 1 } }
    local fresh <close> = core.new { access_token = sb:token(SCOPE) } -- c's origin is paused by the 503s
    t0 = core.now()
    res, err = fresh:request({ url = url(), scope = SCOPE }, { deadline = 0.5 })
    assert.is_nil(res)
    assert.equal("timeout", err.kind)
    assert.is_true(core.now() - t0 < 1.5)
  end)

  it("stops a hung request within half a second of Ctrl-C (SIGINT to lua5.4)", function()
    sb:faults { { type = "hang", max = 20, path = "^/partner/customers$", times = 1 } }
    local script = ("local c = require('partnercustomers.core').new { access_token = %q, timeout = 20 }; " ..
      "io.stderr:write('started\\n'); c:request { url = %q, scope = %q }"):format(sb:token(SCOPE), url(), SCOPE)
    local out = os.tmpname()
    -- the interpreter in the background; SIGINT once the request hangs; the time from the signal
    -- to the interpreter's exit is what is measured
    local sh = ([[
      env -u LD_PRELOAD LUA_CPATH="./build/?.so;;" lua5.4 -e %s 2>%s &
      pid=$!
      sleep 1
      start=$(date +%%s%%N)
      kill -INT $pid
      wait $pid
      rc=$?
      echo "$rc $(( ($(date +%%s%%N) - start) / 1000000 ))"
    ]]):format(helpers.shell_quote(script), helpers.shell_quote(out))
    local p = assert(io.popen("sh -c " .. helpers.shell_quote(sh)))
    local rc, ms = p:read("a"):match("(%d+) (%d+)")
    p:close()
    local stderr = helpers.read(out)
    os.remove(out)
    assert.matches("started", stderr)
    assert.matches("interrupted", stderr)
    assert.not_equal("0", rc)
    assert.is_true(tonumber(ms) < 500, "exited " .. ms .. " ms after SIGINT")
  end)

  it("pauses every request of an origin that answered 429 until its Retry-After, and narrows its window", function()
    local t = helpers.fake_time()
    local seen = {}
    local c <close> = core.new { access_token = sb:token(SCOPE), max_parallel = 4, clock = t.clock,
      sleep = function(s) seen[#seen + 1] = { type = "sleep", wait = s }; t.sleep(s) end,
      on_event = function(e) seen[#seen + 1] = e end }
    sb:faults { { type = "status", status = 429, retry_after = 1, path = "^/partner/customers$", times = 1 } }
    local reqs = {}
    for i = 1, 12 do reqs[i] = { url = url(i), scope = SCOPE } end
    for _, r in ipairs(c:batch(reqs)) do assert.equal(200, r[1].status) end
    local pace_at, sleep_at
    for i, e in ipairs(seen) do
      if e.type == "pace" and not pace_at then pace_at = i end
      if e.type == "sleep" and pace_at and not sleep_at then sleep_at = i end
    end
    assert.is_number(pace_at)
    -- halved from what was running (slow start decides how many that was)
    assert.is_true(seen[pace_at].window < 4, "window " .. seen[pace_at].window)
    assert.equal("throttled", seen[pace_at].reason)
    assert.is_true(seen[sleep_at].wait >= 0.99)
    -- between the 429 and the pause's end, only the transfers already running may finish
    local finished = 0
    for i = pace_at + 1, sleep_at - 1 do
      if seen[i].type == "request" then finished = finished + 1 end
    end
    assert.is_true(finished <= 3, finished .. " requests ran during the pause")
  end)

  it("learns the rate an origin grants from its throttling answers, and paces to it", function()
    local t = helpers.fake_time()
    local seen, sleeps_after = {}, nil
    local c <close> = core.new { access_token = sb:token(SCOPE), max_parallel = 1, clock = t.clock,
      sleep = function(s)
        if sleeps_after then sleeps_after[#sleeps_after + 1] = s end
        t.sleep(s)
      end,
      on_event = function(e)
        seen[#seen + 1] = e
        if e.type == "pace" and e.rate then sleeps_after = sleeps_after or {} end
      end }
    -- 4 clean answers, then a 429 asking for 1 s: the first time, the server's bucket counts as
    -- what it gathers during the pause, so 4 answers over 1 s (the clock stands still between
    -- answers): 4/s, of which 97 % is used
    sb:faults { { type = "status", status = 429, retry_after = 1, path = "^/partner/customers$", after = 4 } }
    local reqs = {}
    for i = 1, 12 do reqs[i] = { url = url(i), scope = SCOPE } end
    for _, r in ipairs(c:batch(reqs)) do assert.equal(200, r[1].status) end
    local pace
    for _, e in ipairs(seen) do if e.type == "pace" and e.rate then pace = e end end
    assert.is_table(pace, "no pace event with a rate")
    assert.equal("throttled: rate learned", pace.reason)
    assert.near(4 * 0.97, pace.rate, 1e-6)
    -- the pause (1 s), then what the bucket gathered during it (3.88 requests) at once, then one
    -- request each 1 / 3.88 s
    assert.near(1, sleeps_after[1], 1e-6)
    local paced = 0
    for i = 2, #sleeps_after do
      assert.is_true(sleeps_after[i] <= 1 / pace.rate + 1e-6, "slept " .. sleeps_after[i])
      paced = paced + sleeps_after[i]
    end
    -- 8 requests after the pause: 3 from the bucket, 5 more at the rate (less the bucket's 0.88)
    assert.near((5 - 0.88) / pace.rate, paced, 0.01)
  end)

  it("redacts the client's secrets in a table the Lua layer builds", function()
    local secret = "s3cr3t-Value+/="
    local c <close> = core.new { client_credentials = { token_url = sb.token_url, client_id = "id", client_secret = secret } }
    local t = c:redact { message = "echo " .. secret, request_id = secret, n = 5 }
    assert.equal("echo [redacted]", t.message)
    assert.not_matches(secret, t.request_id, 1, true)
    assert.equal(5, t.n)
  end)
end)

describe("a successful answer's headers", function()
  local rawpeer = require "spec.helpers.rawpeer"
  local pc = require "partnercustomers"

  it("never hand a secret to the errors the Lua layer builds from them", function()
    local peer <close> = rawpeer.start()
    local token = "issued-Token-4f2a9c77"
    peer:script {
      token = { rawpeer.json(200, ('{"access_token":"%s","expires_in":3600}'):format(token)) },
      api = { rawpeer.json(200, '{"value": "not an array"}',
                           { "MS-RequestId: " .. token, "MS-CorrelationId: x-" .. token, "MS-CV: " .. token }) },
    }
    local ave = pc.avepoint { client_id = "id", client_secret = "secret-Value-93", base_url = peer.url,
                              token_url = peer.url .. "/token", max_retries = 0 }
    local res, err = ave:customers()
    assert.is_nil(res)
    assert.equal("protocol", err.kind)
    for k, v in pairs(err) do
      if type(v) == "string" then assert.not_matches(token, v, 1, true, k) end
    end
    assert.not_matches(token, tostring(err), 1, true)
  end)
end)
