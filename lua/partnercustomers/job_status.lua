-- Job status codes and labels of the AvePoint customer APIs.
-- The v3 endpoint sends an integer code (current docs) or a label (the specification's sample);
-- /partner/customers sends a label. Labels differ in case and number between doc versions, so
-- matching normalises case, spacing and the known singular/plural variants.

local to_integer = require("partnercustomers.util").to_integer

local LABELS = {
  [0] = "N/A",
  "Working",
  "Failed",
  "Waiting for Configuration",
  "Multiple Issues Found",
  "Finished with Exception",
  "No Backup Update",
}

-- Normalised spellings -> code. Every canonical label is added below; these are the other forms.
local ALIASES = {
  ["na"] = 0,
  ["n a"] = 0,
  ["multiple issue found"] = 4,
  ["finished with exceptions"] = 5,
  ["no backup updates"] = 6,
}

-- Lower case, "_" and "-" as spaces, runs of spaces collapsed, trimmed.
local function normalise(s)
  s = s:lower():gsub("[%s_%-]+", " ")
  return (s:match("^ ?(.-) ?$"))
end

local BY_NAME = {}
for code = 0, #LABELS do BY_NAME[normalise(LABELS[code])] = code end
for alias, code in pairs(ALIASES) do BY_NAME[alias] = code end

local function code(x)
  local n = to_integer(x)
  if n then return LABELS[n] and n end
  if type(x) == "string" then return BY_NAME[normalise(x)] end
  return nil
end

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
