-- Job status codes and labels of the AvePoint customer APIs.
-- The v3 endpoint sends an integer code (current docs) or a label (the specification's sample);
-- /partner/customers sends a label. Labels differ in case and number between doc versions, so
-- matching ignores case, "_" and "-" against spaces, runs of spaces, and the known singular/plural
-- variants. The table and the matching are the core's (the same ones normalise every customer).

local core = require "partnercustomers.core"

local LABELS = core.job_status_labels()
local code = core.job_status_code

local function name(x)
  local c = code(x)
  return c and LABELS[c]
end

-- A read-only view of LABELS, in the manner of Penlight's utils.enum: reading, #, ipairs and pairs
-- work; assigning raises.
local labels = setmetatable({}, {
  __name = "partnercustomers.job_status.labels",
  __index = LABELS,
  __newindex = function()
    error("partnercustomers: job_status.labels is read-only", 2)
  end,
  __len = function() return #LABELS end,
  __pairs = function() return next, LABELS, nil end,
  __metatable = false,
})

return {
  name = name,
  code = code,
  labels = labels,
}
