-- Concurrent, ordered, bounded paging against the real sandbox (real HTTP on 127.0.0.1, real
-- time): all_customers in one batch after page 1, speculative pages without totalCount, the
-- iterators' prefetch bound, Partner Center lookups in one sliding window, parallel above
-- max_parallel as misuse, and deadlines. Concurrency is counted in the sandbox's log (each
-- request's arrival `time` and `answered`), not guessed from wall times; the few wall-time checks
-- are generous.
local pc = require "partnercustomers"
local report = require "partnercustomers.report"
local sandbox = require "spec.helpers.sandbox"
local helpers = require "spec.helpers.util"
local ids_of, assert_error, fake_time = helpers.ids_of, helpers.assert_error, helpers.fake_time
local now = require("partnercustomers.core").now

local V3 = "/partner/external/v3/general/customers"
local V3_PATH = "^" .. V3:gsub("%p", "%%%0") .. "$"
local ORG_PATH = "^/v1/customers/[^/]+/organization$"
local COUNT = 80

-- The log entries of requests to paths matching `pattern`, in arrival order.
local function entries(log, pattern)
  local out = {}
  for _, e in ipairs(log) do
    if e.path:find(pattern) then out[#out + 1] = e end
  end
  return out
end

-- The most requests that were in the server at once: arrivals count up, answers down (an answer
-- and an arrival in the same millisecond: the answer first).
local function max_in_flight(list)
  local marks = {}
  for _, e in ipairs(list) do
    assert.is_number(e.answered, "a request still in the server")
    marks[#marks + 1] = { e.time, 1 }
    marks[#marks + 1] = { e.answered, -1 }
  end
  table.sort(marks, function(a, b) return a[1] < b[1] or a[1] == b[1] and a[2] < b[2] end)
  local n, most = 0, 0
  for _, m in ipairs(marks) do
    n = n + m[2]
    most = math.max(most, n)
  end
  return most
end

local function page_index_of(e) return tonumber(e.query:match("pageIndex=(%d+)")) end

-- `n` slow rules for the requests matching `path`, after the first `after` of them, taken in
-- arrival order: delays[1] for the first, and so on.
local function slow_rules(path, after, delays)
  local rules = {}
  for i, d in ipairs(delays) do
    rules[i] = { type = "slow", delay = d, path = path, times = 1, after = after }
  end
  return rules
end

describe("concurrent paging", function()
  local sb, expected, ok_ids

  setup(function()
    sb = sandbox.start { count = COUNT, seed = 3 }
    expected = sb:customers()
    local orgs = sb:pc_organizations()
    ok_ids = {}
    for _, c in ipairs(expected) do
      for _, t in ipairs(c.tenants) do
        if orgs[t.id].status == 200 then ok_ids[#ok_ids + 1] = t.id end
      end
    end
    assert.truthy(#ok_ids >= 24)
  end)
  teardown(function() sb:stop() end)

  before_each(function()
    sb:faults {}
    sb:clear_log()
  end)

  local events
  local function options(extra)
    events = {}
    local o = {
      client_id = sb.client_id, client_secret = sb.client_secret, base_url = sb.url,
      timeout = 10, connect_timeout = 2, max_retries = 0,
      on_event = function(ev) events[#events + 1] = ev end,
    }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end
  local function ave_client(extra)
    local o = options(extra)
    o.token_url = o.token_url or sb.token_url
    return pc.avepoint(o)
  end
  local function pc_client(extra)
    local o = options(extra)
    o.tenant, o.token_url = sb.pc_tenant, sb.pc_token_url_v2
    return pc.partnercenter(o)
  end
  local function count_events(kind, pattern)
    local n = 0
    for _, ev in ipairs(events) do
      if ev.type == kind and (not pattern or ev.url:find(pattern)) then n = n + 1 end
    end
    return n
  end

  describe("all_customers{parallel = n}", function()
    it("fetches page 1, then every other page in one sliding window, in the service's order", function()
      -- the first page after page 1 is answered after 1 s, every other one after 0.1 s: one
      -- sliding window of 4 runs the 15 others on 3 slots meanwhile; waves of 4 could not
      local rules = slow_rules(V3_PATH, 1, { 1.0 })
      rules[2] = { type = "slow", delay = 0.1, path = V3_PATH, times = -1 }
      sb:faults(rules)
      local ave <close> = ave_client()
      local progress = {}
      local list = assert(ave:all_customers { page_size = 5, parallel = 4, progress = function(d, t)
        progress[#progress + 1] = { d, t }
      end })
      assert.same(ids_of(expected), ids_of(list))
      for i, call in ipairs(progress) do assert.same({ i, 16 }, call) end
      assert.equal(16, #progress)
      local pages = {}
      for _, ev in ipairs(events) do
        if ev.type == "page" then pages[#pages + 1] = ev.page_index end
      end
      assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 }, pages)

      local reqs = entries(sb:log(), V3_PATH)
      assert.equal(16, #reqs)
      assert.equal(1, page_index_of(reqs[1]))
      assert.is_true(reqs[2].time >= reqs[1].answered, "page 1 comes first, alone")
      local slow
      for _, e in ipairs(reqs) do
        if e.fault == "slow" and e.answered - e.time > 0.9 then slow = e end
      end
      assert.truthy(slow)
      for _, e in ipairs(reqs) do
        if e ~= slow and e ~= reqs[1] then
          assert.is_true(e.time < slow.answered, "page " .. page_index_of(e) .. " waited for a whole wave")
        end
      end
      local most = max_in_flight(reqs)
      assert.is_true(most <= 4, "more than parallel = 4 requests at once: " .. most)
      assert.is_true(most >= 3, "at most " .. most .. " requests at once")
    end)

    it("keeps the service's order when later pages are answered first", function()
      -- in arrival order after page 1: 0.6 s, 0.45 s, 0.3 s, 0.15 s, then none
      sb:faults(slow_rules(V3_PATH, 1, { 0.6, 0.45, 0.3, 0.15 }))
      local ave <close> = ave_client()
      local list = assert(ave:all_customers { page_size = 10, parallel = 8 })
      assert.same(ids_of(expected), ids_of(list))
      local answered = {}
      for _, e in ipairs(entries(sb:log(), V3_PATH)) do answered[page_index_of(e)] = e.answered end
      local reversed = false
      for i = 2, 7 do
        for j = i + 1, 8 do reversed = reversed or answered[j] < answered[i] end
      end
      assert.is_true(reversed, "every page was answered in order: the test proves nothing")
    end)

    it("runs 8 slow pages at once with parallel 8", function()
      sb:faults { { type = "slow", delay = 0.3, path = V3_PATH, times = -1 } }
      local ave <close> = ave_client()
      local t0 = now()
      local list = assert(ave:all_customers { page_size = 9, parallel = 8 }) -- 9 pages: 1, then 8
      local elapsed = now() - t0
      assert.same(ids_of(expected), ids_of(list))
      local reqs = entries(sb:log(), V3_PATH)
      assert.equal(9, #reqs)
      local most = max_in_flight(reqs)
      assert.is_true(most >= 6 and most <= 8, "in the server at once: " .. most)
      -- one after another: 9 x 0.3 s = 2.7 s; page 1, then one wave: 0.6 s
      assert.is_true(elapsed < 1.8, ("9 pages of 0.3 s took %.2f s"):format(elapsed))
    end)

    it("without totalCount, fetches `parallel` pages at a time and drops those past the end", function()
      sb:faults { { type = "no_total", times = -1 } }
      local ave <close> = ave_client()
      -- 80 customers in pages of 12: six full pages, a short seventh; fetched as 1, 2-5, 6-9
      local list = assert(ave:all_customers { page_size = 12, parallel = 4 })
      assert.same(ids_of(expected), ids_of(list))
      local reqs = entries(sb:log(), V3_PATH)
      assert.equal(9, #reqs)
      local asked = {}
      for _, e in ipairs(reqs) do asked[page_index_of(e)] = true end
      for i = 1, 9 do assert.is_true(asked[i], "page " .. i) end
      assert.is_true(max_in_flight(reqs) <= 4)
      local pages = 0
      for _, ev in ipairs(events) do
        if ev.type == "page" then
          pages = pages + 1
          assert.is_nil(ev.total_count)
        end
      end
      assert.equal(7, pages) -- pages 8 and 9 (empty, past the end) are never given

      -- an empty page ends it the same way: 80 in pages of 10, eight full, the ninth empty
      sb:clear_log()
      list = assert(ave:all_customers { page_size = 10, parallel = 3 }) -- 1, 2-4, 5-7, 8-10
      assert.same(ids_of(expected), ids_of(list))
      assert.equal(10, #entries(sb:log(), V3_PATH))
    end)

    it("asks for batches that double, so a wrong totalCount costs few requests", function()
      sb:faults { { type = "wrong_total", total = 1000000, times = -1 } }
      local ave <close> = ave_client()
      -- 100,000 pages announced, 8 there: page 1, then 8 x parallel pages; page 9 is empty
      local list = assert(ave:all_customers { page_size = 10, parallel = 2 })
      assert.same(ids_of(expected), ids_of(list))
      assert.equal(1 + 16, #entries(sb:log(), V3_PATH))
      -- 80 pages of one: 1, 2-17 (16), 18-35 (17 rounded up to a multiple of parallel = 2: 18),
      -- 36-71 (36), 72-80 (what is left)
      sb:faults {}
      sb:clear_log()
      local batches, last = {}, 0
      local small <close> = ave_client { on_event = function(ev)
        if ev.type == "request" and ev.url:find(V3, 1, true) then
          last = last + 1
        elseif ev.type == "page" and last > 0 then
          batches[#batches + 1], last = last, 0
        end
      end }
      assert.same(ids_of(expected), ids_of(assert(small:all_customers { page_size = 1, parallel = 2 })))
      assert.same({ 1, 16, 18, 36, 9 }, batches)
    end)

    it("keeps the pager's guards for pages fetched together", function()
      sb:faults { { type = "repeat_page", times = -1 } }
      local ave <close> = ave_client()
      local list, err = ave:all_customers { page_size = 10, parallel = 4 }
      assert.is_nil(list)
      assert_error(err, "protocol")
      assert.matches("page 2 brings no new customer", err.message)
      assert.matches("pageIndex=2&", err.url)
    end)

    it("asks for no page past max_pages", function()
      local ave <close> = ave_client()
      local list, err = ave:all_customers { page_size = 10, parallel = 8, max_pages = 3 }
      assert.is_nil(list)
      assert_error(err, "limit")
      assert.equal(3, #entries(sb:log(), V3_PATH))
    end)
  end)

  describe("pages and each_customer{prefetch = n}", function()
    -- Walks `iterate` (a pages or each_customer iterator given as a function that returns the
    -- next page's customers, or nil), checking after each page that no more than `prefetch`
    -- pages were asked for beyond the ones given. Returns the customers and the most pages that
    -- were ahead at one time.
    local function walk(next_page, prefetch)
      local got, given, ahead = {}, 0, 0
      while true do
        local customers = next_page()
        if customers == nil then break end
        given = given + 1
        local asked = count_events("request", V3 .. "%?")
        ahead = math.max(ahead, asked - given)
        assert.is_true(asked - given <= prefetch,
          ("%d pages asked for when page %d was given, prefetch %d"):format(asked, given, prefetch))
        table.move(customers, 1, #customers, #got + 1, got)
      end
      return got, ahead
    end

    it("fetch at most prefetch pages ahead of the caller, in order", function()
      sb:faults { { type = "slow", delay = 0.05, path = V3_PATH, times = -1 } }
      for _, prefetch in ipairs { 0, 1, 3 } do
        local ave <close> = ave_client()
        local it = ave:pages { page_size = 5, prefetch = prefetch } -- 16 pages
        local got, ahead = walk(function()
          local page = it()
          return page and page.customers
        end, prefetch)
        assert.same(ids_of(expected), ids_of(got))
        assert.equal(prefetch, ahead) -- it did fetch ahead, as far as allowed
        local reqs = entries(sb:log(), V3_PATH)
        assert.equal(16, #reqs) -- totalCount bounds the batches: no page past the end
        assert.is_true(max_in_flight(reqs) <= prefetch + 1)
        if prefetch == 3 then assert.is_true(max_in_flight(reqs) >= 3) end
        sb:clear_log()
      end
    end)

    it("each_customer holds the same bound", function()
      local ave <close> = ave_client()
      local it = ave:each_customer { page_size = 5, prefetch = 2 }
      local got, ahead = {}, 0
      while true do
        local c = it()
        if c == nil then break end
        got[#got + 1] = c
        if #got % 5 == 1 then -- the first customer of a page
          ahead = math.max(ahead, count_events("request", V3 .. "%?") - count_events("page"))
        end
      end
      assert.same(ids_of(expected), ids_of(got))
      assert.equal(2, ahead)
      assert.is_true(count_events("request", V3 .. "%?") - count_events("page") <= 2)
    end)

    it("drop the pages fetched past the end without totalCount", function()
      sb:faults { { type = "no_total", times = -1 } }
      local ave <close> = ave_client()
      local got = {}
      -- pages of 10: 1, then 2-4, 5-7, 8-10; page 9 is empty, page 10 is dropped
      for c in ave:each_customer { page_size = 10 } do got[#got + 1] = c end
      assert.same(ids_of(expected), ids_of(got))
      assert.equal(10, #entries(sb:log(), V3_PATH))
      assert.equal(9, count_events("page")) -- eight pages and the empty one that ends it
    end)

    it("refuse a prefetch out of 0..64", function()
      local ave <close> = ave_client()
      for _, bad in ipairs { -1, 65, 1.5, "2" } do
        local ok, err = pcall(ave.pages, ave, { prefetch = bad })
        assert.is_false(ok)
        assert.matches("option 'prefetch' must be an integer from 0 to 64", err)
      end
    end)
  end)

  describe("Partner Center organizations", function()
    it("look every id up in one sliding window", function()
      local ids = { table.unpack(ok_ids, 1, 24) }
      -- the first lookup takes 1 s, the others 0.1 s: the other 23 run on the free slots meanwhile
      local rules = slow_rules(ORG_PATH, 0, { 1.0 })
      rules[2] = { type = "slow", delay = 0.1, path = ORG_PATH, times = -1 }
      sb:faults(rules)
      local mpc <close> = pc_client { max_parallel = 4 }
      local results, errors = mpc:organizations(ids, { parallel = 4 })
      assert.same({}, errors)
      for _, id in ipairs(ids) do assert.is_table(results[id]) end
      local reqs = entries(sb:log(), ORG_PATH)
      assert.equal(24, #reqs)
      local slow = reqs[1]
      assert.is_true(slow.answered - slow.time > 0.9)
      for i = 2, 24 do assert.is_true(reqs[i].time < slow.answered, "lookup " .. i .. " waited") end
      local most = max_in_flight(reqs)
      assert.is_true(most <= 4 and most >= 3, "in flight at once: " .. most)
    end)

    it("with progress, in windows of 8 x parallel, progress in order", function()
      local ids = { table.unpack(ok_ids, 1, 20) }
      local mpc <close> = pc_client()
      local calls, requests_then = {}, {}
      local results = mpc:organizations(ids, { parallel = 2, progress = function(d, t)
        calls[#calls + 1] = { d, t }
        requests_then[d] = count_events("request", "/organization$")
      end })
      for i, call in ipairs(calls) do assert.same({ i, 20 }, call) end
      assert.equal(20, #calls)
      assert.equal(16, requests_then[1]) -- a window of 16 ids before the first progress call
      assert.equal(20, requests_then[17])
      for _, id in ipairs(ids) do assert.is_table(results[id]) end
    end)
  end)

  describe("parallel above max_parallel", function()
    -- Asserts that f raises a partnercustomers misuse message at this spec's line, with needle.
    local function raises(f, needle)
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.equal("string", type(err))
      assert.matches("paging_concurrency_spec%.lua:%d+: partnercustomers: ", err)
      assert.truthy(err:find(needle, 1, true), err)
    end

    it("is misuse at the caller's line, never a silent cap", function()
      local ave <close> = ave_client()
      raises(function() ave:all_customers { parallel = 9 } end,
             "all_customers: option 'parallel' must be at most the client's max_parallel, 8 (got 9)")
      local small <close> = ave_client { max_parallel = 4 }
      raises(function() small:all_customers { parallel = 5 } end, "max_parallel, 4 (got 5)")
      local mpc <close> = pc_client { max_parallel = 2 }
      raises(function() mpc:organizations(ok_ids, { parallel = 3 }) end,
             "organizations: option 'parallel' must be at most the client's max_parallel, 2 (got 3)")
      raises(function() report.rows(ave, mpc, { parallel = 3 }) end,
             "report.rows: option 'parallel' must be at most the client's max_parallel, 2 (got 3)")
      assert.same({}, sb:log()) -- nothing was sent
      -- up to max_parallel is fine; without parallel, the client's max_parallel is used
      assert.equal(COUNT, #assert(small:all_customers { parallel = 4, page_size = 10 }))
      assert.equal(COUNT, #assert(small:all_customers { page_size = 10 }))
      assert.is_true(max_in_flight(entries(sb:log(), V3_PATH)) <= 4)
    end)
  end)

  describe("deadline", function()
    it("ends a slow all_customers with a timeout error, on time", function()
      sb:faults { { type = "slow", delay = 0.5, path = V3_PATH, times = -1 } }
      local ave <close> = ave_client()
      local t0 = now()
      -- page 1 at 0.5 s, pages 2 and 3 would end at 1.0 s: past the deadline
      local list, err = ave:all_customers { page_size = 10, parallel = 2, deadline = 0.8 }
      local elapsed = now() - t0
      assert.is_nil(list)
      assert_error(err, "timeout", sb.client_secret)
      assert.is_true(elapsed < 1.6, ("ended after %.2f s"):format(elapsed))
    end)

    it("ends the iterators and the OData listing with a timeout error", function()
      sb:faults { { type = "slow", delay = 0.4, path = V3_PATH, times = -1 },
                  { type = "slow", delay = 0.4, path = "^/partner/customers$", times = -1 } }
      local ave <close> = ave_client()
      local n, t0 = 0, now()
      local ok, err = pcall(function()
        for _ in ave:each_customer { page_size = 10, prefetch = 1, deadline = 1 } do n = n + 1 end
      end)
      assert.is_false(ok)
      assert_error(err, "timeout")
      assert.is_true(n >= 10 and n < COUNT, "customers given: " .. n)
      assert.is_true(now() - t0 < 2)
      -- /partner/customers: pages of 100 in the sandbox's OData size (default 100): one page;
      -- a deadline shorter than it
      local list
      list, err = ave:customers { deadline = 0.2 }
      assert.is_nil(list)
      assert_error(err, "timeout")
    end)

    it("fails the lookups that cannot end in time, keeping those done", function()
      sb:faults { { type = "slow", delay = 0.6, path = ORG_PATH, times = -1 } }
      local ids = { table.unpack(ok_ids, 1, 10) }
      local mpc <close> = pc_client { max_parallel = 2 }
      local t0 = now()
      local results, errors = mpc:organizations(ids, { deadline = 1.0 })
      assert.is_true(now() - t0 < 2)
      local found, timed_out = 0, 0
      for _ in pairs(results) do found = found + 1 end
      for _, e in pairs(errors) do
        assert_error(e, "timeout")
        timed_out = timed_out + 1
      end
      assert.equal(2, found) -- the first two, at 0.6 s; the next two would end at 1.2 s
      assert.equal(8, timed_out)
    end)

    it("ends a listing between two calls with a timeout error once it has passed", function()
      -- the injected clock jumps 10 s when a page is given: the next page is never asked for
      local time = fake_time()
      local ave <close> = ave_client { clock = time.clock, sleep = time.sleep }
      events = setmetatable({}, { __newindex = function(t, k, ev)
        rawset(t, k, ev)
        if ev.type == "page" then time.now = time.now + 10 end
      end })
      local it = ave:pages { page_size = 10, prefetch = 0, deadline = 5 }
      assert.equal(10, #it().customers)
      local ok, err = pcall(it)
      assert.is_false(ok)
      assert_error(err, "timeout")
      assert.equal(0, err.attempts)
      assert.matches("deadline of pages passed", err.message)
      assert.matches("pageIndex=2&", err.url)
      assert.equal(1, #entries(sb:log(), V3_PATH))

      local mpc <close> = pc_client { clock = time.clock, sleep = time.sleep }
      events = setmetatable({}, { __newindex = function(t, k, ev)
        rawset(t, k, ev)
        if ev.type == "page" then time.now = time.now + 10 end
      end })
      local list
      list, err = mpc:customers { page_size = 5, deadline = 5 }
      assert.is_nil(list)
      assert_error(err, "timeout")
      assert.equal(0, err.attempts)
      assert.matches("deadline of customers passed", err.message)
    end)

    it("is a number of seconds > 0 on every listing and lookup", function()
      local ave <close> = ave_client()
      local mpc <close> = pc_client()
      local calls = {
        function(d) return ave:customers { deadline = d } end,
        function(d) return ave:customer_page(1, 5, { deadline = d }) end,
        function(d) return ave:pages { deadline = d } end,
        function(d) return ave:each_customer { deadline = d } end,
        function(d) return ave:all_customers { deadline = d } end,
        function(d) return mpc:organization(ok_ids[1], { deadline = d }) end,
        function(d) return mpc:organizations(ok_ids, { deadline = d }) end,
        function(d) return mpc:customers { deadline = d } end,
        function(d) return mpc:each_customer { deadline = d } end,
        function(d) return report.rows(ave, mpc, { deadline = d }) end,
      }
      for i, call in ipairs(calls) do
        for _, bad in ipairs { 0, -1, 0 / 0, "5", 7 * 86400 + 1 } do
          local ok, err = pcall(call, bad)
          assert.is_false(ok, "call " .. i)
          assert.matches("option 'deadline' must be a number of seconds > 0", err)
        end
      end
      assert.same({}, sb:log())
    end)
  end)
end)
