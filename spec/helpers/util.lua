-- Small helpers shared by the specs.
local M = {}

-- A fake clock that only moves when the client sleeps: waits are asserted, never waited.
function M.fake_time(start)
  local t = { now = start or 1700000000, sleeps = {} }
  function t.clock() return t.now end
  function t.sleep(s)
    t.sleeps[#t.sleeps + 1] = s
    t.now = t.now + s
  end
  return t
end

-- The ids of a list of customers, in order.
function M.ids_of(list)
  local ids = {}
  for i, c in ipairs(list) do ids[i] = c.id end
  return ids
end

-- Every failure must come back as an error object that names the request, counts its attempts,
-- prints on one line and holds none of the given secrets (a string or a list of strings).
function M.assert_error(err, kind, secrets)
  local assert = require "luassert"
  local pc = require "partnercustomers"
  assert.is_true(pc.is_error(err), "not an error object: " .. tostring(err))
  assert.equal(kind, err.kind, tostring(err))
  assert.equal("string", type(err.method))
  assert.equal("string", type(err.url))
  assert.equal("integer", math.type(err.attempts))
  local text = tostring(err)
  assert.not_matches("\n", text)
  if type(secrets) == "string" then secrets = { secrets } end
  for _, secret in ipairs(secrets or {}) do
    for k, v in pairs(err) do
      assert.falsy(tostring(v):find(secret, 1, true), "a secret in err." .. tostring(k))
    end
    assert.falsy(text:find(secret, 1, true))
  end
end

-- The repository root, from where this file is (spec/helpers/util.lua).
M.ROOT = (function()
  local file = debug.getinfo(1, "S").source:match("^@(.*)$") or ""
  return file:match("^(.*)/spec/helpers/[^/]+$") or "."
end)()

function M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- An output that collects what is written, like a file's write method.
function M.sink()
  local parts = {}
  return {
    write = function(self, ...)
      for _, s in ipairs { ... } do parts[#parts + 1] = tostring(s) end
      return self
    end,
    text = function() return table.concat(parts) end,
  }
end

-- Runs a shell command of a test peer (openssl and the like), asserting that it succeeds. The
-- sanitizer preload of `make asan` is for the module under test, not for its peers.
local function peer(cmd)
  return "env -u LD_PRELOAD sh -c " .. M.shell_quote(cmd)
end

function M.sh(cmd)
  assert(os.execute(peer(cmd) .. " >/dev/null 2>&1"), "command failed: " .. cmd)
end

-- The same, returning what the command printed.
function M.capture(cmd)
  local p = assert(io.popen(peer(cmd) .. " 2>/dev/null", "r"))
  local out = p:read("a")
  assert(p:close(), "command failed: " .. cmd)
  return out
end

-- The whole file at path; with missing_ok, nil when it cannot be opened (else that fails).
function M.read(path, missing_ok)
  local f, why = io.open(path, "rb")
  if not f and missing_ok then return nil end
  assert(f, why)
  local s = f:read("a")
  f:close()
  return s
end

local function url_decode(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The fields of an application/x-www-form-urlencoded body.
function M.form_of(body)
  local form = {}
  for key, value in body:gmatch("([^&=]+)=([^&]*)") do form[url_decode(key)] = url_decode(value) end
  return form
end

function M.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- base64url without padding (JWT), written here apart from the module's own encoder.
function M.b64url(s)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    for k = 0, (c and 3) or (b and 2) or 1 do
      local v = (n >> (18 - 6 * k)) & 63
      out[#out + 1] = alphabet:sub(v + 1, v + 1)
    end
  end
  return table.concat(out)
end

-- base64 with padding (RFC 4648), e.g. for HTTP Basic.
function M.base64(s)
  local t = M.b64url(s):gsub("-", "+"):gsub("_", "/")
  return t .. string.rep("=", (4 - #t % 4) % 4)
end

return M
