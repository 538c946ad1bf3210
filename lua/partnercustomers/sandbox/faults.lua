-- Fault rules: validation, matching and the canned bodies some of them send.
-- The rule format is documented in README.md beside this file.

local json = require "partnercustomers.sandbox.json"

local faults = {}

local MiB = 1024 * 1024

-- Per type: the extra keys it accepts (with their kind) and their defaults.
local types = {
  status = {keys = {status = "status_code", retry_after = "retry_after", body = "string",
                    content_type = "header_value"}, required = "status"},
  slow = {keys = {delay = "seconds"}, defaults = {delay = 1}},
  hang = {keys = {max = "seconds"}, defaults = {max = 60}},
  malformed = {keys = {}},
  html = {keys = {}},
  drop = {keys = {}},
  -- just over the client's default max_response_bytes (64 MiB)
  large = {keys = {bytes = "size"}, defaults = {bytes = 64 * MiB + 64 * 1024}},
  gzip_bomb = {keys = {bytes = "size"}, defaults = {bytes = 50 * MiB}},
  repeat_page = {keys = {}},
  wrong_total = {keys = {total = "count"}, required = "total"},
  no_total = {keys = {delay = "seconds"}, defaults = {delay = 0}},
  next_link = {keys = {link = "string", pad = "size"}, required = "link"},
  stuck_next_link = {keys = {}},
  expire_token = {keys = {}},
  pc_next = {keys = {uri = "string", pad = "size"}, required = "uri"},
  pc_stuck = {keys = {}},
}

-- Types that only make sense on some endpoints only match those, so that a rule without a
-- `path` is not used up by, say, the token request that precedes the call it targets.
local endpoints_of = {
  repeat_page = {v3 = true},
  wrong_total = {v3 = true},
  no_total = {v3 = true},
  next_link = {odata = true},
  stuck_next_link = {odata = true},
  expire_token = {v3 = true, odata = true, pc_list = true, pc_org = true},
  pc_next = {pc_list = true},
  pc_stuck = {pc_list = true},
}

local common_keys = {type = true, path = true, method = true, times = true, after = true}

local MAX_SIZE = 512 * MiB

-- Each checker returns the normalized value, or nil and what was expected.
local checkers = {}

function checkers.status_code(v)
  local n = math.tointeger(v)
  if n and n >= 200 and n <= 599 then return n end
  return nil, "an integer status from 200 to 599"
end

function checkers.retry_after(v)
  if type(v) == "string" and not v:find("[\r\n]") then return v end
  if type(v) == "number" and v >= 0 and v < math.huge then
    local n = math.tointeger(v)
    return n and tostring(n) or tostring(v)
  end
  return nil, "a number of seconds or an HTTP-date string"
end

function checkers.string(v)
  if type(v) == "string" then return v end
  return nil, "a string"
end

function checkers.header_value(v)
  if type(v) == "string" and not v:find("[\r\n]") then return v end
  return nil, "a string without CR or LF"
end

function checkers.seconds(v)
  if type(v) == "number" and v >= 0 and v < 86400 then return v end
  return nil, "a number of seconds from 0 to 86400"
end

function checkers.size(v)
  local n = math.tointeger(v)
  if n and n >= 1 and n <= MAX_SIZE then return n end
  return nil, "an integer from 1 to " .. MAX_SIZE
end

function checkers.count(v)
  local n = math.tointeger(v)
  if n and n >= 0 then return n end
  return nil, "a non-negative integer"
end

function checkers.times(v)
  local n = math.tointeger(v)
  if n and (n == -1 or n >= 1) then return n end
  return nil, "-1 (forever) or a positive integer"
end

function checkers.method(v)
  if type(v) == "string" and v:match("^%a+$") then return v:upper() end
  return nil, "an HTTP method name"
end

function checkers.pattern(v)
  if type(v) == "string" and pcall(string.find, "", v) then return v end
  return nil, "a valid Lua pattern"
end

local function check(rule, key, kind, where)
  local value, expected = checkers[kind](rule[key])
  if value == nil then
    error(string.format("%s: '%s' must be %s", where, key, expected), 0)
  end
  return value
end

local function parse_rule(raw, index)
  local where = "rule " .. index
  if type(raw) ~= "table" or raw[1] ~= nil then
    error(where .. ": must be a JSON object", 0)
  end
  local spec = types[raw.type]
  if not spec then
    error(string.format("%s: unknown type %s", where, json.encode(raw.type)), 0)
  end
  for key in pairs(raw) do
    if not common_keys[key] and not spec.keys[key] then
      error(string.format("%s: unknown key '%s' for type %s", where, tostring(key), raw.type), 0)
    end
  end
  if spec.required and (raw[spec.required] == nil or raw[spec.required] == json.null) then
    error(string.format("%s: type %s needs '%s'", where, raw.type, spec.required), 0)
  end
  local rule = {type = raw.type, times = 1, after = 0, seen = 0}
  if raw.path ~= nil then rule.path = check(raw, "path", "pattern", where) end
  if raw.method ~= nil then rule.method = check(raw, "method", "method", where) end
  if raw.times ~= nil then rule.times = check(raw, "times", "times", where) end
  if raw.after ~= nil then rule.after = check(raw, "after", "count", where) end
  for key, value in pairs(spec.defaults or {}) do
    rule[key] = value
  end
  for key, kind in pairs(spec.keys) do
    if raw[key] ~= nil and raw[key] ~= json.null then
      rule[key] = check(raw, key, kind, where)
    end
  end
  return rule
end

-- Parses the body of PUT /_sandbox/faults. Returns the rule list, or nil and a message.
function faults.parse(body)
  local list, err = json.decode(body)
  if list == nil then
    return nil, "invalid JSON: " .. err
  end
  if type(list) ~= "table" or (next(list) ~= nil and list[1] == nil) then
    return nil, "expected a JSON array of rules"
  end
  local ok, rules = pcall(function()
    local out = {}
    for i, raw in ipairs(list) do
      out[i] = parse_rule(raw, i)
    end
    return out
  end)
  if not ok then
    return nil, rules
  end
  return rules
end

local function matches(rule, req, endpoint)
  if rule.method and rule.method ~= req.method then return false end
  if rule.path and not req.path:find(rule.path) then return false end
  local only = endpoints_of[rule.type]
  return not only or only[endpoint] == true
end

-- Picks the rule to apply to a (non-admin) request and uses one of its times.
-- Every rule counts every request it matches (for `after`); the first rule past its `after`
-- wins. Used-up rules leave the list.
function faults.take(rules, req, endpoint)
  local chosen, chosen_index
  for i, rule in ipairs(rules) do
    if matches(rule, req, endpoint) then
      rule.seen = rule.seen + 1
      if not chosen and rule.seen > rule.after then
        chosen, chosen_index = rule, i
      end
    end
  end
  if chosen and chosen.times > 0 then
    chosen.times = chosen.times - 1
    if chosen.times == 0 then
      table.remove(rules, chosen_index)
    end
  end
  return chosen
end

-- The rules as GET /_sandbox/faults shows them (times = what is left, seen = matches so far).
function faults.public(rules)
  local out = json.array()
  for i, rule in ipairs(rules) do
    local copy = {}
    for k, v in pairs(rule) do copy[k] = v end
    out[i] = copy
  end
  return out
end

faults.html_page = table.concat{
  "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n",
  "<body><h1>Bad Gateway</h1><p>The server returned an invalid or incomplete response.</p>",
  "<hr><address>sandbox front end</address></body></html>\n",
}

-- A valid JSON array of filler strings of about `bytes` bytes.
function faults.large_body(bytes)
  local item_len = 1024 -- a quoted string of 1022 'x'
  if bytes < 2 * item_len + 3 then
    return '["' .. ("x"):rep(math.max(0, bytes - 4)) .. '"]'
  end
  local n = (bytes - 2) // (item_len + 1)
  local item = '"' .. ("x"):rep(item_len - 2) .. '"'
  return "[" .. item:rep(n, ",") .. "]"
end

-- Cut a JSON answer in the middle: never valid JSON, since the closing bracket goes.
function faults.truncate(body)
  if #body < 2 then
    return '{"value":['
  end
  return body:sub(1, #body // 2)
end

-- A fault's link with `pad` bytes of "a" added (a link longer than any command line can carry).
function faults.padded(link, pad)
  return link .. ("a"):rep(pad or 0)
end

local gzip_cache = {}

-- gzip data that inflates to `bytes` zero bytes, made once per size with the gzip command
-- (it blocks the server for the fraction of a second that takes). Returns it, or nil and a message.
function faults.gzip_bomb(bytes)
  if gzip_cache[bytes] then
    return gzip_cache[bytes]
  end
  local pipe = io.popen(string.format("head -c %d /dev/zero | gzip -c", bytes), "r")
  if not pipe then
    return nil, "cannot run gzip"
  end
  local out = pipe:read("a")
  local ok = pipe:close()
  if not ok or not out or #out < 18 then
    return nil, "gzip failed"
  end
  gzip_cache[bytes] = out
  return out
end

return faults
