-- JSON for the sandbox's answers: decoding through cjson, encoding through the module's one
-- encoder (util.json_encode: sorted keys, so answers are byte-for-byte deterministic; empty arrays
-- written `[]`; integers without a fraction; a dot in numbers whatever the C locale). The installed
-- cjson (2.1.0) cannot write an empty array, escapes "/" in URLs and orders keys by hash.

local cjson = require "cjson"
local util = require "partnercustomers.util"

local json = {}

-- The same sentinel cjson decodes `null` to, so decoded input and generated data agree.
json.null = cjson.null

-- Marks `t` as an array (see util.json_array).
json.array = util.json_array

function json.encode(v)
  return util.json_encode(v, nil, json.null)
end

-- Returns the decoded value, or nil and a message.
function json.decode(s)
  local ok, v = pcall(cjson.decode, s)
  if not ok then
    return nil, tostring(v)
  end
  return v
end

return json
