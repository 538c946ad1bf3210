-- JSON answers as the core decodes them, served byte for byte by a scripted server: nulls, the
-- bound on the number of values, running out of memory while decoding; and a core that needs no
-- lua-cjson. (spec/json_grammar_spec.lua: the decoder's grammar.)
local core = require "partnercustomers.core"
local answer_server = require "spec.helpers.answer_server"
local util = require "spec.helpers.util"

local MAX_VALUES = 1000000 -- PC_JSON_MAX_VALUES in csrc/pc.h

-- The shared object this run loads (./build, or ./build-asan under `make asan`).
local SO = assert(package.searchpath("partnercustomers.core", package.cpath))

-- Runs a Lua chunk in a child lua5.4 (the module from SO, the sanitizer preload kept); returns
-- what it printed and whether it exited with success.
local function child(code, prefix)
  local cmd = ("%s env LUA_CPATH=%s lua5.4 -e %s 2>&1"):format(prefix or "", util.shell_quote(
    SO:gsub("partnercustomers/core%.so$", "?.so") .. ";;"), util.shell_quote(code))
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  return out, p:close()
end

describe("JSON answers", function()
  local srv
  setup(function() srv = answer_server.start() end)
  teardown(function() srv:stop() end)

  -- GET /fixture answers body (status 200 unless said otherwise).
  local function serve(body, status)
    srv:answer { ["/fixture"] = { status or 200, { "Content-Type: application/json" }, body } }
  end
  local function fetch(opts)
    local c <close> = core.new(opts)
    return c:request { url = srv.url .. "/fixture" }
  end

  describe("nulls", function()
    it("close up arrays around them, in order, so that ipairs sees every item", function()
      serve('["a@x", null, "b@x"]')
      local res = assert(fetch())
      assert.same({ "a@x", "b@x" }, res.data)
      assert.equal(2, #res.data)
      local seen = 0
      for _ in ipairs(res.data) do seen = seen + 1 end
      assert.equal(2, seen)
      assert.is_nil(res.data[3])
    end)

    it("leave objects without the field, at any depth, and integral numbers stay integers", function()
      serve('{"emails":["a@x",null,"b@x",null],"gone":null,' ..
            '"rows":[[null,1.0,null,2.5],[null],{"k":null,"v":[null,3]}],"n":[null,null]}')
      local res = assert(fetch())
      assert.same({ emails = { "a@x", "b@x" }, rows = { { 1, 2.5 }, {}, { v = { 3 } } }, n = {} }, res.data)
      assert.equal("integer", math.type(res.data.rows[1][1]))
      assert.equal("integer", math.type(res.data.rows[3].v[1]))
      assert.equal(2, #res.data.rows[1])
    end)

    it("leave a top-level array of nulls empty and a top-level null absent", function()
      serve("[null, null, 7, null]")
      assert.same({ 7 }, assert(fetch()).data)
      serve("null")
      local res = assert(fetch())
      assert.is_nil(res.data)
      assert.equal("null", res.body)
    end)
  end)

  describe("the bound on values", function()
    it("decodes an answer of exactly " .. MAX_VALUES .. " values", function()
      serve("[" .. ("1,"):rep(MAX_VALUES - 2) .. "1]") -- the array and MAX_VALUES - 1 numbers
      local res = assert(fetch())
      assert.equal(MAX_VALUES - 1, #res.data)
    end)

    it("refuses one value more as a limit error, before decoding it", function()
      serve("[" .. ("1,"):rep(MAX_VALUES - 1) .. "1]")
      local res, err = fetch()
      assert.equal("limit", err and err.kind, res and "decoded anyway")
      assert.equal(200, err.status)
      assert.matches("response has too many JSON values", err.message)
      assert.equal(srv.url .. "/fixture", err.url)
    end)

    it("refuses a body of empty objects long before max_response_bytes", function()
      serve("[" .. ("{},"):rep(MAX_VALUES + 100000) .. "{}]")
      local before = collectgarbage("count")
      local res, err = fetch { max_response_bytes = 32 * 1024 * 1024 }
      local grew = collectgarbage("count") - before -- KiB
      assert.equal("limit", err and err.kind, res and "decoded anyway")
      assert.is_true(grew < 64 * 1024, "decoded anyway")
    end)

    it("counts nothing inside strings", function()
      local s = ('x,[{\\"'):rep(250000)
      serve('["' .. s .. '"]')
      local res = assert(fetch())
      assert.equal(('x,[{"'):rep(250000), res.data[1])
    end)

    it("keeps an error answer with too many values an http error, its body cut", function()
      serve("[" .. ("{},"):rep(MAX_VALUES) .. "{}]", 404)
      local _, err = fetch()
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.equal(2048, #err.body)
    end)
  end)

  it("reports running out of memory while decoding as Lua's memory error, not a decode error", function()
    if (os.getenv("LD_PRELOAD") or ""):find("asan") then
      pending("an address-space limit and ASan's shadow memory do not mix")
      return
    end
    -- ~1 M tables need ~70 MB; the child allows itself 30 MB more than it uses once warmed up
    serve("[" .. ("[],"):rep(MAX_VALUES - 10) .. "[]]")
    local out, ok = child(([[
      local core = require "partnercustomers.core"
      local c = core.new { max_response_bytes = 16 * 1024 * 1024 }
      assert(c:request { url = %q, decode = false })
      local pid = io.open("/proc/self/stat"):read("l"):match("^(%%d+)")
      local vm = tonumber(io.open("/proc/self/status"):read("a"):match("VmSize:%%s*(%%d+) kB"))
      assert(os.execute(("prlimit --pid %%s --as=%%d"):format(pid, (vm + 30 * 1024) * 1024)))
      local ok, res, err = pcall(c.request, c, { url = %q })
      if not ok then print(ok, res) else print(ok, res and "decoded" or err.kind .. ": " .. err.message) end
    ]]):format(srv.url .. "/fixture", srv.url .. "/fixture"))
    assert.is_true(ok, out)
    assert.matches("^false\tnot enough memory\n$", out)
  end)
end)

describe("loading the core", function()
  it("needs no lua-cjson: it decodes with its own decoder", function()
    local srv = answer_server.start()
    srv:answer { ["/fixture"] = { 200, { "Content-Type: application/json" }, '{"data":[{"id":1,"x":null}]}' } }
    -- no cjson anywhere: not on the paths, and a searcher that fails loudly for it
    local out, ok = child(([[
      package.path = ""
      table.insert(package.searchers, 1, function(name)
        if name:find("cjson") then error("cjson was required") end
      end)
      local c = require("partnercustomers.core").new {}
      local res = assert(c:request { url = %q })
      print(res.data.data[1].id, res.data.data[1].x, package.loaded.cjson, package.loaded["cjson.safe"])
    ]]):format(srv.url .. "/fixture"))
    srv:stop()
    assert.is_true(ok, out)
    assert.equal("1\tnil\tnil\tnil\n", out)
  end)
end)
