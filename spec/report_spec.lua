-- report.rows: AvePoint v3 customers joined with the Partner Center organizations of their
-- tenants, against the real sandbox and with stand-in clients; and the report's formats.
local pc = require "partnercustomers"
local report = require "partnercustomers.report"
local format = require "partnercustomers.format"
local sandbox = require "spec.helpers.sandbox"
local cjson = require "cjson"

local T1 = "11111111-1111-4111-8111-111111111111"
local T2 = "22222222-2222-4222-8222-222222222222"
local T3 = "33333333-3333-4333-8333-333333333333"

local sink = require("spec.helpers.util").sink

describe("report.rows against the sandbox", function()
  local sb, customers, orgs

  setup(function()
    sb = sandbox.start { count = 24, seed = 4 }
    customers = sb:customers()
    orgs = sb:pc_organizations()
  end)
  teardown(function() sb:stop() end)
  before_each(function() sb:faults {} end)

  local function clients()
    local ave = pc.avepoint { client_id = sb.client_id, client_secret = sb.client_secret,
                              base_url = sb.url, token_url = sb.token_url, max_retries = 0 }
    local mpc = pc.partnercenter { tenant = sb.pc_tenant, client_id = sb.client_id,
                                   client_secret = sb.client_secret, base_url = sb.url,
                                   token_url = sb.pc_token_url_v2, max_retries = 0 }
    return ave, mpc
  end

  it("gives a row per customer and tenant, in the service's order", function()
    local unknown = customers[2].tenants[1].id -- Partner Center answers 404 for this one
    sb:faults { { type = "status", status = 404, times = -1,
                  path = "^/v1/customers/" .. unknown:gsub("%-", "%%-") .. "/organization$",
                  body = '{"code":"600008","description":"not found","data":[],"source":"PartnerFD"}' } }
    local a, m = clients()
    local ave <close> = a
    local mpc <close> = m
    local rows = assert(report.rows(ave, mpc, { parallel = 4, page_size = 10 }))

    local i, seen = 0, { empty = false, forbidden = false, found = false, several = false }
    for _, c in ipairs(customers) do
      local tenants = c.tenants
      seen.several = seen.several or #tenants > 1
      if #tenants == 0 then
        seen.empty = true
        i = i + 1
        local row = rows[i]
        assert.equal(c.id, row.customerId)
        assert.equal(c.organization, row.organization)
        assert.is_nil(row.tenantId)
        assert.is_nil(row.displayName)
        assert.is_nil(row.failure)
        assert.is_nil(row.error)
      end
      for _, t in ipairs(tenants) do
        i = i + 1
        local row = rows[i]
        assert.equal(c.id, row.customerId)
        assert.equal(c.organization, row.organization)
        assert.equal(c.ownerEmail, row.ownerEmail)
        assert.equal(pc.job_status.labels[c.jobStatus], row.jobStatus)
        assert.equal(t.id, row.tenantId)
        local want = orgs[t.id]
        if t.id == unknown then
          assert.equal("http 404", row.failure)
          assert.equal(404, row.error.kind == "http" and row.error.status)
          assert.equal("600008", row.error.code)
          assert.is_nil(row.displayName)
        elseif want.status == 403 then
          seen.forbidden = true
          assert.equal("auth 403", row.failure)
          assert.is_true(pc.is_error(row.error))
          assert.equal("auth", row.error.kind)
          assert.is_nil(row.displayName)
          assert.is_nil(row.technicalNotificationMails)
        else
          seen.found = true
          local org = want.organization
          assert.is_nil(row.failure)
          assert.equal(org.displayName, row.displayName)
          assert.equal(org.countryLetterCode, row.countryLetterCode)
          assert.equal(org.city, row.city)
          assert.same(org.technicalNotificationMails or {}, row.technicalNotificationMails)
        end
      end
    end
    assert.equal(i, #rows)
    for what, yes in pairs(seen) do assert.is_true(yes, what) end
  end)

  it("fails as a whole only when AvePoint fails", function()
    sb:faults { { type = "status", status = 500, path = "^/partner/", times = -1 } }
    local a, m = clients()
    local ave <close> = a
    local mpc <close> = m
    local rows, err = report.rows(ave, mpc)
    assert.is_nil(rows)
    assert.equal("http", err.kind)
    assert.equal(500, err.status)
  end)

  it("names a Partner Center failure in every row it touches", function()
    sb:faults { { type = "status", status = 503, path = "^/v1/", times = -1 } }
    local a, m = clients()
    local ave <close> = a
    local mpc <close> = m
    local rows = assert(report.rows(ave, mpc))
    for _, row in ipairs(rows) do
      if row.tenantId then
        assert.equal("http 503", row.failure)
        assert.is_false(report.tenant_specific(row.error))
      end
    end
  end)
end)

describe("report.rows with stand-in clients", function()
  local function ave_of(list, err)
    return { all_customers = function() if err then return nil, err end return list end }
  end

  local function mpc_of(orgs, errors, asked)
    return {
      organizations = function(_, ids, opts)
        asked[#asked + 1] = { ids = ids, opts = opts }
        return orgs, errors
      end,
    }
  end

  it("looks every tenant up once, and never one that is not a GUID", function()
    local list = {
      { id = "a", organization = "A", tenants = { { id = T1 }, { id = T2, name = "two" } } },
      { id = "b", organization = "B", tenants = {} },
      { id = "c", organization = "C", tenants = { { id = T1 }, { id = "contoso.onmicrosoft.com" },
                                                   { name = "no id" } } },
      { id = "d", organization = "D" }, -- no tenants field at all
      { id = "e", organization = "E", tenants = { { id = T3 } } },
    }
    local forbidden = setmetatable({ kind = "auth", status = 403,
      url = "https://api.partnercenter.microsoft.com/v1/customers/" .. T2 .. "/organization" }, pc.Error)
    local network = setmetatable({ kind = "network", url = "https://login.microsoftonline.com/x" }, pc.Error)
    local asked = {}
    local rows = assert(report.rows(ave_of(list), mpc_of(
      { [T1] = { displayName = "One", countryLetterCode = "DE", city = "Köln",
                 technicalNotificationMails = { "a@one.example", "b@one.example" } } },
      { [T2] = forbidden, [T3] = network }, asked), { parallel = 3 }))

    assert.equal(1, #asked)
    assert.same({ T1, T2, T3 }, asked[1].ids)
    assert.equal(3, asked[1].opts.parallel)

    local summary = {}
    for i, r in ipairs(rows) do
      summary[i] = { r.customerId, r.tenantId or false, r.displayName or false, r.failure or false }
    end
    assert.same({
      { "a", T1, "One", false },
      { "a", T2, false, "auth 403" },
      { "b", false, false, false },
      { "c", T1, "One", false },
      { "c", "contoso.onmicrosoft.com", false, "not a GUID" },
      { "c", false, false, "no tenant id" },
      { "d", false, false, false },
      { "e", T3, false, "network" },
    }, summary)
    assert.equal("Köln", rows[1].city)
    assert.same({ "a@one.example", "b@one.example" }, rows[1].technicalNotificationMails)
    assert.is_true(report.tenant_specific(rows[2].error))
    assert.is_false(report.tenant_specific(rows[8].error))
  end)

  it("returns AvePoint's error as it is", function()
    local err = setmetatable({ kind = "timeout" }, pc.Error)
    local rows, got = report.rows(ave_of(nil, err), mpc_of({}, {}, {}))
    assert.is_nil(rows)
    assert.equal(err, got)
  end)

  it("refuses bad options", function()
    for _, o in ipairs { { parallel = 0 }, { page_size = 101 }, { progress = 1 }, { colour = true } } do
      assert.has_error(function() report.rows(ave_of({}), mpc_of({}, {}, {}), o) end)
    end
  end)

  it("names failures by kind and status", function()
    assert.equal("auth 403", report.failure { kind = "auth", status = 403 })
    assert.equal("http 404", report.failure { kind = "http", status = 404 })
    assert.equal("throttled 429", report.failure { kind = "throttled", status = 429 })
    assert.equal("protocol", report.failure { kind = "protocol", status = 200 })
    assert.equal("timeout", report.failure { kind = "timeout" })
  end)
end)

describe("the report's formats", function()
  local ROWS = {
    { customerId = "c1", organization = "Contoso", ownerEmail = "admin@contoso.example",
      jobStatus = "Working", tenantId = T1, displayName = "Contoso Ltd", countryLetterCode = "GB",
      city = "London", technicalNotificationMails = { "it@contoso.example", "noc@contoso.example" } },
    { customerId = "c1", organization = "Contoso", ownerEmail = "admin@contoso.example",
      jobStatus = "Working", tenantId = T2, failure = "auth 403",
      error = setmetatable({ kind = "auth", status = 403, message = "Forbidden" }, pc.Error) },
    { customerId = "c2", organization = "Zürich, \"AG\"", jobStatus = "Failed" },
  }

  local function render(name)
    local out = sink()
    assert(format.write(name, out, ROWS, "report"))
    return out.text()
  end

  it("table: one column each, the failure in its own", function()
    local lines = {}
    for l in render("table"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
    assert.equal(5, #lines)
    assert.matches("^Organization%s+Owner e%-mail%s+Job status%s+Tenant%s+Display name%s+Country%s+"
                   .. "City%s+Notification e%-mails%s+Failure$", lines[1])
    assert.truthy(lines[3]:find("it@contoso.example; noc@contoso.example", 1, true))
    assert.matches("auth 403$", lines[4])
    local failure_col = lines[1]:find("Failure", 1, true)
    assert.equal(failure_col, lines[4]:find("auth 403", 1, true))
  end)

  it("csv: the same columns with the customer id first", function()
    local rows = {}
    for row in render("csv"):gmatch("(.-)\r\n") do rows[#rows + 1] = row end
    assert.equal("customerId,organization,ownerEmail,jobStatus,tenantId,displayName,"
                 .. "countryLetterCode,city,technicalNotificationMails,failure", rows[1])
    assert.equal("c1,Contoso,admin@contoso.example,Working," .. T1 .. ",Contoso Ltd,GB,London,"
                 .. "it@contoso.example; noc@contoso.example,", rows[2])
    assert.equal("c1,Contoso,admin@contoso.example,Working," .. T2 .. ",,,,,auth 403", rows[3])
    assert.equal('c2,"Zürich, ""AG""",,Failed,,,,,,', rows[4])
  end)

  it("json and ndjson: objects with the mails as an array and no error object", function()
    local list = cjson.decode(render("json"))
    assert.equal(3, #list)
    assert.same({ "it@contoso.example", "noc@contoso.example" }, list[1].technicalNotificationMails)
    assert.equal("auth 403", list[2].failure)
    assert.is_nil(list[2].error)
    assert.matches('^{"customerId":"c1","organization":"Contoso",', render("ndjson"))
    local n = 0
    for l in render("ndjson"):gmatch("([^\n]*)\n") do
      n = n + 1
      assert.equal(ROWS[n].customerId, cjson.decode(l).customerId)
    end
    assert.equal(3, n)
  end)

  it("refuses an unknown layout", function()
    local ok, err = pcall(format.writer, "table", sink(), "nope")
    assert.is_false(ok)
    assert.matches("unknown layout", err)
  end)
end)
