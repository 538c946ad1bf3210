-- Output formats of the command line: table, csv, json, ndjson.
--
-- format.writer(name, out, layout, opts) returns a writer with :add(row) and :finish(); `out` is
-- anything with a file's write method; opts: fields, bom, width (see make_writer). csv, json and ndjson write as rows arrive; table must see every row
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

-- Display width (wcwidth): zero-width code points (combining marks of the common scripts, Thai
-- vowels and tone marks above and below, Hangul medial vowels and final consonants, joiners,
-- variation selectors, emoji modifiers) and wide ones (East Asian wide and fullwidth, Hangul
-- syllables and initial consonants, emoji).
local ZERO = {
  { 0x0300, 0x036F }, { 0x0483, 0x0489 }, { 0x0591, 0x05BD }, { 0x05BF, 0x05BF }, { 0x05C1, 0x05C2 },
  { 0x05C4, 0x05C5 }, { 0x05C7, 0x05C7 }, { 0x0610, 0x061A }, { 0x064B, 0x065F }, { 0x0670, 0x0670 },
  { 0x06D6, 0x06DC }, { 0x06DF, 0x06E4 }, { 0x06E7, 0x06E8 }, { 0x06EA, 0x06ED }, { 0x0900, 0x0902 },
  { 0x093A, 0x093A }, { 0x093C, 0x093C }, { 0x0941, 0x0948 }, { 0x094D, 0x094D }, { 0x0951, 0x0957 },
  { 0x0962, 0x0963 }, { 0x0E31, 0x0E31 }, { 0x0E34, 0x0E3A }, { 0x0E47, 0x0E4E }, { 0x0EB1, 0x0EB1 },
  { 0x0EB4, 0x0EBC }, { 0x0EC8, 0x0ECD }, { 0x1160, 0x11FF }, { 0x1AB0, 0x1AFF }, { 0x1DC0, 0x1DFF },
  { 0x200B, 0x200F }, { 0x2028, 0x202E }, { 0x2060, 0x2064 }, { 0x20D0, 0x20FF }, { 0x302A, 0x302D },
  { 0x3099, 0x309A }, { 0xD7B0, 0xD7FF }, { 0xFE00, 0xFE0F }, { 0xFE20, 0xFE2F }, { 0xFEFF, 0xFEFF },
  { 0x1F3FB, 0x1F3FF }, { 0xE0000, 0xE0FFF },
}
local WIDE = {
  { 0x1100, 0x115F }, { 0x231A, 0x231B }, { 0x2329, 0x232A }, { 0x23E9, 0x23EC }, { 0x23F0, 0x23F0 },
  { 0x23F3, 0x23F3 }, { 0x25FD, 0x25FE }, { 0x2614, 0x2615 }, { 0x2648, 0x2653 }, { 0x267F, 0x267F },
  { 0x2693, 0x2693 }, { 0x26A1, 0x26A1 }, { 0x26AA, 0x26AB }, { 0x26BD, 0x26BE }, { 0x26C4, 0x26C5 },
  { 0x26CE, 0x26CE }, { 0x26D4, 0x26D4 }, { 0x26EA, 0x26EA }, { 0x26F2, 0x26F3 }, { 0x26F5, 0x26F5 },
  { 0x26FA, 0x26FA }, { 0x26FD, 0x26FD }, { 0x2705, 0x2705 }, { 0x270A, 0x270B }, { 0x2728, 0x2728 },
  { 0x274C, 0x274C }, { 0x274E, 0x274E }, { 0x2753, 0x2755 }, { 0x2757, 0x2757 }, { 0x2795, 0x2797 },
  { 0x27B0, 0x27B0 }, { 0x27BF, 0x27BF }, { 0x2B1B, 0x2B1C }, { 0x2B50, 0x2B50 }, { 0x2B55, 0x2B55 },
  { 0x2E80, 0x3029 }, { 0x302E, 0x303E }, { 0x3041, 0x3098 }, { 0x309B, 0x33FF }, { 0x3400, 0x4DBF },
  { 0x4E00, 0x9FFF }, { 0xA000, 0xA4CF }, { 0xA960, 0xA97F }, { 0xAC00, 0xD7A3 }, { 0xF900, 0xFAFF },
  { 0xFE10, 0xFE19 }, { 0xFE30, 0xFE6F }, { 0xFF00, 0xFF60 }, { 0xFFE0, 0xFFE6 }, { 0x16FE0, 0x16FE4 },
  { 0x17000, 0x18CFF }, { 0x1B000, 0x1B2FF }, { 0x1F004, 0x1F004 }, { 0x1F0CF, 0x1F0CF },
  { 0x1F18E, 0x1F18E }, { 0x1F191, 0x1F19A }, { 0x1F200, 0x1F251 }, { 0x1F300, 0x1F320 },
  { 0x1F32D, 0x1F335 }, { 0x1F337, 0x1F37C }, { 0x1F37E, 0x1F393 }, { 0x1F3A0, 0x1F3CA },
  { 0x1F3CF, 0x1F3D3 }, { 0x1F3E0, 0x1F3F0 }, { 0x1F3F4, 0x1F3F4 }, { 0x1F3F8, 0x1F3FA },
  { 0x1F400, 0x1F43E }, { 0x1F440, 0x1F440 }, { 0x1F442, 0x1F4FC }, { 0x1F4FF, 0x1F53D },
  { 0x1F54B, 0x1F54E }, { 0x1F550, 0x1F567 }, { 0x1F57A, 0x1F57A }, { 0x1F595, 0x1F596 },
  { 0x1F5A4, 0x1F5A4 }, { 0x1F5FB, 0x1F64F }, { 0x1F680, 0x1F6C5 }, { 0x1F6CC, 0x1F6CC },
  { 0x1F6D0, 0x1F6D2 }, { 0x1F6D5, 0x1F6D7 }, { 0x1F6DC, 0x1F6DF }, { 0x1F6EB, 0x1F6EC },
  { 0x1F6F4, 0x1F6FC }, { 0x1F7E0, 0x1F7EB }, { 0x1F7F0, 0x1F7F0 }, { 0x1F90C, 0x1F93A },
  { 0x1F93C, 0x1F945 }, { 0x1F947, 0x1F9FF }, { 0x1FA70, 0x1FAFF }, { 0x20000, 0x2FFFD },
  { 0x30000, 0x3FFFD },
}

-- Binary search in sorted, disjoint ranges.
local function within(ranges, cp)
  local lo, hi = 1, #ranges
  while lo <= hi do
    local mid = (lo + hi) // 2
    local r = ranges[mid]
    if cp < r[1] then hi = mid - 1 elseif cp > r[2] then lo = mid + 1 else return true end
  end
  return false
end

-- Columns of one code point after `prev` (the one before it, or nil): a code point joined to the
-- one before by ZERO WIDTH JOINER takes none (an emoji sequence is drawn as one), and VARIATION
-- SELECTOR-16 widens a narrow symbol to emoji presentation.
local function cp_width(cp, prev)
  if prev == 0x200D then return 0 end
  if cp == 0xFE0F then return (prev and not within(WIDE, prev) and prev >= 0x2000) and 1 or 0 end
  if within(ZERO, cp) then return 0 end
  if within(WIDE, cp) then return 2 end
  return 1
end

-- Display width in terminal columns; bytes for a string that is not valid UTF-8.
local function width(s)
  local n = utf8.len(s)
  if not n or n == #s then return n or #s end -- invalid, or plain ASCII
  local w, prev = 0, nil
  for _, cp in utf8.codes(s) do
    w = w + cp_width(cp, prev)
    prev = cp
  end
  return w
end
M.width = width

-- s cut to at most `max` columns, ending in "…" when cut; marks that belong to the last
-- character kept stay with it.
local function cut(s, max)
  if width(s) <= max then return s end
  if max < 1 then return "" end
  if not utf8.len(s) then return s:sub(1, max - 1) .. "…" end
  local w, prev, stop = 0, nil, 0
  for pos, cp in utf8.codes(s) do
    local cw = cp_width(cp, prev)
    if cw > 0 and w + cw > max - 1 then break end
    w = w + cw
    stop = pos + #utf8.char(cp) - 1
    prev = cp
  end
  return s:sub(1, stop) .. "…"
end
M.cut = cut

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
  { "ID", key = "id", function(c) return text(c.id) end },
  { "Organization", key = "organization", function(c) return text(c.organization) end },
  { "Owner e-mail", key = "ownerEmail", function(c) return text(c.ownerEmail) end },
  { "Job status", key = "jobStatus", function(c) return text(c.jobStatus) end },
  { "Country", key = "countryOrRegion", function(c) return text(c.countryOrRegion) end },
  { "Mode", key = "managementMode", function(c) return MODES[c.managementMode] or text(c.managementMode) end },
  { "Tenants", key = "tenantNames", function(c)
      local names = {}
      for i, t in ipairs(c.tenants or {}) do names[i] = text(t.name or t.id) end
      return table.concat(names, ", ")
    end },
}

-- The table columns of `opts.fields` (csv names; a field without a table column of its own is
-- shown as it is in csv, under its name), or the layout's.
local function table_columns(layout, fields)
  if not fields then return layout.columns end
  local cols = {}
  for i, f in ipairs(fields) do
    for _, col in ipairs(layout.columns) do
      if col.key == f then cols[i] = col end
    end
    if not cols[i] then
      for _, col in ipairs(layout.csv_columns) do
        if col[1] == f then cols[i] = { f, col[2] } end
      end
    end
  end
  return cols
end

-- Column widths that fit `max` columns of text (cells 2 apart): the widest columns are narrowed
-- first, to a common cap, none below the width of "ab…".
local function fit(widths, max)
  local gaps = 2 * (#widths - 1)
  local function total(cap)
    local t = gaps
    for _, w in ipairs(widths) do t = t + math.min(w, cap) end
    return t
  end
  local widest = math.max(table.unpack(widths))
  if not max or total(widest) <= max then return widths end
  local lo, hi = 3, widest -- the largest cap that fits, at least 3
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if total(mid) <= max then lo = mid else hi = mid - 1 end
  end
  local capped = {}
  for i, w in ipairs(widths) do capped[i] = math.min(w, lo) end
  -- what the cap left unused goes back to the cut columns, left to right
  local spare = max - total(lo)
  for i, w in ipairs(widths) do
    if spare <= 0 then break end
    if w > capped[i] then
      local more = math.min(spare, w - capped[i])
      capped[i], spare = capped[i] + more, spare - more
    end
  end
  return capped
end

local function table_writer(out, layout, opts)
  local columns = table_columns(layout, opts.fields)
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
    widths = fit(widths, opts.width)
    local rule = {}
    for i, w in ipairs(widths) do rule[i] = ("-"):rep(w) end
    table.insert(rows, 2, rule)
    local lines = {}
    for n, row in ipairs(rows) do
      local cells = {}
      for i, cell in ipairs(row) do
        cell = cut(cell, widths[i])
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

-- A cell a spreadsheet would run as a formula (=, +, -, @, or a tab or CR before one) is kept as
-- text with a leading apostrophe, as OWASP advises; numbers stay numbers.
function M.csv_guard(s)
  if s:find("^[=+%-@\t\r]") and not tonumber(s) then return "'" .. s end
  return s
end

local function csv_line(cells)
  for i, cell in ipairs(cells) do cells[i] = M.csv_field(cell) end
  return table.concat(cells, ",") .. "\r\n"
end

local function csv_columns(layout, fields)
  if not fields then return layout.csv_columns end
  local cols = {}
  for i, f in ipairs(fields) do
    for _, col in ipairs(layout.csv_columns) do
      if col[1] == f then cols[i] = col end
    end
  end
  return cols
end

local BOM = "\239\187\191"

local function csv_writer(out, layout, opts)
  local columns = csv_columns(layout, opts.fields)
  local started = false
  local function header()
    if started then return true end
    started = true
    local names = {}
    for i, col in ipairs(columns) do names[i] = col[1] end
    return write(out, (opts.bom and BOM or "") .. csv_line(names))
  end
  return writer(function(_, c)
    local ok, err = header()
    if not ok then return nil, err end
    local cells = {}
    for i, col in ipairs(columns) do cells[i] = M.csv_guard(col[2](c)) end
    return write(out, csv_line(cells))
  end, header) -- no rows: the header alone
end

------------------------------------------------------------------------------------------------
-- json and ndjson

function M.json(v, order)
  return util.json_encode(v, order or KEY_ORDER)
end

-- The object of a row: with `fields`, only those keys, in that order.
local function json_object(layout, fields, c)
  local obj = layout.object(c)
  if not fields then return obj, layout.key_order end
  local only = {}
  for _, f in ipairs(fields) do only[f] = obj[f] end
  return only, fields
end

local function json_writer(out, layout, opts)
  local n = 0
  return writer(function(_, c)
    n = n + 1
    return write(out, (n == 1 and "[\n" or ",\n") .. M.json(json_object(layout, opts.fields, c)))
  end, function()
    return write(out, n == 0 and "[]\n" or "\n]\n")
  end)
end

local function ndjson_writer(out, layout, opts)
  return writer(function(_, c)
    return write(out, M.json(json_object(layout, opts.fields, c)) .. "\n")
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
      { "ID", key = "id", function(c) return text(c.id) end },
      { "Company", key = "companyName", function(c) return profile(c, "companyName") end },
      { "Domain", key = "domain", function(c) return profile(c, "domain") end },
      { "Tenant", key = "tenantId", function(c) return profile(c, "tenantId") end },
      { "Relationship", key = "relationshipToPartner", function(c) return text(c.relationshipToPartner) end },
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
      { "Tenant", key = "tenantId", function(o) return text(o.tenantId) end },
      { "Display name", key = "displayName", function(o) return text(o.displayName) end },
      { "Country", key = "countryLetterCode", function(o) return text(o.countryLetterCode) end },
      { "State", key = "state", function(o) return text(o.state) end },
      { "City", key = "city", function(o) return text(o.city) end },
      { "Postal code", key = "postalCode", function(o) return text(o.postalCode) end },
      { "Street", key = "street", function(o) return text(o.street) end },
      { "Notification e-mails", key = "technicalNotificationMails", function(o) return mails(o.technicalNotificationMails) end },
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
      { "Organization", key = "organization", function(r) return text(r.organization) end },
      { "Owner e-mail", key = "ownerEmail", function(r) return text(r.ownerEmail) end },
      { "Job status", key = "jobStatus", function(r) return text(r.jobStatus) end },
      { "Tenant", key = "tenantId", function(r) return text(r.tenantId) end },
      { "Display name", key = "displayName", function(r) return text(r.displayName) end },
      { "Country", key = "countryLetterCode", function(r) return text(r.countryLetterCode) end },
      { "City", key = "city", function(r) return text(r.city) end },
      { "Notification e-mails", key = "technicalNotificationMails", function(r) return mails(r.technicalNotificationMails) end },
      { "Failure", key = "failure", function(r) return text(r.failure) end },
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

local function layout_of(layout, level)
  local l = LAYOUTS[layout == nil and "customers" or layout]
  if not l then
    util.misuse(level + 1, 'format: unknown layout %q (expected one of "%s")', tostring(layout),
                table.concat(M.LAYOUTS, '", "'))
  end
  return l
end

-- The field names --fields may choose from for a format and layout (csv's column names, for the
-- table too); nil for json and ndjson, whose fields are the objects' keys.
function M.fields(name, layout)
  if name ~= "table" and name ~= "csv" then return nil end
  local names = {}
  for i, col in ipairs(layout_of(layout, 2).csv_columns) do names[i] = col[1] end
  return names
end

-- opts: fields (an array of names, see M.fields), bom (csv), width (table: the columns to fit).
local function make_writer(name, out, layout, opts, level)
  local make = WRITERS[name]
  if not make then
    util.misuse(level + 1, 'format: unknown format %q (expected one of "%s")', tostring(name),
                table.concat(M.NAMES, '", "'))
  end
  local l = layout_of(layout, level + 1)
  opts = opts or {}
  local known = M.fields(name, layout)
  if opts.fields and known then
    local set = {}
    for _, f in ipairs(known) do set[f] = true end
    for _, f in ipairs(opts.fields) do
      if not set[f] then util.misuse(level + 1, "format: unknown field %q", tostring(f)) end
    end
  end
  return make(out, l, opts)
end

-- writer(name, out [, layout [, opts]])
function M.writer(name, out, layout, opts)
  local w = make_writer(name, out, layout, opts, 2)
  return w
end

-- Writes every row of the array at once.
function M.write(name, out, rows, layout, opts)
  local w = make_writer(name, out, layout, opts, 2)
  for _, c in ipairs(rows) do
    local ok, err = w:add(c)
    if not ok then return nil, err end
  end
  return w:finish()
end

return M
