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

return M
