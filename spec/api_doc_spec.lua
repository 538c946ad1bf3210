-- doc/API.md lists every public name: it walks the modules' tables, the clients' methods, the option
-- tables each constructor and method checks (found through their upvalues, so a new option table
-- is found without a list here), the certificate keys, event types and error kinds of the core.
local helpers = require "spec.helpers.util"
local util = require "partnercustomers.util"

local function read(path) return helpers.read(helpers.ROOT .. "/" .. path) end

local DOC = read("doc/API.md")

-- The text of the section whose "## " heading is `title`, up to the next "## " heading.
local function section(title)
  local start = DOC:find("\n## " .. title .. "\n", 1, true)
  assert(start, "doc/API.md has no section '## " .. title .. "'")
  local stop = DOC:find("\n## ", start + 1, true)
  return DOC:sub(start, stop or #DOC)
end

-- The names of `list` that `text` does not show in the form `form` ("%s" is the name).
local function missing(text, list, form)
  local out = {}
  for _, name in ipairs(list) do
    if not text:find(form:format(name), 1, true) then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

local function keys(t, skip)
  local out = {}
  for k in pairs(t) do
    if not (skip and skip[k]) then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

-- The option tables reachable from f: its upvalues named `pattern`, and those of the functions of
-- the same file it holds as upvalues (the local helpers it calls), a few levels down.
local function option_tables(f, pattern, found, seen, depth)
  found, seen, depth = found or {}, seen or {}, depth or 0
  if seen[f] or depth > 3 then return found end
  seen[f] = true
  local source = debug.getinfo(f, "S").source
  for i = 1, math.huge do
    local name, v = debug.getupvalue(f, i)
    if not name then break end
    if type(v) == "table" and name:find(pattern) then
      found[#found + 1] = v
    elseif type(v) == "function" and debug.getinfo(v, "S").source == source then
      option_tables(v, pattern, found, seen, depth + 1)
    end
  end
  return found
end

-- The rows of a markdown table in `text` whose first cell names `option`.
local function rows_of(text, option)
  local rows = {}
  for line in text:gmatch("[^\n]+") do
    local first = line:match("^| ([^|]*) |")
    if first and (" " .. first .. ","):find("[ ,]`" .. option:gsub("%p", "%%%0") .. "`[ ,]") then
      rows[#rows + 1] = line
    end
  end
  return rows
end

local pc = require "partnercustomers"
local TRANSPORT = util.TRANSPORT_OPTIONS
local SHARED = {} -- the options every client takes, listed once in their own sections
for k in pairs(TRANSPORT) do SHARED[k] = true end
for k in pairs(util.LOOP_OPTIONS) do SHARED[k] = true end

describe("doc/API.md", function()
  it("lists every field of the module table", function()
    local text = section("Module `partnercustomers`")
    assert.same({}, missing(text, keys(pc), "`pc.%s"))
  end)

  it("lists every transport option", function()
    assert.same({}, missing(section("Transport options (both clients)"), keys(TRANSPORT), "| `%s` |"))
  end)

  it("lists every event loop option and the wait object's methods", function()
    local text = section("Event loop options (both clients)")
    assert.same({}, missing(text, keys(util.LOOP_OPTIONS), "| `%s` |"))
    assert.same({}, missing(text, { "pollfd", "events", "timeout" }, "| `w:%s()` |"))
  end)

  local clients = {
    { title = "`pc.avepoint`", self = "ave", mod = "partnercustomers.avepoint",
      make = function() return pc.avepoint { access_token = "t", base_url = "http://127.0.0.1:9" } end },
    { title = "`pc.partnercenter`", self = "mpc", mod = "partnercustomers.partnercenter",
      make = function() return pc.partnercenter { access_token = "t", base_url = "http://127.0.0.1:9" } end },
  }
  for _, c in ipairs(clients) do
    describe(c.title, function()
      local text = section(c.title)

      it("lists every option of the constructor", function()
        local tables = option_tables(require(c.mod).new, "^OPTIONS$")
        assert.equal(1, #tables)
        assert.same({}, missing(text, keys(tables[1], SHARED), "| `%s` |"))
      end)

      it("lists every method, and every option of each with the methods that take it", function()
        local client <close> = c.make()
        local methods = getmetatable(client).__index
        assert.same({}, missing(text, keys(methods), "`" .. c.self .. ":%s("))
        local unlisted = {}
        for name, f in pairs(methods) do
          for _, t in ipairs(option_tables(f, "_OPTIONS$")) do
            for option in pairs(t) do
              local ok = false
              for _, row in ipairs(rows_of(text, option)) do
                if row:match("^| [^|]* | ([^|]*) |"):find("`" .. name .. "`", 1, true) then ok = true end
              end
              if not ok then unlisted[#unlisted + 1] = name .. " " .. option end
            end
          end
        end
        table.sort(unlisted)
        assert.same({}, unlisted)
      end)
    end)
  end

  it("lists every field of pc.job_status", function()
    assert.same({}, missing(section("`pc.job_status`"), keys(pc.job_status), "`pc.job_status.%s"))
  end)

  it("lists every function of partnercustomers.report and every option of report.rows", function()
    local report = require "partnercustomers.report"
    local text = section("Module `partnercustomers.report`")
    assert.same({}, missing(text, keys(report), "`report.%s("))
    local tables = option_tables(report.rows, "OPTIONS$")
    assert.is_true(#tables >= 1)
    for _, t in ipairs(tables) do assert.same({}, missing(text, keys(t), "| `%s` |")) end
  end)

  it("lists every key of the certificate option that the core reads", function()
    local list = read("csrc/core.c"):match("keys%[%] = {([^}]*)}")
    local names = {}
    for k in list:gmatch('"([^"]+)"') do names[#names + 1] = k end
    assert.is_true(#names >= 6)
    assert.same({}, missing(section("Certificate options"), names, "| `%s` |"))
  end)

  it("lists every event type the core and the clients emit", function()
    local types = {}
    local ls = assert(io.popen("ls csrc/*.c"))
    for file in ls:lines() do
      for t in read(file):gmatch('pc_set_str%(L, "type", "(%w+)"%)') do types[t] = true end
    end
    ls:close()
    for _, file in ipairs { "avepoint", "partnercenter", "report", "pager", "util" } do
      for t in read("lua/partnercustomers/" .. file .. ".lua"):gmatch('{ type = "(%w+)"') do types[t] = true end
    end
    assert.same({ page = true, pace = true, request = true, retry = true, token = true }, types)
    assert.same({}, missing(section("Events"), keys(types), "| `%s` |"))
  end)

  it("lists every error kind of the core", function()
    local kinds = {}
    for k in read("csrc/pc.h"):gmatch('X%(%u+, "(%l+)"%)') do kinds[#kinds + 1] = k end
    assert.equal(9, #kinds)
    assert.same({}, missing(section("Errors"), kinds, "| `%s` |"))
  end)
end)
