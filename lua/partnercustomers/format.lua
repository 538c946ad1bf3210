-- Output formats of the command line: table, csv, json, ndjson.
--
-- format.writer(name, out) returns a writer with :add(customer) and :finish(); `out` is anything
-- with a file's write method. csv, json and ndjson write as rows arrive; table must see every row
-- to size its columns, so it writes on finish. Both return true, or nil and the write error.

local util = require "partnercustomers.util"

local M = {}

M.NAMES = { "table", "csv", "json", "ndjson" }

-- JSON objects list these keys first, the rest sorted ("name" is a tenant's).
local KEY_ORDER = { "id", "name", "organization", "ownerEmail", "jobStatus", "jobStatusCode",
                    "countryOrRegion", "managementMode", "tenants" }

local MODES = { [0] = "Customer", "Partner", "To configure" }

local function text(v)
  if v == nil then return "" end
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

local function table_writer(out)
  local header = {}
  for i, col in ipairs(COLUMNS) do header[i] = col[1] end
  local rows = { header }
  return writer(function(_, c)
    local row = {}
    for i, col in ipairs(COLUMNS) do
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

local function csv_writer(out)
  local started = false
  local function header()
    if started then return true end
    started = true
    local names = {}
    for i, col in ipairs(CSV_COLUMNS) do names[i] = col[1] end
    return write(out, csv_line(names))
  end
  return writer(function(_, c)
    local ok, err = header()
    if not ok then return nil, err end
    local cells = {}
    for i, col in ipairs(CSV_COLUMNS) do cells[i] = col[2](c) end
    return write(out, csv_line(cells))
  end, header) -- no rows: the header alone
end

------------------------------------------------------------------------------------------------
-- json and ndjson

function M.json(v)
  return util.json_encode(v, KEY_ORDER)
end

local function json_writer(out)
  local n = 0
  return writer(function(_, c)
    n = n + 1
    return write(out, (n == 1 and "[\n" or ",\n") .. M.json(c))
  end, function()
    return write(out, n == 0 and "[]\n" or "\n]\n")
  end)
end

local function ndjson_writer(out)
  return writer(function(_, c)
    return write(out, M.json(c) .. "\n")
  end)
end

local WRITERS = { table = table_writer, csv = csv_writer, json = json_writer, ndjson = ndjson_writer }

-- Whether rows appear as they are added (so a long listing can stream).
M.STREAMING = { table = false, csv = true, json = true, ndjson = true }

local function make_writer(name, out, level)
  local make = WRITERS[name]
  if not make then
    util.misuse(level + 1, 'format: unknown format %q (expected one of "%s")', tostring(name),
                table.concat(M.NAMES, '", "'))
  end
  return make(out)
end

function M.writer(name, out)
  local w = make_writer(name, out, 2)
  return w
end

-- Writes every customer of the array at once.
function M.write(name, out, customers)
  local w = make_writer(name, out, 2)
  for _, c in ipairs(customers) do
    local ok, err = w:add(c)
    if not ok then return nil, err end
  end
  return w:finish()
end

return M
