-- Calls inside a host's event loop, against real HTTP on 127.0.0.1: cqueues, with the sandbox
-- serving in the same loop (one process, one thread: a call that blocked would starve the
-- sandbox and never end), a plain coroutine scheduler (cooperative = true), and luv, with the
-- sandbox in a child process. Waits on a clock are tested with an injected clock and sleep.
local cqueues = require "cqueues"
local pc = require "partnercustomers"
local serve_on = require("partnercustomers.sandbox").serve_on
local sandbox = require "spec.helpers.sandbox"
local helpers = require "spec.helpers.util"
local ids_of, fake_time = helpers.ids_of, helpers.fake_time

local V3 = "^/partner/external/v3/"

-- Runs each function of `threads` in a coroutine of cq until all have returned; gives what each
-- returned (packed). An error in one propagates.
local function run_loop(cq, threads)
  local left, results = #threads, {}
  for i, f in ipairs(threads) do
    cq:wrap(function()
      results[i] = table.pack(f())
      left = left - 1
    end)
  end
  local give_up = cqueues.monotime() + 60
  while left > 0 do
    assert(cqueues.monotime() < give_up, "the loop did not finish")
    local ok, err = cq:step(0.5)
    if not ok then error(err, 0) end
  end
  return results
end

local function avepoint(sb, opts)
  local o = { client_id = sb.client_id, client_secret = sb.client_secret, base_url = sb.url,
              token_url = sb.token_url, wait = cqueues.poll }
  for k, v in pairs(opts or {}) do o[k] = v end
  return pc.avepoint(o)
end

-- Whether the entries of `a` and of `b` in `log` overlap in time: each starts before the other ends.
local function interleaved(log, a, b)
  local first, last = {}, {}
  for i, name in ipairs(log) do
    first[name] = first[name] or i
    last[name] = i
  end
  return first[a] ~= nil and first[b] ~= nil and first[a] < last[b] and first[b] < last[a]
end

describe("inside a cqueues loop", function()
  local cq, sb
  before_each(function()
    cq = cqueues.new()
    sb = assert(serve_on(cq, { count = 40, quiet = true }))
  end)
  after_each(function() sb.stop() end)

  it("runs a call while the sandbox serves in the same thread, waiting on one descriptor per client", function()
    local fds, events = {}, {}
    local function wait(w)
      fds[#fds + 1] = w:pollfd()
      events[w:events()] = true
      assert.is_true(w:timeout() >= 0)
      return cqueues.poll(w)
    end
    local r = run_loop(cq, { function()
      local ave <close> = avepoint(sb, { wait = wait })
      local all = assert(ave:all_customers { page_size = 7, parallel = 3 })
      local one = assert(ave:customer_page(1, 40))
      return ids_of(all), ids_of(one.customers)
    end })
    assert.equal(40, #r[1][1])
    assert.same(r[1][2], r[1][1]) -- the service's order, whatever order the pages came in
    assert.is_true(#fds > 0)
    assert.equal("integer", math.type(fds[1]))
    for _, fd in ipairs(fds) do assert.equal(fds[1], fd) end
    assert.same({ r = true }, events)
  end)

  it("waits as long as slow start holds the next request, never zero seconds over and over", function()
    -- the pages after the first start as slow start allows (real milliseconds): the wait object
    -- must say how long, or the loop would wake without pause until then
    local waits, zeros = 0, 0
    local function wait(w)
      waits = waits + 1
      if w:timeout() == 0 then zeros = zeros + 1 end
      return cqueues.poll(w)
    end
    local r = run_loop(cq, { function()
      local ave <close> = avepoint(sb, { wait = wait })
      return #assert(ave:all_customers { page_size = 5, parallel = 8 })
    end })
    assert.equal(40, r[1][1])
    -- 1 token and 8 pages: a few waits each, and a zero one only when libcurl's timer is due
    assert.is_true(waits <= 60, waits .. " waits")
    assert.is_true(zeros <= 9, zeros .. " waits of zero seconds")
  end)

  it("interleaves two clients and a timer", function()
    sb.faults { { type = "slow", delay = 0.03, path = V3, times = -1 } }
    local log, left = {}, 2
    local function client(name)
      return function()
        local ave <close> = avepoint(sb, { on_event = function(ev)
          if ev.type == "request" then log[#log + 1] = name end
        end })
        local all = assert(ave:all_customers { page_size = 10, parallel = 2 })
        left = left - 1
        return #all
      end
    end
    local function timer()
      local ticks = 0
      while left > 0 do
        cqueues.sleep(0.005)
        log[#log + 1] = "t"
        ticks = ticks + 1
      end
      return ticks
    end
    local r = run_loop(cq, { client "a", client "b", timer })
    assert.equal(40, r[1][1])
    assert.equal(40, r[2][1])
    assert.is_true(interleaved(log, "a", "b"), table.concat(log, " "))
    assert.is_true(interleaved(log, "a", "t"), table.concat(log, " "))
    assert.is_true(interleaved(log, "b", "t"), table.concat(log, " "))
  end)

  it("lets on_event, progress, token and sleep yield, with the clock injected", function()
    sb.faults { { type = "status", status = 503, retry_after = 1, path = V3, times = 1 } }
    local t, yields, kinds = fake_time(), 0, {}
    local function yielding(kind, f)
      return function(...)
        kinds[kind] = true
        cqueues.sleep(0) -- a yield to the loop, inside the hook
        yields = yields + 1
        return f(...)
      end
    end
    local r = run_loop(cq, { function()
      local ave <close> = pc.avepoint {
        base_url = sb.url, wait = cqueues.poll, clock = t.clock,
        token = yielding("token", function(scope) return sb.service:issue(scope), 3600 end),
        on_event = yielding("on_event", function() end),
        sleep = yielding("sleep", t.sleep),
      }
      local all = assert(ave:all_customers {
        page_size = 10, parallel = 2, progress = yielding("progress", function() end) })
      return #all
    end })
    assert.equal(40, r[1][1])
    assert.same({ 1 }, t.sleeps) -- the Retry-After, through the sleep hook
    assert.same({ token = true, on_event = true, sleep = true, progress = true }, kinds)
    assert.is_true(yields > 4)
  end)

  it("expresses a Retry-After pause through w:timeout() when no sleep hook is given", function()
    sb.faults { { type = "status", status = 503, retry_after = 0.2, path = V3, times = 1 } }
    local t, retried, pause = fake_time(), false, nil
    local r = run_loop(cq, { function()
      local ave <close> = avepoint(sb, {
        clock = t.clock, -- time moves only by what each wait asked for
        wait = function(w)
          if retried and not pause then pause = w:timeout() end -- the first wait after the 503
          cqueues.poll(w)
          t.now = t.now + w:timeout()
        end,
        on_event = function(ev) retried = retried or ev.type == "retry" end,
      })
      return #assert(ave:customer_page(1, 10)).customers
    end })
    assert.equal(10, r[1][1])
    assert.is_true(retried)
    -- the backoff: 0.25 to 0.5 s with its jitter, longer than the Retry-After
    assert.is_true(pause >= 0.25 and pause <= 0.5, tostring(pause))
  end)

  it("lets on_refresh_token yield, and makes it before the new access token is used", function()
    local log, saved = {}, {}
    local first = sb.refresh_token()
    local r = run_loop(cq, { function()
      local mpc <close> = pc.partnercenter {
        client_id = sb.client_id, refresh_token = first, token_url = sb.pc_token_url,
        base_url = sb.url, wait = cqueues.poll,
        on_refresh_token = function(new)
          cqueues.sleep(0)
          saved[#saved + 1] = new
          log[#log + 1] = "refresh"
        end,
        on_event = function(ev)
          if ev.type == "request" then log[#log + 1] = ev.url:find("/v1/", 1, true) and "api" or "token" end
        end,
      }
      local customers = assert(mpc:customers { page_size = 20 })
      local ids = {}
      for i = 1, 3 do ids[i] = customers[i].companyProfile.tenantId end
      local done = 0
      local results, errors = mpc:organizations(ids, { parallel = 2, progress = function(n)
        cqueues.sleep(0)
        done = n
      end })
      local answered = 0
      for _ in pairs(results) do answered = answered + 1 end
      for _ in pairs(errors) do answered = answered + 1 end
      return #customers, answered, done
    end })
    assert.is_true(r[1][1] > 3)
    assert.equal(3, r[1][2])
    assert.equal(3, r[1][3])
    assert.equal(1, #saved)
    assert.is_string(saved[1])
    assert.not_equal(first, saved[1])
    assert.same({ "token", "refresh", "api" }, { log[1], log[2], log[3] })
  end)

  it("abandons a call whose hook raises, and the client and the loop go on", function()
    sb.faults { { type = "slow", delay = 0.02, path = V3, times = -1 } }
    local raise = true
    local r = run_loop(cq, {
      function()
        local ave <close> = avepoint(sb, { on_event = function(ev)
          if raise and ev.type == "request" and ev.url:find("v3", 1, true) then error("hook failed", 0) end
        end })
        local ok, err = pcall(ave.all_customers, ave, { page_size = 5, parallel = 4 })
        raise = false
        local again = assert(ave:all_customers { page_size = 5, parallel = 4 })
        return ok, err, #again
      end,
      function()
        local ave <close> = avepoint(sb)
        return #assert(ave:all_customers { page_size = 4, parallel = 3 })
      end,
    })
    assert.is_false(r[1][1])
    assert.equal("hook failed", r[1][2])
    assert.equal(40, r[1][3])
    assert.equal(40, r[2][1])
  end)

  it("makes a token provider that raises inside the loop an auth error, as a blocking call does", function()
    local r = run_loop(cq, { function()
      local ave <close> = pc.avepoint { base_url = sb.url, wait = cqueues.poll, token = function()
        cqueues.sleep(0)
        error("vault down", 0)
      end }
      return ave:customer_page(1, 5)
    end })
    assert.is_nil(r[1][1])
    assert.equal("auth", r[1][2].kind)
    assert.equal("token provider failed: vault down", r[1][2].message)
  end)

  it("abandons a call whose wait function raises", function()
    local failing = true
    local r = run_loop(cq, { function()
      local ave <close> = avepoint(sb, { wait = function(w)
        if failing then error({ reason = "stop waiting" }) end
        return cqueues.poll(w)
      end })
      local ok, err = pcall(ave.customer_page, ave, 1, 10)
      failing = false
      return ok, err, #assert(ave:customer_page(1, 10)).customers
    end })
    assert.is_false(r[1][1])
    assert.same({ reason = "stop waiting" }, r[1][2])
    assert.equal(10, r[1][3])
  end)

  it("closes a client while another runs; a close during the client's own call is refused", function()
    sb.faults { { type = "slow", delay = 0.02, path = V3, times = -1 } }
    local long = avepoint(sb)
    local refused
    local r = run_loop(cq, {
      function() return #assert(long:all_customers { page_size = 4, parallel = 2 }) end,
      function()
        local short = avepoint(sb)
        assert(short:customer_page(1, 5))
        short:close()
        local ok, err = pcall(short.customer_page, short, 1, 5)
        cqueues.sleep(0.01)
        refused = select(2, pcall(long.close, long)) -- long is in its call
        return ok, err
      end,
    })
    assert.equal(40, r[1][1])
    assert.is_false(r[2][1])
    assert.matches("closed AvePoint client", r[2][2])
    assert.matches("is in a call", refused)
    long:close()
  end)
end)

describe("cooperative = true", function()
  local sb
  setup(function() sb = sandbox.start { count = 30 } end)
  teardown(function() sb:stop() end)

  local function client(opts)
    local o = { client_id = sb.client_id, client_secret = sb.client_secret, base_url = sb.url,
                token_url = sb.token_url, cooperative = true }
    for k, v in pairs(opts or {}) do o[k] = v end
    return pc.avepoint(o)
  end

  -- Resumes co until it ends, polling each wait object it yields; returns its results and the
  -- number of waits.
  local function drive(co)
    local waits = 0
    while true do
      local r = table.pack(coroutine.resume(co))
      assert(r[1], r[2])
      if coroutine.status(co) == "dead" then return table.unpack(r, 2, r.n), waits end
      waits = waits + 1
      assert.equal("r", r[2]:events())
      cqueues.poll(r[2]) -- not inside a cqueues loop: a blocking poll on the descriptor
    end
  end

  it("yields each wait object to the coroutine's scheduler", function()
    local ave <close> = client()
    local all, waits = drive(coroutine.create(function() return ave:all_customers { page_size = 7 } end))
    assert.equal(30, #all)
    assert.is_true(waits > 0)
  end)

  it("blocks on the main thread", function()
    local ave <close> = client()
    assert.equal(30, #assert(ave:all_customers { page_size = 7 }))
  end)

  it("waits on the client's clock through its sleep hook, as a blocking call does", function()
    local function sleeps(cooperative)
      sb:faults { { type = "status", status = 503, retry_after = 2, path = V3, times = 1 } }
      local t = fake_time()
      local ave <close> = client { clock = t.clock, sleep = t.sleep, cooperative = cooperative }
      local page
      if cooperative then
        page = drive(coroutine.create(function() return ave:customer_page(1, 10) end))
      else
        page = ave:customer_page(1, 10)
      end
      assert.equal(10, #assert(page).customers)
      return t.sleeps
    end
    assert.same({ 2 }, sleeps(false))
    assert.same({ 2 }, sleeps(true))
  end)

  it("leaves the client idle when a suspended call is dropped and collected", function()
    local ave <close> = client()
    local co = coroutine.create(function() return ave:all_customers { page_size = 5 } end)
    assert.is_true(coroutine.resume(co)) -- suspended in its first wait
    assert.equal("suspended", coroutine.status(co))
    co = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    assert.equal(30, #assert(ave:all_customers { page_size = 5 }))
    ave:close() -- the dropped call no longer counts as running
  end)
end)

describe("inside a luv loop", function()
  local uv = require "luv"
  local sb
  setup(function() sb = sandbox.start { count = 30 } end)
  teardown(function() sb:stop() end)

  -- The README's adapter: a poll handle on the descriptor and a timer for the timeout, resuming
  -- the waiting coroutine from whichever fires first.
  local function luv_wait(w)
    local co = coroutine.running()
    local poll, timer = uv.new_poll(w:pollfd()), uv.new_timer()
    local function wake()
      if poll:is_closing() then return end
      poll:close()
      timer:close()
      assert(coroutine.resume(co))
    end
    poll:start(w:events(), wake)
    timer:start(math.ceil((w:timeout() or 1) * 1000), 0, wake)
    coroutine.yield()
  end

  it("runs two clients and a timer in one loop", function()
    sb:faults { { type = "slow", delay = 0.03, path = V3, times = -1 } }
    local log, results, left = {}, {}, 2
    for i, name in ipairs { "a", "b" } do
      coroutine.wrap(function()
        local ave <close> = pc.avepoint {
          client_id = sb.client_id, client_secret = sb.client_secret, base_url = sb.url,
          token_url = sb.token_url, wait = luv_wait,
          on_event = function(ev) if ev.type == "request" then log[#log + 1] = name end end,
        }
        results[i] = #assert(ave:all_customers { page_size = 10, parallel = 2 })
        left = left - 1
      end)()
    end
    local timer = uv.new_timer()
    timer:start(5, 5, function()
      log[#log + 1] = "t"
      if left == 0 then timer:close() end
    end)
    uv.run()
    assert.same({ 30, 30 }, results)
    assert.is_true(interleaved(log, "a", "b"), table.concat(log, " "))
    assert.is_true(interleaved(log, "a", "t"), table.concat(log, " "))
  end)
end)
