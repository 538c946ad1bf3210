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

return M
