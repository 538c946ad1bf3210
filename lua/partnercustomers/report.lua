-- The report: AvePoint v3 customers joined with the Partner Center organization of each of their
-- tenants. A pure function over two clients (anything with their methods), so specs can test it
-- directly; formatting is format.lua's ("report" layout).
--
--   local rows, err = report.rows(ave, mpc, {page_size = 100, parallel = 8, progress = fn,
--                                            deadline = seconds})
--
-- One row per (customer, tenant), in the service's order; a customer without tenants gives one row
-- without Partner Center fields. A row:
--   customerId, organization, ownerEmail, jobStatus     -- the AvePoint customer
--   tenantId                                            -- the AvePoint tenant's id
--   displayName, countryLetterCode, city, technicalNotificationMails (array)
--                                                       -- its Partner Center organization
--   failure = "auth 403" | "http 404" | "network" | …   -- where the lookup failed
--   error                                               -- the error object of that failure
-- An AvePoint failure fails the whole report (nil, err); a failed lookup fails only its rows.
-- `parallel`: lookups at once (default: mpc's max_parallel; more is misuse). `deadline`: seconds
-- for the whole report: the listing and the lookups share it; a deadline that passes before the
-- lookups start fails the report with a `timeout` error, and lookups that cannot start in time
-- fail their rows with one.

local util = require "partnercustomers.util"
local is_guid = require("partnercustomers.partnercenter").is_guid

local M = {}

local OPTIONS = {
  page_size = util.number { integer = true, min = 1, max = 100 },
  parallel = util.parallel,
  progress = util.func,
  deadline = util.deadline,
}

-- "auth 403", "http 404", "throttled 429"; the kind alone where no status tells more.
function M.failure(err)
  if type(err) ~= "table" then return tostring(err) end
  local kind = err.kind or "error"
  if math.type(err.status) == "integer" and (kind == "http" or kind == "auth" or kind == "throttled") then
    return ("%s %d"):format(kind, err.status)
  end
  return kind
end

-- Whether a failed lookup is the service's answer about that one tenant (no GDAP role: 403, not a
-- customer: 404), rather than a failure of the service, the network or the credentials.
function M.tenant_specific(err)
  return type(err) == "table" and (err.status == 403 or err.status == 404)
    and type(err.url) == "string" and err.url:find("/organization$") ~= nil
end

local function base_row(c)
  return {
    customerId = c.id,
    organization = c.organization,
    ownerEmail = c.ownerEmail,
    jobStatus = c.jobStatus,
  }
end

-- A clock of the clients (anything with their methods: specs pass fakes), for the deadline.
local function clock_of(ave, mpc)
  for _, w in ipairs { ave, mpc } do
    if type(w) == "table" and type(rawget(w, "_clock")) == "function" then return w._clock end
  end
  return require("partnercustomers.core").now
end

function M.rows(ave, mpc, opts)
  local o = util.options(opts, OPTIONS, "report.rows", 2)
  -- a parallel above the Partner Center client's max_parallel is misuse here, at the caller's line
  local max = type(mpc) == "table" and rawget(mpc, "_max_parallel")
  if o.parallel and math.type(max) == "integer" then
    util.parallel_of(mpc, o, "report.rows", 2)
  end
  local clock = clock_of(ave, mpc)
  local at = o.deadline and clock() + o.deadline
  local customers, err = ave:all_customers { page_size = o.page_size, deadline = o.deadline }
  if not customers then return nil, err end

  local ids, seen = {}, {}
  for _, c in ipairs(customers) do
    for _, t in ipairs(c.tenants or {}) do
      local id = t.id
      if is_guid(id) and not seen[id] then
        seen[id] = true
        ids[#ids + 1] = id
      end
    end
  end
  local left
  if at then
    left = at - clock()
    if not (left > 0) then
      return nil, require("partnercustomers.core").error {
        kind = "timeout", method = "GET", url = "(Partner Center lookups)", attempts = 0,
        message = "the deadline of report.rows passed before the Partner Center lookups could start",
      }
    end
  end
  local orgs, errors = mpc:organizations(ids, { parallel = o.parallel, progress = o.progress,
                                               deadline = left })

  local rows = {}
  for _, c in ipairs(customers) do
    local tenants = c.tenants or {}
    if #tenants == 0 then rows[#rows + 1] = base_row(c) end
    for _, t in ipairs(tenants) do
      local row = base_row(c)
      row.tenantId = t.id
      local org = orgs[t.id]
      if org then
        row.displayName = org.displayName
        row.countryLetterCode = org.countryLetterCode
        row.city = org.city
        row.technicalNotificationMails = org.technicalNotificationMails
      elseif errors[t.id] then
        row.error = errors[t.id]
        row.failure = M.failure(row.error)
      elseif t.id == nil then
        row.failure = "no tenant id"
      else
        row.failure = "not a GUID" -- never looked up: Partner Center takes GUIDs only
      end
      rows[#rows + 1] = row
    end
  end
  return rows
end

return M
