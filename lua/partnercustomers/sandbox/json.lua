-- JSON for the sandbox's answers.
--
-- Decoding goes through cjson. Encoding is done here because the installed cjson (2.1.0)
-- cannot write an empty array (`tenants: []`), escapes "/" in URLs and orders keys by hash;
-- this encoder writes empty arrays, sorted keys (so answers are byte-for-byte deterministic)
-- and integers without a fraction.

local cjson = require "cjson"

local json = {}

-- The same sentinel cjson decodes `null` to, so decoded input and generated data agree.
json.null = cjson.null

local array_mt = {__name = "partnercustomers.sandbox.json.array"}

-- Marks `t` as an array so that it is written `[]` even when empty.
function json.array(t)
  return setmetatable(t or {}, array_mt)
end

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

local function escape_char(c)
  return escapes[c] or string.format("\\u%04x", c:byte())
end

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', escape_char) .. '"'
end

local function encode_number(n)
  if math.type(n) == "integer" then
    return string.format("%d", n)
  end
  if n ~= n or n == math.huge or n == -math.huge then
    error("cannot encode a non-finite number in JSON", 0)
  end
  local i = math.tointeger(n)
  if i and math.abs(n) < 2^53 then
    return string.format("%d", i)
  end
  return string.format("%.14g", n)
end

local encode_value

local function encode_array(t, buf)
  buf[#buf + 1] = "["
  for i = 1, #t do
    if i > 1 then buf[#buf + 1] = "," end
    encode_value(t[i], buf)
  end
  buf[#buf + 1] = "]"
end

local function encode_object(t, buf)
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then
      error("cannot encode a table with a non-string key as a JSON object", 0)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  buf[#buf + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then buf[#buf + 1] = "," end
    buf[#buf + 1] = encode_string(k)
    buf[#buf + 1] = ":"
    encode_value(t[k], buf)
  end
  buf[#buf + 1] = "}"
end

function encode_value(v, buf)
  local kind = type(v)
  if v == nil or v == json.null then
    buf[#buf + 1] = "null"
  elseif kind == "boolean" then
    buf[#buf + 1] = tostring(v)
  elseif kind == "number" then
    buf[#buf + 1] = encode_number(v)
  elseif kind == "string" then
    buf[#buf + 1] = encode_string(v)
  elseif kind == "table" then
    if getmetatable(v) == array_mt or v[1] ~= nil then
      encode_array(v, buf)
    else
      encode_object(v, buf)
    end
  else
    error("cannot encode a " .. kind .. " in JSON", 0)
  end
end

function json.encode(v)
  local buf = {}
  encode_value(v, buf)
  return table.concat(buf)
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
