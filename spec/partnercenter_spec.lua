-- pc.partnercenter against the real sandbox (spec/helpers/sandbox.lua): every method, both token
-- endpoint forms, refresh-token rotation, every error shape, continuation paging, the headers
-- Partner Center wants, and misuse. Time is injected: retries never wait for real.
local pc = require "partnercustomers"
local sandbox = require "spec.helpers.sandbox"
local cjson = require "cjson"
local helpers = require "spec.helpers.util"
local fake_time = helpers.fake_time

local COUNT = 20
local SCOPE_V2 = "https://api.partnercenter.microsoft.com/.default"
local RESOURCE = "https://api.partnercenter.microsoft.com"
local GUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local UNKNOWN = "0badc0de-0000-4000-8000-000000000000" -- a GUID that is no customer
local THROTTLE_BODY = '{"statusCode": 429, "message": "Rate limit is exceeded. Try again in 57 seconds."}'

local function is_token_path(path)
  return path:find("/oauth2/", 1, true) ~= nil
end

local function api_requests(log)
  local out = {}
  for _, e in ipairs(log) do
    if not is_token_path(e.path) then out[#out + 1] = e end
  end
  return out
end

local function token_requests(log)
  local out = {}
  for _, e in ipairs(log) do
    if is_token_path(e.path) then out[#out + 1] = e end
  end
  return out
end

local form_of = helpers.form_of

local assert_error = require("spec.helpers.util").assert_error

-- Asserts that f raises a partnercustomers misuse message containing every needle.
local function raises(f, ...)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected an error")
  assert.equal("string", type(err))
  assert.matches("partnercenter_spec%.lua:%d+: partnercustomers: ", err)
  for _, needle in ipairs { ... } do
    assert.truthy(err:find(needle, 1, true), ("%q not in %q"):format(needle, err))
  end
  return err
end

describe("pc.partnercenter against the sandbox", function()
  local sb, orgs, tenants, ok_ids, forbidden_ids, time, events

  setup(function()
    sb = sandbox.start { count = COUNT, seed = 9 }
    orgs = sb:pc_organizations()
    -- the Partner Center customers: every tenant of the AvePoint customers, in their order
    tenants, ok_ids, forbidden_ids = {}, {}, {}
    for _, c in ipairs(sb:customers()) do
      for _, t in ipairs(c.tenants) do
        tenants[#tenants + 1] = t.id
        if orgs[t.id].status == 200 then ok_ids[#ok_ids + 1] = t.id
        else forbidden_ids[#forbidden_ids + 1] = t.id end
      end
    end
    assert.truthy(#tenants > 12)
    assert.truthy(#forbidden_ids >= 2)
  end)
  teardown(function() sb:stop() end)

  before_each(function()
    sb:faults {}
    sb:clear_log()
    time, events = fake_time(), {}
  end)

  local function options(extra)
    local o = {
      tenant = sb.pc_tenant,
      client_id = sb.client_id, client_secret = sb.client_secret,
      base_url = sb.url, token_url = sb.pc_token_url_v2,
      timeout = 5, connect_timeout = 2, max_retries = 2,
      clock = time.clock, sleep = time.sleep,
      on_event = function(ev)
        events[#events + 1] = ev
        if #events > 300 then error("runaway: more than 300 events", 0) end
      end,
    }
    for k, v in pairs(extra or {}) do
      if v == false then o[k] = nil else o[k] = v end
    end
    return o
  end

  local function client(extra)
    return pc.partnercenter(options(extra))
  end

  -- The organization the sandbox holds, as the client gives it (mails always an array).
  local function expected_org(id)
    local want = {}
    for k, v in pairs(orgs[id].organization) do want[k] = v end
    want.technicalNotificationMails = want.technicalNotificationMails or {}
    return want
  end

  -- A fault rule for the organization path of id (any id when nil); rule paths are Lua patterns.
  local function org_fault(id, rule)
    rule.path = "^/v1/customers/" .. (id and id:gsub("%-", "%%-") or "[^/]+") .. "/organization$"
    return rule
  end

  describe("organization()", function()
    it("returns the first element of the array the service answers", function()
      local mpc <close> = client()
      local seen_no_mails = false
      for _, id in ipairs(ok_ids) do
        local org = assert(mpc:organization(id))
        assert.same(expected_org(id), org)
        assert.equal("table", type(org.technicalNotificationMails))
        seen_no_mails = seen_no_mails or orgs[id].organization.technicalNotificationMails == nil
      end
      assert.is_true(seen_no_mails) -- null or absent mails became {}
      local reqs = api_requests(sb:log())
      assert.equal(#ok_ids, #reqs)
      for i, e in ipairs(reqs) do
        assert.equal("GET", e.method)
        assert.equal("/v1/customers/" .. ok_ids[i] .. "/organization", e.path)
        assert.equal(200, e.status)
      end
    end)

    it("sends the headers Partner Center wants", function()
      local mpc <close> = client()
      assert(mpc:organization(ok_ids[1]))
      assert(mpc:organization(ok_ids[2]))
      local reqs = api_requests(sb:log())
      assert.equal(2, #reqs)
      local correlation = reqs[1].headers["ms-correlationid"]
      for _, e in ipairs(reqs) do
        local h = e.headers
        assert.matches("^Bearer t%d+$", h.authorization)
        assert.equal("application/json", h.accept)
        assert.equal("v1", h["ms-contract-version"])
        assert.matches(GUID, h["ms-requestid"])
        assert.equal(correlation, h["ms-correlationid"]) -- one per client
        assert.is_nil(h["x-locale"])
      end
      assert.matches(GUID, correlation)
      assert.not_equal(reqs[1].headers["ms-requestid"], reqs[2].headers["ms-requestid"])

      -- another client, another correlation id
      local other <close> = client()
      assert(other:organization(ok_ids[1]))
      local last = api_requests(sb:log())[3]
      assert.matches(GUID, last.headers["ms-correlationid"])
      assert.not_equal(correlation, last.headers["ms-correlationid"])
    end)

    it("sends MS-CorrelationId from the client's option and per call, and X-Locale", function()
      local mine = "12345678-9abc-4def-8123-456789abcdef"
      local call = "fedcba98-7654-4321-8fed-cba987654321"
      local mpc <close> = client { correlation_id = mine, locale = "de-DE" }
      assert(mpc:organization(ok_ids[1]))
      assert(mpc:organization(ok_ids[1], { correlation_id = call }))
      local _, err = mpc:organization(forbidden_ids[1], { correlation_id = call })
      assert_error(err, "auth")
      assert.equal(call, err.correlation_id)
      local reqs = api_requests(sb:log())
      assert.equal(mine, reqs[1].headers["ms-correlationid"])
      assert.equal(call, reqs[2].headers["ms-correlationid"])
      assert.equal(call, reqs[3].headers["ms-correlationid"])
      for _, e in ipairs(reqs) do assert.equal("de-DE", e.headers["x-locale"]) end
    end)

    it("reports 403 and 404 with Partner Center's code as a string and the ids", function()
      local mpc <close> = client { correlation_id = "11111111-2222-4333-8444-555555555555" }
      local cases = { { forbidden_ids[1], "auth", 403 }, { UNKNOWN, "http", 404 } }
      for _, case in ipairs(cases) do
        local id, kind, status = table.unpack(case)
        sb:clear_log()
        local org, err = mpc:organization(id)
        assert.is_nil(org)
        assert_error(err, kind, { sb.client_secret })
        assert.equal(status, err.status)
        assert.equal(1, err.attempts)
        assert.equal("GET", err.method)
        assert.equal(sb.url .. "/v1/customers/" .. id .. "/organization", err.url)
        assert.equal("string", type(err.code), tostring(err))
        assert.matches("^%w+$", err.code)
        assert.equal("string", type(err.message))
        local sent = api_requests(sb:log())[1].headers
        assert.equal(sent["ms-requestid"], err.request_id)
        assert.equal("11111111-2222-4333-8444-555555555555", err.correlation_id)
        assert.equal("string", type(err.cv), "err.cv (the MS-CV response header)")
      end
    end)

    it("calls an answer of the wrong shape a protocol error", function()
      local mpc <close> = client()
      for _, body in ipairs { "[]", "{}", '{"displayName":"x"}', "[1]", '"x"', "[[1]]",
                              '[{"technicalNotificationMails":"a@b.example"}]',
                              '[{"technicalNotificationMails":{"a":1}}]',
                              '[{"technicalNotificationMails":[1]}]' } do
        sb:faults { org_fault(nil, { type = "status", status = 200, body = body }) }
        local org, err = mpc:organization(ok_ids[1])
        assert.is_nil(org, body)
        assert_error(err, "protocol")
        assert.equal(200, err.status)
        assert.equal(sb.url .. "/v1/customers/" .. ok_ids[1] .. "/organization", err.url)
        assert.matches(GUID, err.request_id)
        assert.matches(GUID, err.correlation_id)
      end
      -- more than one element: the first counts
      sb:faults { org_fault(nil, { type = "status", status = 200,
                                   body = '[{"displayName":"one"},{"displayName":"two"}]' }) }
      assert.same({ displayName = "one", technicalNotificationMails = {} },
                  mpc:organization(ok_ids[1]))
    end)

    it("refuses a tenant id that is not a GUID before any request", function()
      local mpc <close> = client()
      for _, bad in ipairs { "contoso.onmicrosoft.com", "", "1234", ok_ids[1] .. "x",
                             "{" .. ok_ids[1] .. "}", ok_ids[1]:gsub("%-", ""),
                             ok_ids[1] .. "/../x", "../../v1/customers" } do
        raises(function() mpc:organization(bad) end, "organization: the customer tenant id must be a GUID")
      end
      raises(function() mpc:organization(nil) end, "must be a GUID (got nil)")
      raises(function() mpc:organization(42) end, "must be a GUID (got integer)")
      raises(function() mpc:organization(ok_ids[1], { correlation_id = "nope" }) end,
             "option 'correlation_id' must be a GUID")
      raises(function() mpc:organization(ok_ids[1], { parallel = 2 }) end, "unknown option 'parallel'")
      assert.same({}, sb:log())
    end)
  end)

  describe("organizations()", function()
    it("looks every id up; one failure never stops the rest", function()
      local mpc <close> = client()
      local ids = { UNKNOWN }
      for _, id in ipairs(tenants) do ids[#ids + 1] = id end
      ids[#ids + 1] = tenants[1] -- asked twice, looked up once
      local calls = {}
      local results, errors = mpc:organizations(ids, { parallel = 3, progress = function(d, t)
        calls[#calls + 1] = { d, t }
      end })
      for _, id in ipairs(ok_ids) do assert.same(expected_org(id), results[id]) end
      for _, id in ipairs(forbidden_ids) do
        assert.is_nil(results[id])
        assert_error(errors[id], "auth", { sb.client_secret })
        assert.equal(403, errors[id].status)
        assert.equal("3000", errors[id].code)
      end
      assert_error(errors[UNKNOWN], "http")
      assert.equal(404, errors[UNKNOWN].status)
      assert.is_nil(results[UNKNOWN])
      local n_results, n_errors = 0, 0
      for _ in pairs(results) do n_results = n_results + 1 end
      for _ in pairs(errors) do n_errors = n_errors + 1 end
      assert.equal(#ok_ids, n_results)
      assert.equal(#forbidden_ids + 1, n_errors)

      local total = #tenants + 1
      assert.equal(total, #calls)
      for i, call in ipairs(calls) do assert.same({ i, total }, call) end
      local reqs = api_requests(sb:log())
      assert.equal(total, #reqs)
      local ids_sent = {}
      for _, e in ipairs(reqs) do
        assert.is_nil(ids_sent[e.headers["ms-requestid"]], "an MS-RequestId used twice")
        ids_sent[e.headers["ms-requestid"]] = true
      end
      assert.equal(1, #token_requests(sb:log()))
    end)

    it("is the same one after another", function()
      local mpc <close> = client()
      local a = { mpc:organizations(tenants, { parallel = 1 }) }
      local b = { mpc:organizations(tenants) }
      assert.same(a[1], b[1])
      for id in pairs(a[2]) do assert.equal(a[2][id].status, b[2][id].status) end
    end)

    it("gives two empty tables for no id", function()
      local mpc <close> = client()
      local calls = {}
      local results, errors = mpc:organizations({}, { progress = function(d, t)
        calls[#calls + 1] = { d, t }
      end })
      assert.same({}, results)
      assert.same({}, errors)
      assert.same({ { 0, 0 } }, calls)
      assert.same({}, sb:log())
    end)

    it("keeps a protocol error to its id", function()
      sb:faults { org_fault(ok_ids[2], { type = "status", status = 200, body = "[]" }) }
      local mpc <close> = client()
      local results, errors = mpc:organizations { ok_ids[1], ok_ids[2], ok_ids[3] }
      assert.same(expected_org(ok_ids[1]), results[ok_ids[1]])
      assert.same(expected_org(ok_ids[3]), results[ok_ids[3]])
      assert_error(errors[ok_ids[2]], "protocol")
    end)

    it("validates every id and option before any request", function()
      local mpc <close> = client()
      raises(function() mpc:organizations { ok_ids[1], "nope", ok_ids[2] } end,
             "organizations: ids[2] must be a customer tenant id, a GUID")
      raises(function() mpc:organizations { ok_ids[1], 7 } end, "ids[2]", "got integer")
      raises(function() mpc:organizations(ok_ids[1]) end, "ids must be an array")
      raises(function() mpc:organizations { a = ok_ids[1] } end, "ids must be an array")
      raises(function() mpc:organizations(nil) end, "ids must be an array")
      for _, bad in ipairs { 0, 65, 1.5, "8" } do
        raises(function() mpc:organizations(ok_ids, { parallel = bad }) end,
               "option 'parallel' must be an integer from 1 to 64")
      end
      raises(function() mpc:organizations(ok_ids, { progress = true }) end, "option 'progress'")
      raises(function() mpc:organizations(ok_ids, { page_size = 5 }) end, "unknown option 'page_size'")
      assert.same({}, sb:log())
    end)
  end)

  describe("customers()", function()
    local function page_requests()
      local out = {}
      for _, e in ipairs(api_requests(sb:log())) do
        if e.path:find("^/v1/v1/") or e.path == "/v1/customers" then out[#out + 1] = e end
      end
      return out
    end

    it("follows links.next and its headers, resolving the uri against the host", function()
      local mpc <close> = client()
      local list = assert(mpc:customers { page_size = 4 })
      local ids = {}
      for i, c in ipairs(list) do
        ids[i] = c.id
        assert.equal(c.id, c.companyProfile.tenantId)
        assert.equal("string", type(c.companyProfile.domain))
      end
      assert.same(tenants, ids)

      local reqs = page_requests()
      local pages = (#tenants + 3) // 4
      assert.equal(pages, #reqs)
      assert.equal(pages, #api_requests(sb:log())) -- nothing else was asked (no /v1/v1)
      local request_ids = {}
      for i, e in ipairs(reqs) do
        assert.equal("/v1/customers", e.path) -- the uri holds /v1 already: not prefixed again
        assert.equal("size=4", e.query)
        assert.equal(200, e.status)
        assert.equal("v1", e.headers["ms-contract-version"])
        assert.equal("application/json", e.headers.accept)
        if i == 1 then
          assert.is_nil(e.headers["ms-continuationtoken"])
        else
          assert.is_string(e.headers["ms-continuationtoken"])
        end
        assert.is_nil(request_ids[e.headers["ms-requestid"]]) -- a new one per page
        request_ids[e.headers["ms-requestid"]] = true
        assert.equal(reqs[1].headers["ms-correlationid"], e.headers["ms-correlationid"])
      end
      local page_events = {}
      for _, ev in ipairs(events) do
        if ev.type == "page" then page_events[#page_events + 1] = ev end
      end
      assert.equal(pages, #page_events)
      assert.same({ type = "page", page_index = 1, count = 4 }, page_events[1])
    end)

    it("asks for 500 a page by default", function()
      local mpc <close> = client()
      assert.equal(#tenants, #assert(mpc:customers()))
      local reqs = page_requests()
      assert.equal(1, #reqs)
      assert.equal("size=500", reqs[1].query)
    end)

    it("each_customer() yields the same, page after page", function()
      local mpc <close> = client()
      local ids = {}
      for c in mpc:each_customer { page_size = 5 } do ids[#ids + 1] = c.id end
      assert.same(tenants, ids)
      assert.equal((#tenants + 4) // 5, #page_requests())
      -- a walk left early costs only the pages read
      sb:clear_log()
      local other <close> = client()
      for _ in other:each_customer { page_size = 5 } do break end
      assert.equal(1, #page_requests())
    end)

    it("starts a new listing afresh after one left early, on the same client", function()
      local mpc <close> = client()
      for _ in mpc:each_customer { page_size = 5 } do break end
      local list, err = mpc:customers { page_size = 5 }
      assert.is_nil(err)
      assert.equal(#tenants, #list)
    end)

    it("follows an absolute next link to the same host", function()
      sb:faults { { type = "pc_next", uri = sb.url .. "/v1/customers?size=6", times = 1 } }
      local mpc <close> = client()
      local list = assert(mpc:customers { page_size = 6 })
      assert.equal(#tenants, #list)
      for _, e in ipairs(api_requests(sb:log())) do assert.equal("/v1/customers", e.path) end
    end)

    it("keeps a base_url path prefix for a uri that lacks it", function()
      -- a gateway at /pc that forwards to the service: the service's uri starts at /v1
      sb:faults { { type = "status", status = 200, path = "^/pc/v1/customers$", times = 1,
                    body = cjson.encode { totalCount = 1, items = { { id = "a" } }, links = { next = {
                      uri = "/v1/customers?size=5", method = "GET",
                      headers = { { key = "MS-ContinuationToken", value = "abc" } } } } } },
                  { type = "status", status = 200, path = "^/pc/v1/customers$", times = 1,
                    body = '{"totalCount":0,"items":[],"links":{}}' } }
      local mpc <close> = client { base_url = sb.url .. "/pc/" }
      assert.same({ { id = "a" } }, assert(mpc:customers { page_size = 5 }))
      local reqs = api_requests(sb:log())
      assert.equal(2, #reqs)
      assert.equal("/pc/v1/customers", reqs[2].path)
      assert.equal("abc", reqs[2].headers["ms-continuationtoken"])
    end)

    it("calls a next link to another host a protocol error", function()
      for _, uri in ipairs { "http://127.0.0.2:" .. sb.port .. "/v1/customers?size=5",
                             "http://127.0.0.1:" .. (sb.port == 1 and 2 or sb.port - 1) .. "/v1/customers",
                             "https://127.0.0.1:" .. sb.port .. "/v1/customers?size=5",
                             "https://evil.example/v1/customers?size=5",
                             "//evil.example/v1/customers" } do
        sb:faults { { type = "pc_next", uri = uri, times = -1 } }
        sb:clear_log()
        local mpc <close> = client()
        local list, err = mpc:customers { page_size = 5 }
        assert.is_nil(list, uri)
        assert_error(err, "protocol")
        assert.matches("links.next.uri", err.message, 1, true)
        assert.equal(sb.url .. "/v1/customers?size=5", err.url)
        assert.equal(1, #api_requests(sb:log())) -- never asked the other host
        -- the iterator gives the first page, then raises the same kind of error
        local other <close> = client()
        local n = 0
        local ok, raised = pcall(function()
          for _ in other:each_customer { page_size = 5 } do n = n + 1 end
        end)
        assert.is_false(ok)
        assert_error(raised, "protocol")
        assert.equal(5, n)
      end
    end)

    it("calls a next link seen twice a protocol error", function()
      -- on the last page the sandbox's added link leads to that same page again
      sb:faults { { type = "pc_next", uri = "/v1/customers?size=8", times = -1 } }
      local mpc <close> = client()
      local list, err = mpc:customers { page_size = 8 }
      assert.is_nil(list)
      assert_error(err, "protocol")
      assert.matches("repeats", err.message)
      assert.equal((#tenants + 7) // 8, #api_requests(sb:log()))
    end)

    it("ends when fresh continuation tokens bring the same page again, as a protocol error", function()
      sb:faults { { type = "pc_stuck", times = -1 } }
      local mpc <close> = client()
      local list, err = mpc:customers { page_size = 5 }
      assert.is_nil(list)
      assert_error(err, "protocol")
      assert.matches("page 2 brings no new customer", err.message)
      assert.equal(2, #api_requests(sb:log()))
      assert.is_string(api_requests(sb:log())[2].headers["ms-continuationtoken"])
      local n = 0
      local ok, raised = pcall(function() for _ in mpc:each_customer { page_size = 5 } do n = n + 1 end end)
      assert.is_false(ok)
      assert_error(raised, "protocol")
      assert.equal(5, n)
    end)

    it("calls a next uri that cannot be requested a protocol error, never misuse", function()
      local cases = {
        { "/v1/customers?size=5&x=a b", "spaces or control characters" },
        { "/v1/customers?size=5&x=a\tb", "spaces or control characters" },
        { "/v1/customers?size=5&x=a\0b", "spaces or control characters" },
        { "http://u:p@127.0.0.1:" .. sb.port .. "/v1/customers", "credentials" },
        { "/v1/customers?size=5&x=", "longer than 65536 bytes", 65536 },
      }
      for _, case in ipairs(cases) do
        local uri, why, pad = table.unpack(case)
        sb:faults { { type = "pc_next", uri = uri, pad = pad } }
        sb:clear_log()
        local mpc <close> = client()
        local ok, list, err = pcall(mpc.customers, mpc, { page_size = 5 })
        assert.is_true(ok, tostring(list))
        assert.is_nil(list)
        assert_error(err, "protocol")
        assert.matches('"links.next.uri" ', err.message, 1, true)
        assert.matches(why, err.message, 1, true)
        assert.equal(1, #api_requests(sb:log()))
      end
    end)

    it("sends only MS- headers a next link asks for, with values that can be sent", function()
      local function page_with(headers)
        return { type = "status", status = 200, path = "^/v1/customers$", times = 1,
                 body = cjson.encode { items = { { id = "a" } }, links = { next = {
                   uri = "/v1/customers?size=5", headers = headers } } } }
      end
      for _, h in ipairs { { key = "X-Custom", value = "a" }, { key = "Cookie", value = "a=b" },
                           { key = "Accept", value = "text/html" }, { key = "Host", value = "evil" },
                           { key = "MS", value = "a" }, { key = "XMS-A", value = "a" },
                           { key = "MS-ContinuationToken", value = "a\0b" },
                           { key = "MS-ContinuationToken", value = "a\rb" },
                           { key = "MS-ContinuationToken", value = true } } do
        sb:faults { page_with { h } }
        sb:clear_log()
        local mpc <close> = client()
        local list, err = mpc:customers { page_size = 5 }
        assert.is_nil(list, h.key)
        assert_error(err, "protocol")
        assert.matches('"links.next.headers"', err.message, 1, true)
        assert.equal(1, #api_requests(sb:log()))
      end
      -- any case, and MS- headers of ours are replaced
      sb:faults { page_with { { key = "ms-continuationtoken", value = "abc" }, { key = "MS-Extra", value = 7 } },
                  { type = "status", status = 200, path = "^/v1/customers$", times = 1,
                    body = '{"items":[{"id":"b"}],"links":{}}' } }
      sb:clear_log()
      local mpc <close> = client()
      assert.equal(2, #assert(mpc:customers { page_size = 5 }))
      local second = api_requests(sb:log())[2]
      assert.equal("abc", second.headers["ms-continuationtoken"])
      assert.equal("7", second.headers["ms-extra"])
    end)

    it("stops at max_pages with a limit error", function()
      local mpc <close> = client()
      local list, err = mpc:customers { page_size = 5, max_pages = 2 }
      assert.is_nil(list)
      assert_error(err, "limit")
      assert.matches("max_pages = 2", err.message, 1, true)
      assert.equal(2, #api_requests(sb:log()))
      local pages = (#tenants + 4) // 5
      assert.equal(#tenants, #assert(mpc:customers { page_size = 5, max_pages = pages }))
      local n = 0
      local ok, raised = pcall(function()
        for _ in mpc:each_customer { page_size = 5, max_pages = 1 } do n = n + 1 end
      end)
      assert.is_false(ok)
      assert_error(raised, "limit")
      assert.equal(5, n)
    end)

    it("takes a page without links, or without links.next, as the last", function()
      for _, body in ipairs { '{"items":[{"id":"a"}]}', '{"items":[{"id":"a"}],"links":{}}' } do
        sb:faults { { type = "status", status = 200, body = body, path = "^/v1/customers$" } }
        local mpc <close> = client()
        assert.same({ { id = "a" } }, assert(mpc:customers()))
      end
    end)

    it("calls a page of the wrong shape a protocol error", function()
      for _, body in ipairs { "[1]", '"x"', '{"items":{"a":1}}', '{"items":[1]}', '{"items":[],"links":[1]}',
                              '{"items":[],"links":{"next":"x"}}',
                              '{"items":[],"links":{"next":{"uri":7}}}',
                              '{"items":[],"links":{"next":{"uri":"/v1/customers","method":"POST"}}}',
                              '{"items":[],"links":{"next":{"uri":"/v1/customers","headers":{"k":"v"}}}}',
                              '{"items":[],"links":{"next":{"uri":"/v1/customers","headers":[{"key":"X-A","value":"a\\r\\nX-B: b"}]}}}',
                              '{"items":[],"links":{"next":{"uri":"/v1/customers","headers":[{"key":"Bad Name","value":"a"}]}}}',
                              '{"items":[],"links":{"next":{"uri":"/v1/customers","headers":[{"key":"Authorization","value":"Bearer x"}]}}}' } do
        sb:faults { { type = "status", status = 200, body = body, path = "^/v1/customers$" } }
        local mpc <close> = client()
        local list, err = mpc:customers()
        assert.is_nil(list, body)
        assert_error(err, "protocol")
        assert.equal(200, err.status)
      end
    end)

    it("refuses a page size or max_pages out of range", function()
      local mpc <close> = client()
      for _, bad in ipairs { 0, 501, 2.5, "5" } do
        raises(function() mpc:customers { page_size = bad } end,
               "customers: option 'page_size' must be an integer from 1 to 500")
        raises(function() mpc:each_customer { page_size = bad } end, "option 'page_size'")
      end
      raises(function() mpc:customers { size = 5 } end, "unknown option 'size'")
      for _, bad in ipairs { 0, -3, 2.5, "5" } do
        raises(function() mpc:customers { max_pages = bad } end,
               "customers: option 'max_pages' must be an integer >= 1")
        raises(function() mpc:each_customer { max_pages = bad } end, "option 'max_pages'")
      end
      assert.same({}, sb:log())
    end)
  end)

  describe("retries", function()
    it("send the same MS-RequestId on every attempt of one call, a new one per call", function()
      sb:faults { org_fault(ok_ids[1], { type = "status", status = 503, times = 2 }) }
      local mpc <close> = client()
      assert(mpc:organization(ok_ids[1]))
      assert(mpc:organization(ok_ids[1]))
      local reqs = api_requests(sb:log())
      assert.equal(4, #reqs)
      assert.same({ 503, 503, 200, 200 }, { reqs[1].status, reqs[2].status, reqs[3].status, reqs[4].status })
      local first = reqs[1].headers["ms-requestid"]
      assert.matches(GUID, first)
      assert.equal(first, reqs[2].headers["ms-requestid"])
      assert.equal(first, reqs[3].headers["ms-requestid"])
      assert.not_equal(first, reqs[4].headers["ms-requestid"])
      assert.equal(2, #time.sleeps)
    end)

    it("keep the page's MS-RequestId and continuation token on a retried page", function()
      sb:faults { { type = "status", status = 500, path = "^/v1/customers$", after = 1, times = 1 } }
      local mpc <close> = client()
      assert.equal(#tenants, #assert(mpc:customers { page_size = 10 }))
      local reqs = api_requests(sb:log())
      assert.equal(500, reqs[2].status)
      assert.equal(reqs[2].headers["ms-requestid"], reqs[3].headers["ms-requestid"])
      assert.equal(reqs[2].headers["ms-continuationtoken"], reqs[3].headers["ms-continuationtoken"])
    end)

    it("wait for Retry-After on 429, then give the throttling body as throttled", function()
      sb:faults { org_fault(nil, { type = "status", status = 429, retry_after = 57, times = -1,
                                   body = THROTTLE_BODY }) }
      local mpc <close> = client { max_retries = 2 }
      local org, err = mpc:organization(ok_ids[1])
      assert.is_nil(org)
      assert_error(err, "throttled", { sb.client_secret })
      assert.equal(429, err.status)
      assert.is_true(err.code == nil or type(err.code) == "string") -- the body has no code
      assert.matches("Rate limit is exceeded", err.message)
      assert.equal(57, err.retry_after)
      assert.equal(3, err.attempts)
      assert.same({ 57, 57 }, time.sleeps)
      local reqs = api_requests(sb:log())
      assert.equal(3, #reqs)
      assert.equal(reqs[1].headers["ms-requestid"], err.request_id)
      assert.equal(reqs[1].headers["ms-requestid"], reqs[3].headers["ms-requestid"])

      sb:faults { org_fault(nil, { type = "status", status = 429, retry_after = 57, times = 1,
                                   body = THROTTLE_BODY }) }
      time.sleeps = {}
      assert.same(expected_org(ok_ids[1]), assert(mpc:organization(ok_ids[1])))
      -- the origin stays paused for the Retry-After of the last answer (no time passed on the
      -- injected clock), then the new 429 asks for 57 s again
      assert.same({ 57, 57 }, time.sleeps)
    end)

    it("renew an expired token once", function()
      sb:faults { org_fault(nil, { type = "expire_token", times = 1 }) }
      local mpc <close> = client()
      assert(mpc:organization(ok_ids[1]))
      assert.equal(2, #token_requests(sb:log()))
    end)
  end)

  describe("token endpoints", function()
    it("v2 (the default) sends the scope", function()
      local mpc <close> = client()
      assert(mpc:organization(ok_ids[1]))
      local toks = token_requests(sb:log())
      assert.equal(1, #toks)
      assert.equal("/" .. sb.pc_tenant .. "/oauth2/v2.0/token", toks[1].path)
      local form = form_of(toks[1].body)
      assert.equal("client_credentials", form.grant_type)
      assert.equal(sb.client_id, form.client_id)
      assert.equal("[redacted]", form.client_secret)
      assert.equal(SCOPE_V2, form.scope)
      assert.is_nil(form.resource)
      local token_events = {}
      for _, ev in ipairs(events) do
        if ev.type == "token" then token_events[#token_events + 1] = ev end
      end
      assert.equal(1, #token_events)
      assert.equal(SCOPE_V2, token_events[1].scope)
      assert.equal(3600, token_events[1].expires_in)
    end)

    it("v1 sends the resource and reads numbers given as strings", function()
      local mpc <close> = client { token_endpoint = "v1", token_url = sb.pc_token_url_v1 }
      assert(mpc:organization(ok_ids[1]))
      assert(mpc:organization(ok_ids[2])) -- the token is cached: expires_in "3600" was read
      local toks = token_requests(sb:log())
      assert.equal(1, #toks)
      assert.equal("/" .. sb.pc_tenant .. "/oauth2/token", toks[1].path)
      local form = form_of(toks[1].body)
      assert.equal(RESOURCE, form.resource)
      assert.is_nil(form.scope)
      for _, ev in ipairs(events) do
        if ev.type == "token" then assert.equal(3600, ev.expires_in) end
      end
    end)

    it("v1 is inferred from a token_url ending in /oauth2/token", function()
      local mpc <close> = client { token_url = sb.pc_token_url_v1 .. "/" } -- no token_endpoint
      assert(mpc:organization(ok_ids[1]))
      local toks = token_requests(sb:log())
      assert.equal(1, #toks)
      assert.equal("/" .. sb.pc_tenant .. "/oauth2/token", toks[1].path)
      local form = form_of(toks[1].body)
      assert.equal(RESOURCE, form.resource)
      assert.is_nil(form.scope)
      -- the refresh-token grant too; and a v2 URL keeps the scope
      sb:clear_log()
      local user <close> = client { token_url = sb.pc_token_url_v1, client_secret = false,
                                    refresh_token = sb:refresh_token() }
      assert(user:organization(ok_ids[1]))
      assert.equal(RESOURCE, form_of(token_requests(sb:log())[1].body).resource)
      sb:clear_log()
      local v2 <close> = client { token_url = sb.pc_token_url_v2 }
      assert(v2:organization(ok_ids[1]))
      assert.equal(SCOPE_V2, form_of(token_requests(sb:log())[1].body).scope)
    end)

    it("a form the endpoint does not take is refused as auth, tried once", function()
      local mpc <close> = client { token_endpoint = "v1" } -- the v2 URL with a resource
      local org, err = mpc:organization(ok_ids[1])
      assert.is_nil(org)
      assert_error(err, "auth", { sb.client_secret })
      assert.equal("string", type(err.code))
      assert.equal(1, #token_requests(sb:log()))
      assert.equal(0, #api_requests(sb:log()))
    end)

    local function entra_case(extra, code, status)
      local mpc <close> = client(extra)
      local org, err = mpc:organization(ok_ids[1])
      assert.is_nil(org)
      assert_error(err, "auth", { sb.client_secret, extra.client_secret, extra.refresh_token })
      assert.equal(code, err.code)
      assert.equal(status, err.status)
      assert.equal(1, err.attempts)
      assert.equal("POST", err.method)
      assert.matches("AADSTS%d+", err.message)
      assert.matches(GUID, err.trace_id)
      assert.equal("string", type(err.correlation_id))
      assert.equal(1, #token_requests(sb:log())) -- never retried
      assert.equal(0, #api_requests(sb:log()))
      assert.same({}, time.sleeps)
      return err
    end

    it("a wrong secret is auth invalid_client with Entra's ids, without the secret", function()
      local wrong = "wrong-secret-" .. sb.client_secret:sub(1, 6)
      local err = entra_case({ client_secret = wrong }, "invalid_client", 401)
      assert.matches("AADSTS7000215", err.message)
      assert.equal(sb.pc_token_url_v2, err.url)
      for _, ev in ipairs(events) do
        for _, v in pairs(ev) do assert.falsy(tostring(v):find(wrong, 1, true)) end
      end
    end)

    it("an unknown tenant is auth invalid_request", function()
      entra_case({ token_url = sb.url .. "/other.onmicrosoft.com/oauth2/v2.0/token" },
                 "invalid_request", 400)
    end)

    it("builds the token URL from cloud and tenant, and the API URL from cloud", function()
      -- a proxy that refuses every connection: the error names the URL that was tried
      local cases = {
        { "global", "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
          "https://api.partnercenter.microsoft.com" },
        { "usgov", "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/token",
          "https://api.partnercenter.microsoft.com" },
        { "china", "https://login.chinacloudapi.cn/contoso.onmicrosoft.com/oauth2/v2.0/token",
          "https://partner.partnercenterapi.microsoft.cn" },
      }
      for _, case in ipairs(cases) do
        local cloud, token_url, base = table.unpack(case)
        local o = { tenant = "contoso.onmicrosoft.com", client_id = "app", client_secret = "s3cret-value",
                    cloud = cloud, proxy = "http://127.0.0.1:9", max_retries = 0, connect_timeout = 2 }
        local mpc <close> = pc.partnercenter(o)
        local _, err = mpc:organization(ok_ids[1])
        assert_error(err, "network", { "s3cret-value" })
        assert.equal(token_url, err.url)
        o.token_endpoint = "v1"
        local v1 <close> = pc.partnercenter(o)
        _, err = v1:organization(ok_ids[1])
        assert.equal((token_url:gsub("/v2%.0/", "/")), err.url)
        local direct <close> = pc.partnercenter { access_token = "tok-123456", cloud = cloud,
          proxy = "http://127.0.0.1:9", max_retries = 0 }
        _, err = direct:organization(ok_ids[1])
        assert_error(err, "network", { "tok-123456" })
        assert.equal(base .. "/v1/customers/" .. ok_ids[1] .. "/organization", err.url)
      end
    end)
  end)

  describe("app+user: refresh tokens", function()
    it("hands every new refresh token to on_refresh_token before the access token is used", function()
      local first = sb:refresh_token()
      local handed = {}
      local mpc <close> = client {
        client_secret = sb.client_secret,
        refresh_token = first,
        on_refresh_token = function(new)
          -- before use: no API request has carried the new access token yet
          handed[#handed + 1] = { token = new, api_requests = #api_requests(sb:log()) }
        end,
      }
      assert(mpc:organization(ok_ids[1]))
      assert.equal(1, #handed)
      assert.equal("string", type(handed[1].token))
      assert.not_equal(first, handed[1].token)
      assert.equal(0, handed[1].api_requests)
      local toks = token_requests(sb:log())
      assert.equal(1, #toks)
      local form = form_of(toks[1].body)
      assert.equal("refresh_token", form.grant_type)
      assert.equal("[redacted]", form.refresh_token)
      assert.equal(SCOPE_V2, form.scope)

      -- the access token expires: the client redeems the NEW refresh token, and hands on the next
      sb:faults { org_fault(nil, { type = "expire_token", times = 1 }) }
      assert(mpc:organization(ok_ids[2]))
      assert.equal(2, #handed)
      assert.not_equal(handed[1].token, handed[2].token)
      assert.equal(2, handed[2].api_requests) -- the first call and the 401 only
      assert.equal(2, #token_requests(sb:log()))

      -- no refresh token in any event
      for _, ev in ipairs(events) do
        for _, v in pairs(ev) do
          for _, t in ipairs { first, handed[1].token, handed[2].token } do
            assert.falsy(tostring(v):find(t, 1, true))
          end
        end
      end

      -- a refresh token already redeemed is refused: auth invalid_grant, tried once
      for _, old in ipairs { first, handed[1].token } do
        sb:clear_log()
        local called = false
        local stale <close> = client { refresh_token = old, on_refresh_token = function() called = true end }
        local org, err = stale:organization(ok_ids[1])
        assert.is_nil(org)
        assert_error(err, "auth", { old, sb.client_secret })
        assert.equal("invalid_grant", err.code)
        assert.equal(400, err.status)
        assert.equal(1, err.attempts)
        assert.matches("AADSTS70008", err.message)
        assert.matches(GUID, err.trace_id)
        assert.equal("string", type(err.correlation_id))
        assert.is_false(called)
        assert.equal(1, #token_requests(sb:log()))
        assert.equal(0, #api_requests(sb:log()))
      end

      -- the last one handed on still works
      local fresh <close> = client { refresh_token = handed[2].token }
      assert(fresh:organization(ok_ids[1]))
    end)

    it("works on the v1 endpoint and without a client secret in the options' way", function()
      local got
      local mpc <close> = client { token_endpoint = "v1", token_url = sb.pc_token_url_v1,
                                   refresh_token = sb:refresh_token(),
                                   on_refresh_token = function(new) got = new end }
      assert(mpc:organization(ok_ids[1]))
      assert.equal("string", type(got))
      local form = form_of(token_requests(sb:log())[1].body)
      assert.equal("refresh_token", form.grant_type)
      assert.equal(RESOURCE, form.resource)
    end)

    it("lets an error of on_refresh_token propagate; the client keeps the new token", function()
      local kept
      local mpc <close> = client {
        refresh_token = sb:refresh_token(),
        on_refresh_token = function(new)
          if not kept then kept = new; error("cannot save it", 0) end
        end,
      }
      local ok, err = pcall(mpc.organization, mpc, ok_ids[1])
      assert.is_false(ok)
      assert.equal("cannot save it", err)
      assert.equal(0, #api_requests(sb:log()))
      -- still usable, with the new refresh token (the one redeemed is gone)
      assert(mpc:organization(ok_ids[1]))
    end)
  end)

  describe("other credentials", function()
    it("use an access token as it is", function()
      local token = sb:pc_token()
      sb:clear_log()
      local mpc <close> = pc.partnercenter { access_token = token, base_url = sb.url }
      assert.same(expected_org(ok_ids[1]), assert(mpc:organization(ok_ids[1])))
      local _, err = mpc:organization(forbidden_ids[1])
      assert_error(err, "auth", { token })
      assert.equal(0, #token_requests(sb:log()))
    end)

    it("ask a token function for the Partner Center scope", function()
      local scopes = {}
      local mpc <close> = pc.partnercenter {
        base_url = sb.url,
        token = function(scope)
          scopes[#scopes + 1] = scope
          return sb:pc_token(), 3600
        end,
      }
      assert(mpc:organization(ok_ids[1]))
      assert(mpc:customers())
      assert.same({ SCOPE_V2 }, scopes)
    end)

    it("an AvePoint token is refused", function()
      local mpc <close> = pc.partnercenter { access_token = sb:token("elements.customers.read.all"),
                                              base_url = sb.url, max_retries = 0 }
      local _, err = mpc:organization(ok_ids[1])
      assert_error(err, "auth")
      assert.equal(401, err.status)
    end)
  end)

  describe("close()", function()
    it("frees the client; methods on a closed client raise", function()
      local mpc = client()
      assert(mpc:organization(ok_ids[1]))
      mpc:close()
      mpc:close() -- idempotent
      raises(function() mpc:organization(ok_ids[1]) end, "closed Partner Center client")
      raises(function() mpc:customers() end, "closed")
      raises(function() mpc.organization({}, ok_ids[1]) end, "call it as mpc:organization")
      do
        local scoped <close> = client()
        assert(scoped:organization(ok_ids[1]))
      end
    end)

    it("makes an iterator of the closed client raise one clear error, as io.lines does", function()
      local mpc = client()
      local it = mpc:each_customer { page_size = 5 }
      assert.is_string(it().id)
      local fresh = mpc:each_customer { page_size = 5 } -- never started
      mpc:close()
      -- called from Lua code, as a for loop does (a tail call or pcall(it) would hide the line)
      raises(function() local c = it() return c end, "each_customer: attempt to use a closed Partner Center client")
      raises(function() for _ in fresh do end end, "each_customer: attempt to use a closed Partner Center client")
    end)

    it("is refused from a hook while a call runs, and changes nothing", function()
      local mpc, closing
      mpc = client { on_event = function(ev)
        if closing == ev.type then mpc:close() end
      end }
      for _, hook in ipairs { "token", "page", "request" } do -- the first call fetches a token
        closing = hook
        local ok, err = pcall(mpc.customers, mpc, { page_size = 5 })
        assert.is_false(ok, hook)
        assert.matches("close: the Partner Center client is in a call", err)
        closing = nil
        assert.equal(#tenants, #assert(mpc:customers { page_size = 5 }), hook) -- still open
      end
      closing = "page"
      local ok, err = pcall(function() for _ in mpc:each_customer { page_size = 5 } do end end)
      assert.is_false(ok)
      assert.matches("in a call", err)
      closing = nil
      ok, err = pcall(mpc.organizations, mpc, ok_ids, { progress = function() mpc:close() end })
      assert.is_false(ok)
      assert.matches("in a call", err)
      assert(mpc:organization(ok_ids[1]))
      mpc:close()
      raises(function() mpc:organization(ok_ids[1]) end, "closed")
    end)
  end)
end)

describe("pc.partnercenter options", function()
  local LOOP = "http://127.0.0.1:9" -- nothing listens there; these tests never send a request
  local function with(extra)
    local o = { tenant = "contoso.onmicrosoft.com", client_id = "app", client_secret = "secret-1",
                base_url = LOOP, token_url = LOOP .. "/t/oauth2/v2.0/token" }
    for k, v in pairs(extra) do
      if v == false then o[k] = nil else o[k] = v end
    end
    return o
  end

  it("are checked, copied and never modified", function()
    local o = with { locale = "en-US", cloud = "USGov", token_endpoint = "V1", max_parallel = 2.0,
                     correlation_id = "12345678-9abc-4def-8123-456789abcdef" }
    local copy = {}
    for k, v in pairs(o) do copy[k] = v end
    pc.partnercenter(o):close()
    assert.same(copy, o)
  end)

  it("refuse unknown keys and bad values, naming the option", function()
    raises(function() pc.partnercenter "x" end, "pc.partnercenter expects an option table")
    raises(function() pc.partnercenter(with { environment = "commercial" }) end,
           "unknown option 'environment'")
    local bad = {
      tenant = { "", "a/b", "contoso.onmicrosoft.com/../x", 5, "a b" },
      cloud = { "azure", "" },
      token_endpoint = { "v3", 2 },
      correlation_id = { "not-a-guid", "" },
      locale = { "en-US\r\nX: y", "", 5 },
      base_url = { "http://api.example.com", "ftp://x" },
      token_url = { "http://login.example.com/t/oauth2/token" },
      timeout = { 0, "3" }, max_retries = { 11 }, max_parallel = { 0, 65 },
      on_refresh_token = { "f" }, refresh_token = { 5, "" }, user_agent = { "a\nb" },
      clock = { 1 }, sleep = { true }, on_event = { "f" }, certificate = { "app.pfx" },
    }
    for name, values in pairs(bad) do
      for _, v in ipairs(values) do
        raises(function() pc.partnercenter(with { [name] = v }) end, "option '" .. name .. "' must be")
      end
    end
    -- what the core refuses is blamed on the caller's line too
    raises(function() pc.partnercenter(with { proxy = "http://proxy\r\nX-Evil: 1" }) end, "option 'proxy'")
  end)

  it("need one kind of credentials", function()
    raises(function() pc.partnercenter { base_url = LOOP } end, "needs credentials")
    raises(function() pc.partnercenter() end, "needs credentials")
    raises(function() pc.partnercenter(with { access_token = "tok-123456" }) end,
           "one kind of credentials")
    raises(function() pc.partnercenter(with { refresh_token = "rt-1", token = function() end }) end,
           "one kind of credentials")
    raises(function() pc.partnercenter(with { client_secret = false }) end,
           "option 'client_id' needs option 'client_secret' (app-only) or option 'refresh_token'")
    raises(function() pc.partnercenter(with { client_id = false }) end,
           "option 'client_secret' needs option 'client_id'")
    raises(function() pc.partnercenter(with { client_id = false, client_secret = false,
                                              refresh_token = "rt-1" }) end,
           "option 'refresh_token' needs option 'client_id'")
    raises(function() pc.partnercenter(with { on_refresh_token = function() end }) end,
           "option 'on_refresh_token' needs option 'refresh_token'")
    raises(function() pc.partnercenter(with { client_secret = false, certificate = { pfx = "no-such.pfx" } }) end,
           "certificate.pfx: cannot read 'no-such.pfx'")
    raises(function() pc.partnercenter(with { client_secret = false, refresh_token = "rt-1",
                                              certificate = { pfx = "no-such.pfx" } }) end,
           "one kind of credentials")
    raises(function() pc.partnercenter(with { tenant = false, token_url = false }) end,
           "option 'tenant' is required")
    -- enough: a token URL instead of the tenant, a refresh token with or without a secret
    pc.partnercenter(with { tenant = false }):close()
    pc.partnercenter(with { refresh_token = "rt-1" }):close()
    pc.partnercenter(with { refresh_token = "rt-1", client_secret = false,
                            on_refresh_token = function() end }):close()
    pc.partnercenter { access_token = "tok-123456" }:close()
  end)
end)
