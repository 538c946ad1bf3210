-- pc.avepoint against the real sandbox (spec/helpers/sandbox.lua). Time is injected: retries
-- never wait for real; only the timeout test waits, half a second.
local pc = require "partnercustomers"
local sandbox = require "spec.helpers.sandbox"
local cjson = require "cjson"

local V3 = "/partner/external/v3/general/customers"
local COUNT = 25

local helpers = require "spec.helpers.util"
local fake_time, ids_of = helpers.fake_time, helpers.ids_of

local function api_requests(log)
  local out = {}
  for _, e in ipairs(log) do
    if e.path ~= "/connect/token" then out[#out + 1] = e end
  end
  return out
end

local assert_error = require("spec.helpers.util").assert_error

describe("pc.avepoint against the sandbox", function()
  local sb, expected, time, events

  setup(function()
    sb = sandbox.start { count = COUNT, seed = 7, odata_page_size = 10 }
    expected = sb:customers() -- v3 shape, integer jobStatus, in the service's order
  end)
  teardown(function() sb:stop() end)

  before_each(function()
    sb:faults {}
    sb:clear_log()
    time, events = fake_time(), {}
  end)

  -- Whatever a test did, it never sent the POST that onboards a customer.
  after_each(function()
    for _, e in ipairs(sb:log()) do
      assert.is_false(e.onboard_attempt, "an onboarding POST was sent")
      if e.method == "POST" then
        assert.truthy(e.path == "/connect/token" or e.path == V3 .. "/batch", e.path)
      end
    end
  end)

  local function client(extra)
    local o = {
      client_id = sb.client_id, client_secret = sb.client_secret,
      base_url = sb.url, token_url = sb.token_url,
      timeout = 5, connect_timeout = 2, max_retries = 2,
      clock = time.clock, sleep = time.sleep,
      on_event = function(ev)
        events[#events + 1] = ev
        -- a paging loop that never ends fails here instead of hanging the suite
        if #events > 200 then error("runaway: more than 200 events", 0) end
      end,
    }
    for k, v in pairs(extra or {}) do o[k] = v end
    return pc.avepoint(o)
  end

  local function page_events()
    local out = {}
    for _, ev in ipairs(events) do
      if ev.type == "page" then out[#out + 1] = ev end
    end
    return out
  end

  describe("customers()", function()
    it("reads /partner/customers, following @odata.nextLink", function()
      local ave <close> = client()
      local list = assert(ave:customers())
      assert.same(ids_of(expected), ids_of(list))
      local reqs = api_requests(sb:log())
      assert.equal(3, #reqs)
      for _, e in ipairs(reqs) do
        assert.equal("GET", e.method)
        assert.equal("/partner/customers", e.path)
      end
      for i, c in ipairs(list) do
        assert.equal(pc.job_status.labels[expected[i].jobStatus], c.jobStatus)
        assert.equal(expected[i].jobStatus, c.jobStatusCode)
        assert.equal("integer", math.type(c.jobStatusCode))
        assert.equal(expected[i].organization, c.organization)
        assert.equal(expected[i].ownerEmail, c.ownerEmail) -- absent where the service sent null
      end
      assert.same({ { type = "page", page_index = 1, count = 10 },
                    { type = "page", page_index = 2, count = 10 },
                    { type = "page", page_index = 3, count = 5 } }, page_events())
    end)

    it("asks for the partner.customers.read.all scope", function()
      local ave <close> = client()
      assert(ave:customers())
      local log = sb:log()
      assert.equal("/connect/token", log[1].path)
      assert.matches("scope=partner%.customers%.read%.all", log[1].body)
      assert.not_matches(sb.client_secret, log[1].body, 1, true)
    end)

    it("refuses a next link to another host", function()
      local ave <close> = client()
      for _, link in ipairs { "http://127.0.0.2:" .. sb.port .. "/partner/customers?x=1",
                              "http://127.0.0.1:" .. (sb.port == 1 and 2 or sb.port - 1) .. "/p",
                              "https://127.0.0.1:" .. sb.port .. "/partner/customers?x=1",
                              "https://evil.example/partner/customers" } do
        sb:faults { { type = "next_link", link = link } }
        sb:clear_log()
        local list, err = ave:customers()
        assert.is_nil(list)
        assert_error(err, "protocol")
        assert.matches("nextLink", err.message)
        assert.equal("GET", err.method)
        assert.equal(sb.url .. "/partner/customers", err.url)
        assert.equal(1, #api_requests(sb:log())) -- the foreign link was never requested
      end
    end)

    it("never follows the same link twice", function()
      local ave <close> = client()
      sb:faults { { type = "next_link", link = sb.url .. "/partner/customers", times = -1 } }
      local list, err = ave:customers()
      assert.is_nil(list)
      assert_error(err, "protocol")
      assert.matches("repeats", err.message)
      assert.equal(1, #api_requests(sb:log()))
    end)

    it("ends when fresh next links bring the same page again, as a protocol error", function()
      sb:faults { { type = "stuck_next_link", times = -1 } }
      local ave <close> = client()
      local list, err = ave:customers()
      assert.is_nil(list)
      assert_error(err, "protocol")
      assert.matches("no new customer", err.message)
      assert.matches("^" .. sb.url:gsub("%p", "%%%0") .. "/partner/customers%?%$skiptoken=", err.url)
      assert.equal(2, #api_requests(sb:log()))
    end)

    it("calls a next link that cannot be requested a protocol error, never misuse", function()
      local base = sb.url .. "/partner/customers?$skiptoken="
      local cases = {
        { base .. "a b", "spaces or control characters" },
        { base .. "a\tb", "spaces or control characters" },
        { base .. "a\1b", "spaces or control characters" },
        { base .. "a\0b", "spaces or control characters" },
        { "http://user:pass@127.0.0.1:" .. sb.port .. "/partner/customers", "credentials" },
        { "http://127.0.0.1:" .. sb.port .. "000/partner/customers", "not a valid absolute URL" },
        { "ftp://127.0.0.1:" .. sb.port .. "/partner/customers", "https" },
        { base, "longer than 65536 bytes", 65536 },
        { base, "longer than 65536 bytes", 8 * 1024 * 1024 + 1 },
      }
      local ave <close> = client()
      for _, case in ipairs(cases) do
        local link, why, pad = table.unpack(case)
        sb:faults { { type = "next_link", link = link, pad = pad } }
        sb:clear_log()
        local ok, list, err = pcall(ave.customers, ave)
        assert.is_true(ok, tostring(list))
        assert.is_nil(list)
        assert_error(err, "protocol")
        assert.matches("@odata.nextLink", err.message, 1, true)
        assert.matches(why, err.message, 1, true)
        assert.equal(sb.url .. "/partner/customers", err.url)
        assert.equal(1, #api_requests(sb:log()))
      end
    end)

    it("stops at max_pages with a limit error", function()
      local ave <close> = client()
      local list, err = ave:customers { max_pages = 2 }
      assert.is_nil(list)
      assert_error(err, "limit")
      assert.matches("max_pages", err.message)
      assert.equal(2, #api_requests(sb:log()))
      assert.equal(COUNT, #assert(ave:customers { max_pages = 3 }))
    end)
  end)

  describe("customer_page()", function()
    it("GETs one v3 page", function()
      local ave <close> = client()
      local page = assert(ave:customer_page(2, 10))
      assert.equal(2, page.page_index)
      assert.equal(10, page.page_size)
      assert.equal(COUNT, page.total_count)
      assert.equal("integer", math.type(page.total_count))
      assert.same({ table.unpack(ids_of(expected), 11, 20) }, ids_of(page.customers))
      local reqs = api_requests(sb:log())
      assert.equal(1, #reqs)
      assert.equal("GET", reqs[1].method)
      assert.equal(V3, reqs[1].path)
      assert.equal("pageIndex=2&pageSize=10", reqs[1].query)
      assert.same({ { type = "page", page_index = 2, count = 10, total_count = COUNT } },
                  page_events())
    end)

    it("defaults to the first page of 100", function()
      local ave <close> = client()
      local page = assert(ave:customer_page())
      assert.equal(COUNT, #page.customers)
      assert.equal("pageIndex=1&pageSize=100", api_requests(sb:log())[1].query)
    end)

    it("POSTs to /batch with v3 = \"batch\", with {} or the customer ids", function()
      local ave <close> = client()
      local page = assert(ave:customer_page(1, 5, { v3 = "batch" }))
      assert.same({ table.unpack(ids_of(expected), 1, 5) }, ids_of(page.customers))
      local wanted = { expected[20].id, expected[3].id, expected[9].id }
      page = assert(ave:customer_page(1, 10, { v3 = "batch", customer_ids = wanted }))
      assert.same({ expected[3].id, expected[9].id, expected[20].id }, ids_of(page.customers))
      assert.equal(3, page.total_count)
      local reqs = api_requests(sb:log())
      assert.equal(2, #reqs)
      for _, e in ipairs(reqs) do
        assert.equal("POST", e.method)
        assert.equal(V3 .. "/batch", e.path)
        assert.equal("application/json", e.headers["content-type"])
      end
      assert.equal("pageIndex=1&pageSize=5", reqs[1].query)
      assert.equal("{}", reqs[1].body)
      assert.same({ customerIds = wanted }, cjson.decode(reqs[2].body))
    end)

    it("takes the v3 call from the client's options", function()
      local ave <close> = client { v3 = "batch" }
      assert(ave:customer_page(1, 5))
      assert(ave:customer_page(1, 5, { v3 = "get" }))
      local reqs = api_requests(sb:log())
      assert.equal("POST", reqs[1].method)
      assert.equal("GET", reqs[2].method)
    end)

    it("asks for the elements.customers.read.all scope", function()
      local ave <close> = client()
      assert(ave:customer_page(1, 5))
      local log = sb:log()
      assert.equal("/connect/token", log[1].path)
      assert.matches("scope=elements%.customers%.read%.all", log[1].body)
    end)
  end)

  describe("normalisation", function()
    it("gives canonical labels, integer codes and modes, and tenants", function()
      -- the sandbox sends jobStatus as integers, numeric strings, labels and other spellings
      local ave <close> = client()
      local list = assert(ave:all_customers())
      assert.equal(COUNT, #list)
      local seen_empty, seen_unnamed = false, false
      for i, c in ipairs(list) do
        local want = expected[i]
        assert.equal(want.id, c.id)
        assert.equal(pc.job_status.labels[want.jobStatus], c.jobStatus)
        assert.equal(want.jobStatus, c.jobStatusCode)
        assert.equal("integer", math.type(c.jobStatusCode))
        assert.equal(want.managementMode, c.managementMode)
        assert.equal("integer", math.type(c.managementMode))
        assert.equal(want.countryOrRegion, c.countryOrRegion)
        assert.equal("table", type(c.tenants))
        assert.equal(#want.tenants, #c.tenants)
        seen_empty = seen_empty or #c.tenants == 0
        for j, t in ipairs(c.tenants) do
          assert.equal(want.tenants[j].id, t.id)
          assert.equal(want.tenants[j].name, t.name)
          seen_unnamed = seen_unnamed or t.name == nil
        end
      end
      assert.is_true(seen_empty)
      assert.is_true(seen_unnamed) -- a null name is absent, not a sentinel
    end)

    it("handles the shapes the documentation allows", function()
      local body = cjson.encode {
        data = {
          { id = "a", jobStatus = "3", managementMode = "2", tenants = cjson.null,
            organization = cjson.null, extra = { x = 1 } },
          { id = "b", jobStatus = "Paused", tenants = { { Id = "t1", Name = "one" } } },
          { id = "c", jobStatus = 6.0 },
          { id = "d", jobStatus = "no backup updates", jobStatusCode = 99,
            tenants = { { id = "t2", name = "two", Region = "EU" } } },
        },
        metadata = { pageIndex = 1, pageSize = 100, totalCount = 4 },
      }
      sb:faults { { type = "status", status = 200, body = body, path = "^/partner/" } }
      local ave <close> = client()
      local page = assert(ave:customer_page(1, 100))
      local a, b, c, d = table.unpack(page.customers)
      assert.equal("Waiting for Configuration", a.jobStatus)
      assert.equal(3, a.jobStatusCode)
      assert.equal(2, a.managementMode)
      assert.equal("integer", math.type(a.managementMode))
      assert.same({}, a.tenants)
      assert.is_nil(a.organization)
      assert.same({ x = 1 }, a.extra)
      assert.equal("Paused", b.jobStatus) -- unknown: kept as it came, without a code
      assert.is_nil(b.jobStatusCode)
      assert.same({ { id = "t1", name = "one" } }, b.tenants)
      assert.equal("No Backup Update", c.jobStatus)
      assert.equal(6, c.jobStatusCode)
      assert.same({}, c.tenants)
      assert.equal("No Backup Update", d.jobStatus)
      assert.equal(6, d.jobStatusCode)
      assert.same({ { id = "t2", name = "two", Region = "EU" } }, d.tenants)
    end)

    it("calls an answer of the wrong shape a protocol error", function()
      local ave <close> = client()
      for _, body in ipairs { "[1,2]", '{"data":{"a":1}}', '{"data":[1]}',
                              '{"data":[{"id":"a","tenants":"x"}]}',
                              '{"data":[{"id":"a","tenants":["x"]}]}',
                              '{"data":[],"metadata":[1]}',
                              '{"data":[],"metadata":{"totalCount":"many"}}',
                              '{"data":[],"metadata":{"totalCount":-1}}' } do
        sb:faults { { type = "status", status = 200, body = body, path = "^/partner/" } }
        local page, err = ave:customer_page(1, 10)
        assert.is_nil(page, body)
        assert_error(err, "protocol")
        assert.equal(200, err.status)
        assert.matches("pageIndex=1&pageSize=10$", err.url)
      end
    end)
  end)

  describe("paging", function()
    it("pages() stops at totalCount, without asking for a page past it", function()
      local ave <close> = client()
      local got = {}
      for page in ave:pages { page_size = 5 } do
        assert.equal(5, #page.customers)
        table.move(page.customers, 1, 5, #got + 1, got)
      end
      assert.same(ids_of(expected), ids_of(got))
      assert.equal(5, #api_requests(sb:log()))
      local evs = page_events()
      assert.equal(5, #evs)
      for i, ev in ipairs(evs) do
        assert.same({ type = "page", page_index = i, count = 5, total_count = COUNT }, ev)
      end
    end)

    it("stops on a short page when totalCount is too large", function()
      sb:faults { { type = "wrong_total", total = 1000, times = -1 } }
      local ave <close> = client()
      -- prefetch 0: one page at a time; by default (2) the page fetched past the short one is dropped
      for prefetch, requests in pairs { [0] = 3, [2] = 4 } do
        sb:clear_log()
        local n, pages = 0, 0
        for page in ave:pages { page_size = 10, prefetch = prefetch } do
          pages = pages + 1
          n = n + #page.customers
        end
        assert.equal(COUNT, n)
        assert.equal(3, pages)
        assert.equal(requests, #api_requests(sb:log()))
      end
    end)

    it("stops on an empty page when totalCount is too large", function()
      sb:faults { { type = "wrong_total", total = 1000, times = -1 } }
      local ave <close> = client()
      local got = {}
      for c in ave:each_customer { page_size = 5, prefetch = 0 } do got[#got + 1] = c end
      assert.same(ids_of(expected), ids_of(got))
      assert.equal(6, #api_requests(sb:log())) -- five full pages, then an empty one
      -- fetched three at a time after the first: pages 1, 2-4, 5-7; page 7 is dropped
      sb:clear_log()
      got = {}
      for c in ave:each_customer { page_size = 5 } do got[#got + 1] = c end
      assert.same(ids_of(expected), ids_of(got))
      assert.equal(7, #api_requests(sb:log()))
    end)

    it("stops at totalCount when it is smaller than the data", function()
      sb:faults { { type = "wrong_total", total = 3, times = -1 } }
      local ave <close> = client()
      local list = assert(ave:all_customers { page_size = 10 })
      assert.equal(10, #list)
      assert.equal(1, #api_requests(sb:log()))
    end)

    it("gives nothing for an empty data set", function()
      local empty = sandbox.start { count = 0 }
      local ave <close> = pc.avepoint { client_id = empty.client_id,
        client_secret = empty.client_secret, base_url = empty.url, token_url = empty.token_url }
      local calls = {}
      assert.same({}, assert(ave:all_customers { progress = function(d, t)
        calls[#calls + 1] = { d, t }
      end }))
      assert.same({ { 0, 0 } }, calls)
      for _ in ave:pages() do error("no page expected") end
      for _ in ave:each_customer() do error("no customer expected") end
      empty:stop()
    end)

    it("calls a page that repeats earlier ones a protocol error", function()
      sb:faults { { type = "repeat_page", times = -1 } }
      local ave <close> = client()
      local list, err = ave:all_customers { page_size = 10 }
      assert.is_nil(list)
      assert_error(err, "protocol")
      assert.equal("GET", err.method)
      assert.equal(sb.url .. V3 .. "?pageIndex=2&pageSize=10", err.url)
      assert.matches("does not advance", err.message)
      -- page 3 came in the same batch as page 2 (totalCount announced it); it is dropped
      assert.equal(3, #api_requests(sb:log()))

      local it = ave:pages { page_size = 10 }
      assert(it())
      local ok, raised = pcall(it)
      assert.is_false(ok)
      assert_error(raised, "protocol")
    end)

    it("drops a few customers repeated in an otherwise new page", function()
      local page2 = cjson.encode {
        data = { expected[10], expected[11], expected[11], expected[12] },
        metadata = { pageIndex = 2, pageSize = 10, totalCount = 12 },
      }
      sb:faults { { type = "status", status = 200, body = page2, path = V3, after = 1 } }
      local ave <close> = client()
      local list = assert(ave:all_customers { page_size = 10 })
      assert.same({ table.unpack(ids_of(expected), 1, 12) }, ids_of(list))
    end)

    -- A page of the given customers (tables) as the v3 endpoint answers, for `status` rules.
    local function v3_page(list, meta)
      return { type = "status", status = 200, path = V3, times = 1,
               body = cjson.encode { data = list, metadata = meta or { pageSize = #list } } }
    end

    it("ends pages of customers without a string id that repeat, as a protocol error", function()
      local samples = {
        { { organization = "A" }, { organization = "B" } },               -- no id
        { { id = { 1 }, organization = "A" }, { id = { 2 } } },           -- an array as id
        { { id = { x = "y" } }, { id = true } },                          -- an object, a boolean
        { { id = "" , organization = "A" }, { id = "", organization = "B" } }, -- empty ids
      }
      for _, list in ipairs(samples) do
        local rule = v3_page(list)
        rule.times = -1
        sb:faults { rule }
        sb:clear_log()
        local ave <close> = client()
        -- no totalCount: pages are fetched `parallel` at a time after the first
        local all, err = ave:all_customers { page_size = 2, parallel = 1 }
        assert.is_nil(all)
        assert_error(err, "protocol")
        assert.matches("page 2 brings no new customer", err.message)
        assert.equal(2, #api_requests(sb:log()))
        local n = 0
        local ok, raised = pcall(function() for _ in ave:each_customer { page_size = 2 } do n = n + 1 end end)
        assert.is_false(ok)
        assert_error(raised, "protocol")
        assert.equal(2, n)
      end
    end)

    it("keeps customers without an id apart by their content; numeric ids count as ids", function()
      sb:faults { v3_page { { organization = "A" }, { organization = "B" } },
                  v3_page { { organization = "B" }, { organization = "C" } },
                  v3_page { { id = 7 }, { id = "7" }, { id = 8.5 } },
                  v3_page {} }
      local ave <close> = client()
      -- one page at a time, so that the rules (times = 1) answer the pages in order
      local list = assert(ave:all_customers { page_size = 2, parallel = 1 })
      local got = {}
      for i, c in ipairs(list) do got[i] = c.organization or tostring(c.id) end
      assert.same({ "A", "B", "C", "7", "8.5" }, got)
    end)

    it("fails a listing that runs past the pages totalCount allows", function()
      -- every page brings one new customer and repeats one: 10 customers never arrive in 6 pages
      local rules = {}
      for i = 1, 8 do
        rules[i] = v3_page({ expected[i], expected[i + 1] }, { pageSize = 2, totalCount = 10 })
      end
      sb:faults(rules)
      local ave <close> = client()
      local list, err = ave:all_customers { page_size = 2, parallel = 1 } -- the rules in order
      assert.is_nil(list)
      assert_error(err, "protocol")
      assert.matches("totalCount", err.message)
      assert.equal(6, #api_requests(sb:log())) -- ceil(10 / 2) + 1 pages, not one more
    end)

    it("catches pages that come back in a cycle longer than two, holding few pages", function()
      local a, b, c = { expected[1], expected[2] }, { expected[3], expected[4] }, { expected[5], expected[6] }
      local rules = {}
      for i = 1, 30 do rules[i] = v3_page(({ a, b, c })[(i - 1) % 3 + 1]) end
      sb:faults(rules)
      local ave <close> = client()
      -- prefetch 0 and parallel 1: the rules (times = 1) answer the pages in order
      local ok, err = pcall(function() for _ in ave:each_customer { page_size = 2, prefetch = 0 } do end end)
      assert.is_false(ok)
      assert_error(err, "protocol")
      assert.matches("no new customer", err.message)
      assert.truthy(#api_requests(sb:log()) <= 12)
      -- all_customers holds every customer anyway: the first page seen again ends it
      sb:faults(rules)
      sb:clear_log()
      local list
      list, err = ave:all_customers { page_size = 2, parallel = 1 }
      assert.is_nil(list)
      assert_error(err, "protocol")
      assert.equal(4, #api_requests(sb:log()))
    end)

    it("stops at max_pages with a limit error, from every listing", function()
      local ave <close> = client()
      local list, err = ave:all_customers { page_size = 5, max_pages = 2 }
      assert.is_nil(list)
      assert_error(err, "limit")
      assert.matches("max_pages = 2", err.message, 1, true)
      assert.equal(2, #api_requests(sb:log()))
      assert.equal(COUNT, #assert(ave:all_customers { page_size = 5, max_pages = 5 }))

      local pages = 0
      local ok, raised = pcall(function()
        for _ in ave:pages { page_size = 10, max_pages = 1 } do pages = pages + 1 end
      end)
      assert.is_false(ok)
      assert_error(raised, "limit")
      assert.equal(1, pages)
      local n = 0
      ok, raised = pcall(function()
        for _ in ave:each_customer { page_size = 10, max_pages = 2 } do n = n + 1 end
      end)
      assert.is_false(ok)
      assert_error(raised, "limit")
      assert.equal(20, n)
    end)

    it("counts a page the service capped as full", function()
      -- the service says pageSize 5 although 10 were asked for: pages of 5 are not short
      local function page(from)
        local data = {}
        for i = from, from + 4 do data[#data + 1] = expected[i] end
        return { type = "status", status = 200, path = V3, times = 1,
                 body = cjson.encode { data = data, metadata = { pageSize = 5 } } }
      end
      sb:faults { page(1), page(6), { type = "status", status = 200, path = V3,
                                      body = '{"data":[],"metadata":{"pageSize":5}}' } }
      local ave <close> = client()
      local list = assert(ave:all_customers { page_size = 10, parallel = 1 }) -- the rules in order
      assert.same({ table.unpack(ids_of(expected), 1, 10) }, ids_of(list))
      assert.equal(3, #api_requests(sb:log()))
    end)

    it("each_customer() yields every customer in order, page after page", function()
      local ave <close> = client()
      local got = {}
      for c in ave:each_customer { page_size = 7 } do got[#got + 1] = c end
      assert.same(ids_of(expected), ids_of(got))
      assert.equal(4, #page_events())
    end)

    it("all_customers() reports progress and keeps the service's order", function()
      local ave <close> = client()
      local calls = {}
      local list = assert(ave:all_customers { page_size = 10, parallel = 4, progress = function(d, t)
        calls[#calls + 1] = { d, t }
      end })
      assert.same(ids_of(expected), ids_of(list))
      assert.same({ { 1, 3 }, { 2, 3 }, { 3, 3 } }, calls)
    end)

    it("walks a batch selection", function()
      local ave <close> = client()
      local wanted = {}
      for i = COUNT, 1, -3 do wanted[#wanted + 1] = expected[i].id end
      local list = assert(ave:all_customers { page_size = 3, v3 = "batch", customer_ids = wanted })
      local want = {}
      for i = 1, COUNT do
        if (COUNT - i) % 3 == 0 then want[#want + 1] = expected[i].id end
      end
      assert.same(want, ids_of(list))
      for _, e in ipairs(api_requests(sb:log())) do
        assert.equal("POST", e.method)
        assert.equal(V3 .. "/batch", e.path)
        assert.same({ customerIds = wanted }, cjson.decode(e.body))
      end
    end)
  end)

  describe("failures", function()
    local function v3_fault(rule)
      rule.path = rule.path or "^/partner/"
      rule.times = rule.times or -1
      sb:faults { rule }
    end

    it("come back as nil, err from methods, with the right kind", function()
      local cases = {
        { { type = "status", status = 500 }, "http", 500, 3 },
        { { type = "status", status = 503 }, "http", 503, 3 },
        { { type = "status", status = 404 }, "http", 404, 1 },
        { { type = "status", status = 400 }, "http", 400, 1 },
        { { type = "status", status = 429, retry_after = 1 }, "throttled", 429, 3 },
        { { type = "status", status = 429 }, "throttled", 429, 3 },
        { { type = "status", status = 403 }, "auth", 403 },
        { { type = "status", status = 401 }, "auth", 401 },
        { { type = "malformed" }, "decode", 200 },
        { { type = "html" }, "decode", 200 },
        { { type = "drop" }, "network" },
      }
      local ave <close> = client()
      for _, case in ipairs(cases) do
        local rule, kind, status, attempts = table.unpack(case)
        v3_fault(rule)
        local page, err = ave:customer_page(1, 10)
        assert.is_nil(page, rule.type)
        assert_error(err, kind, sb.client_secret)
        assert.equal(status, err.status, tostring(err))
        if attempts then assert.equal(attempts, err.attempts, tostring(err)) end
        assert.equal("GET", err.method)
        assert.equal(sb.url .. V3 .. "?pageIndex=1&pageSize=10", err.url)
        if status == 429 and rule.retry_after then assert.equal(1, err.retry_after) end
      end
      -- the same for /partner/customers
      v3_fault { type = "status", status = 500 }
      local list, err = ave:customers()
      assert.is_nil(list)
      assert_error(err, "http", sb.client_secret)
    end)

    it("retries on the injected clock", function()
      v3_fault { type = "status", status = 503, times = 2 }
      local ave <close> = client()
      assert(ave:customer_page(1, 10))
      assert.equal(2, #time.sleeps)
    end)

    it("times out", function()
      v3_fault { type = "hang", max = 5 }
      local ave <close> = client { timeout = 0.5, max_retries = 0 }
      local page, err = ave:customer_page(1, 10)
      assert.is_nil(page)
      assert_error(err, "timeout")
    end)

    it("stops a response over max_response_bytes", function()
      local ave <close> = client { max_response_bytes = 64 * 1024 }
      for _, rule in ipairs { { type = "large", bytes = 200000 },
                              { type = "gzip_bomb", bytes = 1024 * 1024 } } do
        v3_fault(rule)
        local page, err = ave:customer_page(1, 10)
        assert.is_nil(page, rule.type)
        assert_error(err, "limit")
      end
    end)

    it("refreshes an expired token once", function()
      v3_fault { type = "expire_token", times = 1 }
      local ave <close> = client()
      assert(ave:customer_page(1, 10))
      local tokens = 0
      for _, e in ipairs(sb:log()) do
        if e.path == "/connect/token" then tokens = tokens + 1 end
      end
      assert.equal(2, tokens)
    end)

    it("reports a refused client secret as auth, without the secret", function()
      local wrong = "not-the-secret-" .. sb.client_secret:sub(1, 6)
      local ave <close> = client { client_secret = wrong }
      local page, err = ave:customer_page(1, 10)
      assert.is_nil(page)
      assert_error(err, "auth", wrong)
      assert.equal("invalid_client", err.code)
      for _, ev in ipairs(events) do
        for _, v in pairs(ev) do assert.falsy(tostring(v):find(wrong, 1, true)) end
      end
    end)

    it("raise the error object from iterators", function()
      v3_fault { type = "status", status = 500, after = 1 }
      local ave <close> = client()
      local n = 0
      local ok, err = pcall(function()
        for _ in ave:each_customer { page_size = 10 } do n = n + 1 end
      end)
      assert.is_false(ok)
      assert.equal(10, n) -- the first page came through
      assert_error(err, "http", sb.client_secret)
      assert.equal(500, err.status)
      assert.equal(getmetatable(err), pc.Error)

      sb:faults { { type = "status", status = 500, path = "^/partner/", times = -1 } }
      ok, err = pcall(function() for _ in ave:pages() do end end)
      assert.is_false(ok)
      assert_error(err, "http")
    end)
  end)

  describe("close()", function()
    -- Asserts that f raises a partnercustomers misuse message at this spec's line, with needle.
    local function raises(f, needle)
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.equal("string", type(err))
      assert.matches("avepoint_spec%.lua:%d+: partnercustomers: ", err)
      assert.truthy(err:find(needle, 1, true), err)
    end

    it("makes an iterator of the closed client raise one clear error, as io.lines does", function()
      local ave = client()
      local each, pages = ave:each_customer { page_size = 5 }, ave:pages { page_size = 5 }
      assert.is_string(each().id)
      assert.equal(5, #pages().customers)
      local fresh = ave:each_customer() -- never started
      ave:close()
      -- called from Lua code, as a for loop does (a tail call or pcall(it) would hide the line)
      raises(function() local c = each() return c end, "each_customer: attempt to use a closed AvePoint client")
      raises(function() local p = pages() return p end, "pages: attempt to use a closed AvePoint client")
      raises(function() for _ in fresh do end end, "each_customer: attempt to use a closed AvePoint client")
    end)

    it("is refused from a hook while a call runs, and changes nothing", function()
      local ave, closing
      ave = client { on_event = function(ev)
        if closing == ev.type then ave:close() end
      end }
      for _, hook in ipairs { "token", "page", "request" } do -- the first call fetches a token
        closing = hook
        local ok, err = pcall(ave.all_customers, ave, { page_size = 10 })
        assert.is_false(ok, hook)
        assert.matches("close: the AvePoint client is in a call", err)
        closing = nil
        assert.equal(COUNT, #assert(ave:all_customers { page_size = 10 }), hook) -- still open
      end
      for _, call in ipairs {
        function() ave:customers() end,
        function() ave:customer_page(1, 5) end,
        function() for _ in ave:pages { page_size = 10 } do end end,
        function() for _ in ave:each_customer { page_size = 10 } do end end,
        function() ave:all_customers { page_size = 10, progress = function() ave:close() end } end,
      } do
        closing = "page"
        local ok, err = pcall(call)
        closing = nil
        assert.is_false(ok)
        assert.matches("in a call", err)
        assert(ave:customer_page(1, 5))
      end
      ave:close()
      raises(function() ave:customer_page(1, 5) end, "closed")
    end)
  end)

  describe("other credentials", function()
    it("use an access token as it is", function()
      local token = sb:token("elements.customers.read.all")
      local ave <close> = pc.avepoint { access_token = token, base_url = sb.url }
      assert(ave:customer_page(1, 5))
      -- the token has the v3 scope only: /partner/customers is refused
      local list, err = ave:customers()
      assert.is_nil(list)
      assert_error(err, "auth", token)
    end)

    it("ask a token function for each scope", function()
      local scopes = {}
      local ave <close> = pc.avepoint {
        base_url = sb.url,
        token = function(scope)
          scopes[#scopes + 1] = scope
          return sb:token(scope), 3600
        end,
      }
      assert(ave:customer_page(1, 5))
      assert(ave:customers())
      assert.same({ "elements.customers.read.all", "partner.customers.read.all" }, scopes)
    end)
  end)
end)
