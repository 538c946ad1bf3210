-- The core's JSON decoder, byte for byte through a real HTTP answer: RFC 8259's grammar and
-- nothing more, strings and their escapes, numbers as Lua integers or floats, the depth bound,
-- where an error is; then the same trees as lua-cjson for a few hundred generated documents.
local core = require "partnercustomers.core"
local cjson = require "cjson"
local answer_server = require "spec.helpers.answer_server"
local util = require "spec.helpers.util"

describe("the JSON decoder", function()
  local srv
  setup(function() srv = answer_server.start() end)
  teardown(function() srv:stop() end)

  -- The decoded body, or nil and the decode error's message.
  local function decode(body)
    srv:answer { ["/doc"] = { 200, { "Content-Type: application/json" }, body } }
    local c <close> = core.new {}
    local res, err = c:request { url = srv.url .. "/doc" }
    if res then return res.data end
    assert.equal("decode", err.kind, tostring(err))
    return nil, err.message
  end

  local function refuses(body, where, why)
    local v, msg = decode(body)
    assert.is_nil(v, ("decoded %q"):format(body))
    assert.equal(("response is not valid JSON (%s at byte %d)"):format(why, where), msg, body)
  end

  describe("strings", function()
    it("decodes every escape, \\u escapes as UTF-8 and surrogate pairs as one character", function()
      assert.equal('"\\/\b\f\n\r\t', decode([["\"\\\/\b\f\n\r\t"]]))
      assert.equal("é€😀A\0B", decode([["\u00e9\u20AC\ud83d\ude00\u0041\u0000B"]]))
      assert.equal("\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}", decode([["\u07ff\u0800\uffff\ud800\udc00\udbff\udfff"]]))
    end)

    it("keeps bytes as they are, UTF-8 or not", function()
      assert.equal("Fjällräven \xff\xfe", decode('"Fjällräven \xff\xfe"'))
    end)

    it("finds the end and the escapes of a string at any offset of a long one", function()
      for n = 0, 20 do
        local pad = ("x"):rep(n)
        assert.equal(pad, decode('"' .. pad .. '"'))
        assert.equal(pad .. '"' .. pad, decode('"' .. pad .. '\\"' .. pad .. '"'))
        assert.same({ pad, pad .. "\\" }, decode('["' .. pad .. '","' .. pad .. '\\\\"]'))
        refuses('"' .. pad .. "\1" .. pad .. '"', n + 2, "a control character in a string")
        refuses('"' .. pad .. "\0" .. pad .. '"', n + 2, "a control character in a string")
      end
    end)

    it("refuses bad escapes, lone surrogates, raw control characters and open strings", function()
      refuses([["a\x"]], 3, "an invalid escape")
      refuses('"a\\\0"', 3, "an invalid escape")
      refuses([["\u12"]], 2, "an invalid \\u escape")
      refuses([["\u12G4"]], 2, "an invalid \\u escape")
      refuses([["\ud800"]], 2, "an invalid \\u escape")
      refuses([["\ud800\u0041"]], 2, "an invalid \\u escape")
      refuses([["\udc00\ud800"]], 2, "an invalid \\u escape")
      refuses('"line\nbreak"', 6, "a control character in a string")
      refuses('"open', 6, "a string is not closed")
      refuses('"open\\', 7, "a string is not closed")
      refuses('"\\n', 4, "a string is not closed")
    end)
  end)

  describe("numbers", function()
    it("gives integers for integral numbers, exactly up to 64 bits, floats for the rest", function()
      local cases = {
        { "0", 0 }, { "-0", 0 }, { "1.0", 1 }, { "1e2", 100 }, { "-2.5E+1", -25 }, { "120e-1", 12 },
        { "9223372036854775807", math.maxinteger }, { "-9223372036854775808", math.mininteger },
        { "12345678901234567", 12345678901234567 }, { "999999999999999999", 999999999999999999 },
      }
      for _, c in ipairs(cases) do
        local v = decode(c[1])
        assert.equal("integer", math.type(v), c[1])
        assert.equal(c[2], v, c[1])
      end
      for _, c in ipairs { { "1.5", 1.5 }, { "-1.25e-3", -1.25e-3 }, { "9223372036854775808", 2.0 ^ 63 },
                            { "1e400", math.huge }, { "-1e400", -math.huge }, { "0.1", 0.1 } } do
        local v = decode(c[1])
        assert.equal("float", math.type(v), c[1])
        assert.equal(c[2], v, c[1])
      end
    end)

    it("reads a fraction whatever the C locale's decimal point (a decimal-comma one made for the run)", function()
      -- localedef (Debian's `locales`) under a directory of ours, named by LOCPATH for a child lua5.4
      local dir = os.tmpname()
      os.remove(dir)
      util.sh("mkdir -m 700 " .. util.shell_quote(dir) .. " && localedef -i de_DE -f UTF-8 "
              .. util.shell_quote(dir .. "/de_DE.UTF-8"))
      local so = assert(package.searchpath("partnercustomers.core", package.cpath))
      srv:answer { ["/doc"] = { 200, {}, "[2.5, -0.125e1, 1" .. ("0"):rep(300) .. ".5, 7.0]" } }
      local code = ([[
        assert(os.setlocale("de_DE.UTF-8", "numeric")) assert(("%%.1f"):format(1.5) == "1,5")
        local c = require("partnercustomers.core").new {}
        local d = assert(c:request { url = %q }).data
        assert(d[1] == 2.5 and d[2] == -1.25 and d[3] == 1e300 and math.type(d[4]) == "integer", "wrong")
        print("read")
      ]]):format(srv.url .. "/doc")
      -- the module's sanitizer preload, if any, is kept: the child loads the same build
      local errfile = dir .. "/stderr"
      local p = assert(io.popen(("env LOCPATH=%s LUA_CPATH=%s lua5.4 -e %s 2>%s"):format(util.shell_quote(dir),
        util.shell_quote(so:gsub("partnercustomers/core%.so$", "?.so") .. ";;"), util.shell_quote(code),
        util.shell_quote(errfile))))
      local out, ok = p:read("a"), p:close()
      local err = util.read(errfile)
      os.execute("rm -rf " .. util.shell_quote(dir))
      assert.is_true(ok, err)
      assert.equal("read\n", out, err)
    end)

    it("refuses what RFC 8259 does not allow", function()
      for _, c in ipairs {
        { "01", 2, "more text after the value" }, { "1.", 3, "an invalid number" }, { ".5", 1, "expected a value" },
        { "+1", 1, "expected a value" }, { "-", 2, "an invalid number" }, { "1e", 3, "an invalid number" },
        { "1e+", 4, "an invalid number" }, { "0x10", 2, "more text after the value" },
        { "NaN", 1, "expected a value" }, { "Infinity", 1, "expected a value" },
        { "-Infinity", 2, "an invalid number" }, { "[1.e3]", 4, "an invalid number" },
      } do
        refuses(c[1], c[2], c[3])
      end
    end)
  end)

  describe("structure", function()
    it("decodes literals, white space of the four kinds, empty containers and repeated keys", function()
      assert.same({ true, false, {}, {} }, decode(" \t\r\n[ true ,false,\n[ ] , { } ]\r\n"))
      assert.same({ a = 2 }, decode('{"a":1,"a":2}'))
      assert.same({ b = 1 }, decode('{"a":1,"b":1,"a":null}'))
      assert.same({ [""] = "empty key" }, decode('{"":"empty key"}'))
    end)

    it("refuses broken containers, at the byte where they break", function()
      for _, c in ipairs {
        { "   ", 4, "expected a value" }, { "[1,]", 4, "expected a value" },
        { '{"a":1,}', 8, "expected a string for a key" }, { '{"a" 1}', 6, "expected ':'" },
        { "{a:1}", 2, "expected a string for a key" }, { "[1 2]", 4, "expected ',' or ']'" },
        { '{"a":1 "b":2}', 8, "expected ',' or '}'" }, { "[", 2, "expected a value" },
        { '{"a":', 6, "expected a value" }, { "{} x", 4, "more text after the value" },
        { "{}\0", 3, "more text after the value" }, { "1 2", 3, "more text after the value" },
        { "tru", 1, "expected a value" }, { "TRUE", 1, "expected a value" }, { "nul", 1, "expected a value" },
        { "[true false]", 7, "expected ',' or ']'" }, { "\xef\xbb\xbf{}", 1, "expected a value" },
      } do
        refuses(c[1], c[2], c[3])
      end
    end)

    it("decodes 256 levels of nesting and refuses 257", function()
      local v = decode(("["):rep(255) .. '{"k":1}' .. ("]"):rep(255))
      for _ = 1, 255 do v = v[1] end
      assert.same({ k = 1 }, v)
      refuses(("["):rep(257) .. ("]"):rep(257), 257, "nested more than 256 deep")
      refuses(('{"a":'):rep(257) .. "1" .. ("}"):rep(257), 5 * 256 + 1, "nested more than 256 deep")
    end)
  end)

  describe("against lua-cjson", function()
    -- A seeded generator of JSON text with its expected tree; cjson decodes the same text, and
    -- its tree, normalised as the core promises (no nulls, integral numbers as integers), must
    -- equal the core's.
    local function normalise(v)
      if v == cjson.null then return nil end
      if type(v) == "number" then return math.tointeger(v) or v end
      if type(v) ~= "table" then return v end
      local out, n = {}, #v
      if n > 0 then
        for i = 1, n do
          local x = normalise(v[i])
          if x ~= nil then out[#out + 1] = x end
        end
      else
        for k, x in pairs(v) do out[k] = normalise(x) end
      end
      return out
    end

    local ESC = { '\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u00e9", "\\u20ac", "\\ud83d\\ude00", "\\u0000" }
    local function gen_string(r)
      local parts = {}
      for _ = 1, r(0, 12) do
        local k = r(1, 10)
        if k <= 6 then parts[#parts + 1] = string.char(r(32, 126)):gsub('[\\"]', "x")
        elseif k <= 8 then parts[#parts + 1] = ESC[r(1, #ESC)]
        elseif k == 9 then parts[#parts + 1] = "ä€"
        else parts[#parts + 1] = ("abcdefgh"):rep(r(1, 4)) end
      end
      return '"' .. table.concat(parts) .. '"'
    end
    local function gen_number(r)
      local k = r(1, 4)
      if k == 1 then return tostring(r(-1000000, 1000000)) end
      if k == 2 then return ("%d.%d"):format(r(-999, 999), r(0, 999)) end
      if k == 3 then return ("%de%d"):format(r(-99, 99), r(0, 12)) end
      return ("%.17g"):format((r() - 0.5) * 10 ^ r(-20, 20))
    end
    local function gen(r, depth)
      local k = r(1, depth > 4 and 5 or 8)
      if k == 1 then return gen_string(r) end
      if k == 2 then return gen_number(r) end
      if k == 3 then return ({ "true", "false", "null" })[r(1, 3)] end
      if k == 4 then return "null" end
      if k == 5 then return gen_number(r) end
      local items = {}
      if k <= 6 then
        for i = 1, r(0, 6) do items[i] = gen(r, depth + 1) end
        return "[" .. table.concat(items, ",") .. "]"
      end
      for i = 1, r(0, 6) do items[i] = gen_string(r) .. ":" .. gen(r, depth + 1) end
      return "{" .. table.concat(items, ",") .. "}"
    end

    it("gives the same trees for 300 generated documents (seeded)", function()
      local rng = math.random
      math.randomseed(20261201)
      local docs = {}
      for i = 1, 300 do docs[i] = gen(rng, 0) end
      for i, text in ipairs(docs) do
        local want = normalise(cjson.decode(text))
        local got = decode(text)
        assert.same(want, got, ("document %d: %s"):format(i, text))
      end
    end)
  end)
end)
