-- Output formats of the command line: table, csv, json, ndjson.
--
-- format.writer(name, out, layout) returns a writer with :add(row) and :finish(); `out` is anything
-- with a file's write method. csv, json and ndjson write as rows arrive; table must see every row
-- to size its columns, so it writes on finish. Both return true, or nil and the write error.
--
-- `layout` says what a row is (M.LAYOUTS): "customers" (the default: AvePoint customers),
-- "pc_customers" (Partner Center customers), "organizations" (Partner Center organizations with
-- their tenantId added) and "report" (rows of report.lua).

local util = require "partnercustomers.util"

local M = {}

M.NAMES = { "table", "csv", "json", "ndjson" }

-- JSON objects list these keys first, the rest sorted ("name" is a tenant's).
local KEY_ORDER = { "id", "name", "organization", "ownerEmail", "jobStatus", "jobStatusCode",
                    "countryOrRegion", "managementMode", "tenants" }
local PC_CUSTOMER_ORDER = { "id", "companyProfile", "tenantId", "domain", "companyName",
                            "relationshipToPartner" }
local ORGANIZATION_ORDER = { "tenantId", "displayName", "street", "city", "state", "postalCode",
                             "countryLetterCode", "technicalNotificationMails" }
local REPORT_ORDER = { "customerId", "organization", "ownerEmail", "jobStatus", "tenantId",
                       "displayName", "countryLetterCode", "city", "technicalNotificationMails",
                       "failure" }

local MODES = { [0] = "Customer", "Partner", "To configure" }

local function text(v)
  if v == nil then return "" end
  if math.type(v) == "float" then return util.dot_decimal(tostring(v)) end -- whatever the locale
  return tostring(v)
end

local function tenant_field(c, key)
  local parts = {}
  for i, t in ipairs(c.tenants or {}) do parts[i] = text(t[key]) end
  return parts
end

local function write(out, s)
  local ok, err = out:write(s)
  if ok == nil and err ~= nil then return nil, err end
  return true
end

local function writer(add, finish)
  return { add = add, finish = finish or function() return true end }
end

------------------------------------------------------------------------------------------------
-- table

-- East Asian wide and fullwidth ranges (two terminal columns each) and combining marks (none).
local WIDE = {
  { 0x1100, 0x115F }, { 0x2E80, 0x303E }, { 0x3041, 0x33FF }, { 0x3400, 0x4DBF },
  { 0x4E00, 0x9FFF }, { 0xA000, 0xA4CF }, { 0xAC00, 0xD7A3 }, { 0xF900, 0xFAFF },
  { 0xFE30, 0xFE4F }, { 0xFF00, 0xFF60 }, { 0xFFE0, 0xFFE6 }, { 0x1F300, 0x1F64F },
  { 0x1F900, 0x1F9FF }, { 0x20000, 0x3FFFD },
}
local COMBINING = { { 0x0300, 0x036F }, { 0x200B, 0x200F }, { 0xFE00, 0xFE0F } }

local function within(ranges, cp)
  for _, r in ipairs(ranges) do
    if cp >= r[1] and cp <= r[2] then return true end
  end
  return false
end

-- Display width in terminal columns: one per code point (utf8.len), two for wide ones, none
-- for combining marks; bytes for a string that is not valid UTF-8.
local function width(s)
  local n = utf8.len(s)
  if not n or n == #s then return n or #s end -- invalid, or plain ASCII
  for _, cp in utf8.codes(s) do
    if within(WIDE, cp) then
      n = n + 1
    elseif within(COMBINING, cp) then
      n = n - 1
    end
  end
  return n
end

-- Notification e-mails in one cell.
local function mails(list)
  local parts = {}
  for i, m in ipairs(list or {}) do parts[i] = text(m) end
  return table.concat(parts, "; ")
end

local function profile(c, key)
  return text(type(c.companyProfile) == "table" and c.companyProfile[key] or nil)
end

local COLUMNS = {
  { "ID", function(c) return text(c.id) end },
  { "Organization", function(c) return text(c.organization) end },
  { "Owner e-mail", function(c) return text(c.ownerEmail) end },
  { "Job status", function(c) return text(c.jobStatus) end },
  { "Country", function(c) return text(c.countryOrRegion) end },
  { "Mode", function(c) return MODES[c.managementMode] or text(c.managementMode) end },
  { "Tenants", function(c)
      local names = {}
      for i, t in ipairs(c.tenants or {}) do names[i] = text(t.name or t.id) end
      return table.concat(names, ", ")
    end },
}

local function table_writer(out, layout)
  local columns = layout.columns
  local header = {}
  for i, col in ipairs(columns) do header[i] = col[1] end
  local rows = { header }
  return writer(function(_, c)
    local row = {}
    for i, col in ipairs(columns) do
      row[i] = col[2](c):gsub("%c", " ") -- a newline in a name must not break the table
    end
    rows[#rows + 1] = row
    return true
  end, function()
    local widths = {}
    for _, row in ipairs(rows) do
      for i, cell in ipairs(row) do widths[i] = math.max(widths[i] or 0, width(cell)) end
    end
    local rule = {}
    for i, w in ipairs(widths) do rule[i] = ("-"):rep(w) end
    table.insert(rows, 2, rule)
    local lines = {}
    for n, row in ipairs(rows) do
      local cells = {}
      for i, cell in ipairs(row) do
        cells[i] = cell .. (" "):rep(widths[i] - width(cell))
      end
      lines[n] = table.concat(cells, "  "):gsub("%s+$", "")
    end
    return write(out, table.concat(lines, "\n") .. "\n")
  end)
end

------------------------------------------------------------------------------------------------
-- csv (RFC 4180: CRLF line ends, a header row, quotes where needed)

local CSV_COLUMNS = {
  { "id", function(c) return text(c.id) end },
  { "organization", function(c) return text(c.organization) end },
  { "ownerEmail", function(c) return text(c.ownerEmail) end },
  { "jobStatus", function(c) return text(c.jobStatus) end },
  { "jobStatusCode", function(c) return text(c.jobStatusCode) end },
  { "countryOrRegion", function(c) return text(c.countryOrRegion) end },
  { "managementMode", function(c) return text(c.managementMode) end },
  { "tenantIds", function(c) return table.concat(tenant_field(c, "id"), ";") end },
  { "tenantNames", function(c) return table.concat(tenant_field(c, "name"), ";") end },
}

function M.csv_field(s)
  if s:find('[,"\r\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local function csv_line(cells)
  for i, cell in ipairs(cells) do cells[i] = M.csv_field(cell) end
  return table.concat(cells, ",") .. "\r\n"
end

local function csv_writer(out, layout)
  local columns = layout.csv_columns
  local started = false
  local function header()
    if started then return true end
    started = true
    local names = {}
    for i, col in ipairs(columns) do names[i] = col[1] end
    return write(out, csv_line(names))
  end
  return writer(function(_, c)
    local ok, err = header()
    if not ok then return nil, err end
    local cells = {}
    for i, col in ipairs(columns) do cells[i] = col[2](c) end
    return write(out, csv_line(cells))
  end, header) -- no rows: the header alone
end

------------------------------------------------------------------------------------------------
-- json and ndjson

function M.json(v, order)
  return util.json_encode(v, order or KEY_ORDER)
end

local function json_writer(out, layout)
  local n = 0
  return writer(function(_, c)
    n = n + 1
    return write(out, (n == 1 and "[\n" or ",\n") .. M.json(layout.object(c), layout.key_order))
  end, function()
    return write(out, n == 0 and "[]\n" or "\n]\n")
  end)
end

local function ndjson_writer(out, layout)
  return writer(function(_, c)
    return write(out, M.json(layout.object(c), layout.key_order) .. "\n")
  end)
end

local WRITERS = { table = table_writer, csv = csv_writer, json = json_writer, ndjson = ndjson_writer }

------------------------------------------------------------------------------------------------
-- Layouts: what the columns of each kind of row are

local function as_is(row) return row end

-- A report row without its error object (the failure column says what it was).
local function report_object(row)
  local copy = {}
  for k, v in pairs(row) do
    if k ~= "error" then copy[k] = v end
  end
  return copy
end

local LAYOUTS = {
  customers = { columns = COLUMNS, csv_columns = CSV_COLUMNS, key_order = KEY_ORDER, object = as_is },

  pc_customers = {
    columns = {
      { "ID", function(c) return text(c.id) end },
      { "Company", function(c) return profile(c, "companyName") end },
      { "Domain", function(c) return profile(c, "domain") end },
      { "Tenant", function(c) return profile(c, "tenantId") end },
      { "Relationship", function(c) return text(c.relationshipToPartner) end },
    },
    csv_columns = {
      { "id", function(c) return text(c.id) end },
      { "tenantId", function(c) return profile(c, "tenantId") end },
      { "domain", function(c) return profile(c, "domain") end },
      { "companyName", function(c) return profile(c, "companyName") end },
      { "relationshipToPartner", function(c) return text(c.relationshipToPartner) end },
    },
    key_order = PC_CUSTOMER_ORDER,
    object = as_is,
  },

  organizations = {
    columns = {
      { "Tenant", function(o) return text(o.tenantId) end },
      { "Display name", function(o) return text(o.displayName) end },
      { "Country", function(o) return text(o.countryLetterCode) end },
      { "State", function(o) return text(o.state) end },
      { "City", function(o) return text(o.city) end },
      { "Postal code", function(o) return text(o.postalCode) end },
      { "Street", function(o) return text(o.street) end },
      { "Notification e-mails", function(o) return mails(o.technicalNotificationMails) end },
    },
    csv_columns = {
      { "tenantId", function(o) return text(o.tenantId) end },
      { "displayName", function(o) return text(o.displayName) end },
      { "street", function(o) return text(o.street) end },
      { "city", function(o) return text(o.city) end },
      { "state", function(o) return text(o.state) end },
      { "postalCode", function(o) return text(o.postalCode) end },
      { "countryLetterCode", function(o) return text(o.countryLetterCode) end },
      { "technicalNotificationMails", function(o) return mails(o.technicalNotificationMails) end },
    },
    key_order = ORGANIZATION_ORDER,
    object = as_is,
  },

  report = {
    columns = {
      { "Organization", function(r) return text(r.organization) end },
      { "Owner e-mail", function(r) return text(r.ownerEmail) end },
      { "Job status", function(r) return text(r.jobStatus) end },
      { "Tenant", function(r) return text(r.tenantId) end },
      { "Display name", function(r) return text(r.displayName) end },
      { "Country", function(r) return text(r.countryLetterCode) end },
      { "City", function(r) return text(r.city) end },
      { "Notification e-mails", function(r) return mails(r.technicalNotificationMails) end },
      { "Failure", function(r) return text(r.failure) end },
    },
    csv_columns = {
      { "customerId", function(r) return text(r.customerId) end },
      { "organization", function(r) return text(r.organization) end },
      { "ownerEmail", function(r) return text(r.ownerEmail) end },
      { "jobStatus", function(r) return text(r.jobStatus) end },
      { "tenantId", function(r) return text(r.tenantId) end },
      { "displayName", function(r) return text(r.displayName) end },
      { "countryLetterCode", function(r) return text(r.countryLetterCode) end },
      { "city", function(r) return text(r.city) end },
      { "technicalNotificationMails", function(r) return mails(r.technicalNotificationMails) end },
      { "failure", function(r) return text(r.failure) end },
    },
    key_order = REPORT_ORDER,
    object = report_object,
  },
}

M.LAYOUTS = { "customers", "pc_customers", "organizations", "report" }

-- Whether rows appear as they are added (so a long listing can stream).
M.STREAMING = { table = false, csv = true, json = true, ndjson = true }

local function make_writer(name, out, layout, level)
  local make = WRITERS[name]
  if not make then
    util.misuse(level + 1, 'format: unknown format %q (expected one of "%s")', tostring(name),
                table.concat(M.NAMES, '", "'))
  end
  local l = LAYOUTS[layout == nil and "customers" or layout]
  if not l then
    util.misuse(level + 1, 'format: unknown layout %q (expected one of "%s")', tostring(layout),
                table.concat(M.LAYOUTS, '", "'))
  end
  return make(out, l)
end

function M.writer(name, out, layout)
  local w = make_writer(name, out, layout, 2)
  return w
end

-- Writes every row of the array at once.
function M.write(name, out, rows, layout)
  local w = make_writer(name, out, layout, 2)
  for _, c in ipairs(rows) do
    local ok, err = w:add(c)
    if not ok then return nil, err end
  end
  return w:finish()
end

return M
