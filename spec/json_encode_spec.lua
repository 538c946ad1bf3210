-- The Lua layer's one JSON encoder (util.json_encode), used for request bodies, the CLI's output
-- and the sandbox's answers (sandbox/json.lua), and its output under a decimal-comma C locale.
local helpers = require "spec.helpers.util"
local util = require "partnercustomers.util"
local cjson = require "cjson"
local sjson = require "partnercustomers.sandbox.json"

describe("util.json_encode", function()
  it("writes sorted keys, listed keys first, and escapes control characters", function()
    assert.equal('{"b":1,"a":2,"c":"x\\u0001\\n\\"\\\\/"}',
                 util.json_encode({ a = 2, b = 1, c = 'x\1\n"\\/' }, { "b" }))
  end)

  it("writes integers without a fraction and floats that read back the same", function()
    assert.equal("[3,-7,1.5,0.1,0.33333333333333331,1e+300,null,null]",
                 util.json_encode { 3, -7, 1.5, 0.1, 1 / 3, 1e300, 0 / 0, math.huge })
  end)

  it("writes an empty or marked table as an array, and a given null value as null", function()
    assert.equal('{"a":[],"b":[1,2],"c":null}',
                 util.json_encode({ a = {}, b = util.json_array { 1, 2 }, c = cjson.null }, nil, cjson.null))
    assert.has_error(function() util.json_encode { f = print } end,
                     "partnercustomers: cannot encode a function as JSON")
  end)

  it("is the sandbox's encoder", function()
    local v = { customers = sjson.array(), total = 2, owner = sjson.null, ratio = 0.25 }
    assert.equal(util.json_encode(v, nil, cjson.null), sjson.encode(v))
    assert.equal('{"customers":[],"owner":null,"ratio":0.25,"total":2}', sjson.encode(v))
    assert.same({ customers = {}, owner = cjson.null, ratio = 0.25, total = 2 },
                (sjson.decode(sjson.encode(v))))
  end)
end)

-- A locale whose decimal point is a comma, generated for this run under a directory of ours
-- (localedef; the de_DE source is in Debian's `locales` package), named by LOCPATH for the child.
describe("JSON under a decimal-comma locale", function()
  local dir

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    helpers.sh("mkdir -m 700 " .. helpers.shell_quote(dir) .. " && localedef -i de_DE -f UTF-8 "
               .. helpers.shell_quote(dir .. "/de_DE.UTF-8"))
  end)
  teardown(function() os.execute("rm -rf " .. helpers.shell_quote(dir)) end)

  -- What `code` prints in a child lua5.4, under de_DE.UTF-8 (checked to write "1,5") or under C.
  local function run(code, comma)
    local script = comma and ('assert(os.setlocale("de_DE.UTF-8")) assert(("%.1f"):format(1.5) == "1,5") ' .. code)
      or code
    local path = "./lua/?.lua;./lua/?/init.lua;" .. (os.getenv("LUA_PATH") or "") .. ";;"
    local p = assert(io.popen("cd " .. helpers.shell_quote(helpers.ROOT) .. " && env -u LD_PRELOAD LOCPATH="
      .. helpers.shell_quote(dir) .. " LUA_PATH=" .. helpers.shell_quote(path) .. " lua5.4 -e "
      .. helpers.shell_quote(script) .. " 2>&1"))
    local out = p:read("a")
    assert(p:close(), out)
    return out
  end

  it("writes the sandbox's answers byte for byte as under the C locale", function()
    local code = [[
      local json = require "partnercustomers.sandbox.json"
      local data = require "partnercustomers.sandbox.data"
      print(json.encode { ratio = 12.25, tiny = -2.5e-7, third = 1 / 3, big = 2^53 + 0.0, list = json.array() })
      print(json.encode(data.generate(40, 7)))
    ]]
    local comma = run(code, true)
    assert.equal('{"big":9007199254740992,"list":[],"ratio":12.25,"third":0.33333333333333331,"tiny":-2.5e-07}',
                 comma:match("^[^\n]*"))
    assert.matches('"tenants":%[%]', comma)
    assert.equal(run(code, false), comma)
  end)
end)
