-- Shared helpers of the Lua layer: misuse errors, option tables, URLs, a small JSON encoder.
--
-- Levels: every function that takes `level` counts it as error() does, from its own caller:
-- level 1 blames the function that called it, level 2 that function's caller, and so on.
-- Misuse must point at the user's line, so callers pass their own level + 1 and never call these
-- in a tail position (a tail call removes the frame the level counts).

local M = {}

local PREFIX = "partnercustomers: "

function M.misuse(level, fmt, ...)
  error(PREFIX .. fmt:format(...), level + 1)
end

-- What a bad value was, for a message. Only numbers given where a number belongs are echoed:
-- anything else may be a secret in the wrong place.
local function got(v, numeric)
  if numeric and type(v) == "number" then return "got " .. tostring(v) end
  return "got " .. (math.type(v) or type(v))
end
M.got = got

local NUMERIC = setmetatable({}, { __mode = "k" }) -- checkers made by M.number

------------------------------------------------------------------------------------------------
-- Checkers: function(v) -> value to store, or nil and what was expected ("a positive number").

function M.string(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil, "a non-empty string"
end

-- A string that can go into an HTTP header.
function M.header_string(v)
  if type(v) == "string" and v ~= "" and not v:find("[\r\n\0]") then return v end
  return nil, "a non-empty string without CR, LF or NUL"
end

function M.func(v)
  if type(v) == "function" then return v end
  return nil, "a function"
end

function M.table(v)
  if type(v) == "table" then return v end
  return nil, "a table"
end

-- A number in [min, max]; with integer = true an integral value, returned as an integer
-- (2.0 -> 2). r.expected replaces the generated description.
function M.number(r)
  local expected = r.expected
    or ("%s from %s to %s"):format(r.integer and "an integer" or "a number", r.min, r.max)
  local function check(v)
    if type(v) ~= "number" then return nil, expected end
    if r.integer then v = math.tointeger(v) end
    if v and v >= r.min and v <= r.max then return v end -- NaN fails the comparisons
    return nil, expected
  end
  NUMERIC[check] = true
  return check
end

-- One of a few words, matched case-insensitively; returns the word as listed.
function M.one_of(words)
  local set = {}
  for _, w in ipairs(words) do set[w:lower()] = w end
  local expected = 'one of "' .. table.concat(words, '", "') .. '"'
  return function(v)
    local w = type(v) == "string" and set[v:lower()]
    if w then return w end
    return nil, expected
  end
end

-- A non-empty array of non-empty strings, copied.
function M.string_array(v)
  local expected = "a non-empty array of non-empty strings"
  if type(v) ~= "table" then return nil, expected end
  local n, copy = 0, {}
  for k in pairs(v) do
    n = n + 1
    local s = math.type(k) == "integer" and v[k]
    if type(s) ~= "string" or s == "" then return nil, expected end
    copy[k] = s
  end
  if n == 0 or #copy ~= n then return nil, expected end -- empty, or holes / non-integer keys
  return copy
end

-- Reads the option table `opts` of `what` (a name such as "pc.avepoint") against `spec`
-- ({key = checker}) and returns a validated copy. nil counts as an empty table.
function M.options(opts, spec, what, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    M.misuse(level + 1, "%s expects an option table (%s)", what, got(opts))
  end
  for k in pairs(opts) do
    if type(k) ~= "string" or spec[k] == nil then
      M.misuse(level + 1, "%s: unknown option '%s'", what, tostring(k))
    end
  end
  local copy = {}
  for k, v in pairs(opts) do
    local value, expected = spec[k](v)
    if value == nil then
      M.misuse(level + 1, "%s: option '%s' must be %s (%s)", what, k, expected,
               got(v, NUMERIC[spec[k]]))
    end
    copy[k] = value
  end
  return copy
end

-- env[name] from a map of environment variables, nil when unset or empty (the command line and
-- `login` read their settings so).
function M.env_value(env, name)
  local v = env[name]
  if v == nil or v == "" then return nil end
  return v
end

-- An integer from an integer, an integral float or a decimal string ("3", " -3 "); else nil.
function M.to_integer(x)
  if type(x) == "string" then
    x = tonumber(x:match("^%s*(%-?%d+)%s*$"))
  end
  if type(x) ~= "number" then return nil end
  return math.tointeger(x)
end

------------------------------------------------------------------------------------------------
-- URLs

local DEFAULT_PORT = { http = 80, https = 443 }

-- Splits an absolute http(s) URL: {scheme, host, port (integer), path (with query)}.
-- Returns nil and a reason for anything else, including a user:password@ part.
function M.parse_url(s)
  if type(s) ~= "string" then return nil, "not a string" end
  local scheme, authority, rest = s:match("^(%a[%w+.%-]*)://([^/?#]*)(.*)$")
  if not scheme then return nil, "not an absolute URL" end
  scheme = scheme:lower()
  if not DEFAULT_PORT[scheme] then return nil, "not an http(s) URL" end
  if authority:find("@", 1, true) then return nil, "credentials do not belong in a URL" end
  local host, port = authority:match("^(%[[%x:.]+%])(.*)$")
  if not host then host, port = authority:match("^([%w._%-]+)(.*)$") end
  if not host then return nil, "no valid host" end
  if port == "" then
    port = DEFAULT_PORT[scheme]
  else
    port = math.tointeger(tonumber(port:match("^:(%d+)$")))
    if not port or port < 1 or port > 65535 then return nil, "bad port" end
  end
  return { scheme = scheme, host = host:lower(), port = port, path = rest }
end

-- Checker for a base or token URL: what the core may request (core.url_problem: https, or http to
-- a loopback host as libcurl reads it; the one rule, so that an accepted URL never fails on use),
-- that this layer can split (parse_url), without a query or fragment. Returns the URL without a
-- trailing slash.
function M.url(v)
  local why
  if type(v) ~= "string" or v == "" then
    why = "not a string"
  elseif v:find("[%s%c]") then
    why = "it holds spaces or control characters"
  else
    why = require("partnercustomers.core").url_problem(v)
    local u, perr = M.parse_url(v)
    if not why and not u then
      why = perr
    elseif not why and u.path:find("[?#]") then
      why = "a query or fragment is not allowed"
    elseif not why then
      return (v:gsub("/+$", ""))
    end
  end
  return nil, "an https:// URL (or http:// to a loopback host): " .. why
end

-- The origin of a parsed URL, for same-host checks.
function M.origin(u)
  return ("%s://%s:%d"):format(u.scheme, u.host, u.port)
end

------------------------------------------------------------------------------------------------
-- JSON encoding: the one encoder of the Lua layer (request bodies, the CLI's output, the sandbox's
-- answers); the core decodes. Output is the same in every C locale: numbers are written with a dot.

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

-- A number that string.format or tostring wrote, with the decimal point made ".": both follow the
-- C locale, whose decimal point is "," (or several bytes) in many. What replaces it is never a
-- digit, a sign or a letter (e, inf, nan), and %g writes no grouping. JSON and CSV want a dot.
function M.dot_decimal(s)
  return (s:gsub("[^0-9a-zA-Z+%-]+", "."))
end

-- Keys listed in `first` come first, in that order; the rest sorted, so output is stable.
local function sorted_keys(t, first)
  local keys, listed = {}, {}
  for _, k in ipairs(first or {}) do
    if t[k] ~= nil then keys[#keys + 1] = k; listed[k] = true end
  end
  local rest = {}
  for k in pairs(t) do
    if not listed[k] then rest[#rest + 1] = k end
  end
  table.sort(rest, function(a, b) return tostring(a) < tostring(b) end)
  table.move(rest, 1, #rest, #keys + 1, keys)
  return keys
end

local ARRAY_MT = { __name = "partnercustomers.json.array" }

-- Marks t (or a new table) as a JSON array; without the mark, a table is an array when its keys
-- are exactly 1..#t, so the mark only matters to say so of a table that may hold other keys.
function M.json_array(t)
  return setmetatable(t or {}, ARRAY_MT)
end

-- True when the keys of t are exactly 1..#t (an empty table included).
local function is_array(t)
  local len, n = #t, 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > len then return false end
    n = n + 1
  end
  return n == len
end
M.is_array = is_array

-- `first`: keys that come first in every object, in that order (see format.lua); `null`: a value
-- written as null (the sandbox's cjson.null), besides nil in an array.
local function encode(v, out, first, null, depth)
  local t = math.type(v) or type(v)
  if v == nil or (null ~= nil and v == null) then
    out[#out + 1] = "null"
  elseif t == "string" then
    out[#out + 1] = quote(v)
  elseif t == "integer" then
    out[#out + 1] = ("%d"):format(v)
  elseif t == "float" then
    if v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = "null"
    else
      local s = M.dot_decimal(("%.14g"):format(v))
      if tonumber(s) ~= v then s = M.dot_decimal(("%.17g"):format(v)) end
      out[#out + 1] = s
    end
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif t == "table" then
    if depth > 64 then error(PREFIX .. "cannot encode JSON: nested too deeply (a cycle?)", 0) end
    if getmetatable(v) == ARRAY_MT or is_array(v) then -- an empty table is an array: ours are lists
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], out, first, null, depth + 1)
      end
      out[#out + 1] = "]"
    else
      out[#out + 1] = "{"
      for i, k in ipairs(sorted_keys(v, first)) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = quote(tostring(k))
        out[#out + 1] = ":"
        encode(v[k], out, first, null, depth + 1)
      end
      out[#out + 1] = "}"
    end
  else
    error(PREFIX .. "cannot encode a " .. t .. " as JSON", 0)
  end
end

function M.json_encode(v, first, null)
  local out = {}
  encode(v, out, first, null, 0)
  return table.concat(out)
end

-- core.new(opts), with the core's misuse errors (an unreadable certificate, a wrong password...)
-- blamed on the user's line rather than on this layer's call.
function M.new_core(core, opts, level)
  local ok, client = pcall(core.new, opts)
  if not ok then
    error((tostring(client):gsub("^[^\n]-:%d+: ", "")), level + 1)
  end
  return client
end

-- The transport options every client takes and hands to the core as they are, checked with the
-- ranges the core accepts (so that the core never raises from inside this layer). `clock` and
-- `sleep` are injected time (tests); a host's event loop takes M.LOOP_OPTIONS.
M.TRANSPORT_OPTIONS = {
  timeout = M.number { min = 0.001, max = 86400 },
  connect_timeout = M.number { min = 0.001, max = 3600 },
  max_retries = M.number { integer = true, min = 0, max = 10 },
  max_parallel = M.number { integer = true, min = 1, max = 64 },
  max_response_bytes = M.number { integer = true, min = 1, max = math.tointeger(1e12) },
  ca_file = M.string,
  proxy = M.string,
  user_agent = M.header_string,
  on_event = M.func,
  clock = M.func,
  sleep = M.func,
}

M.DEFAULT_MAX_PARALLEL = 8 -- the core's default max_parallel

------------------------------------------------------------------------------------------------
-- Call options: parallel and deadline

-- `parallel` of a method: an integer 1..64 here; at most the client's max_parallel is checked by
-- M.parallel_of, which knows the client.
M.parallel = M.number { integer = true, min = 1, max = 64 }

M.MAX_DEADLINE = 7 * 86400 -- the core's limit for one call

-- `deadline`: seconds (> 0) for the whole method, every request, token fetch and retry wait of it
-- included.
local function deadline(v)
  if type(v) == "number" and v > 0 and v <= M.MAX_DEADLINE then return v end -- NaN fails
  return nil, ("a number of seconds > 0 and at most %d"):format(M.MAX_DEADLINE)
end
NUMERIC[deadline] = true
M.deadline = deadline

-- The `parallel` of a method of wrapper w (o.parallel, checked by M.parallel, or the client's
-- max_parallel): more than the client's max_parallel is misuse at `level`, never a silent cap.
function M.parallel_of(w, o, what, level)
  local p = o.parallel
  if p == nil then return w._max_parallel end
  if p > w._max_parallel then
    M.misuse(level + 1, "%s: option 'parallel' must be at most the client's max_parallel, %d (got %d); "
             .. "give the client a larger max_parallel (up to 64)", what, w._max_parallel, p)
  end
  return p
end

-- The moment (on the client's clock) a method with `seconds` of deadline must end; nil: none.
function M.deadline_at(w, seconds)
  if seconds == nil then return nil end
  return w._clock() + seconds
end

-- The options of one core call of a method that ends at `at` (nil: no deadline): {parallel =
-- parallel, deadline = the seconds left}; nil once `at` has passed.
function M.call_options(w, at, parallel)
  local copts = { parallel = parallel }
  if at then
    local left = at - w._clock()
    if not (left > 0) then return nil end
    copts.deadline = math.min(left, M.MAX_DEADLINE)
  end
  return copts
end

-- The `timeout` error of a request `req` that was not made because the method's deadline had
-- passed (attempts = 0: nothing was sent).
function M.deadline_error(req, what)
  return require("partnercustomers.core").error {
    kind = "timeout",
    method = req.method,
    url = req.url,
    attempts = 0,
    request_id = req.headers and req.headers["MS-RequestId"] or nil,
    correlation_id = req.headers and req.headers["MS-CorrelationId"] or nil,
    message = ("the deadline of %s passed before this request could start"):format(what),
  }
end

function M.boolean(v)
  if type(v) == "boolean" then return v end
  return nil, "a boolean"
end

-- How a client waits, when a host's event loop should: `wait` (a function given the wait object
-- each time a call must wait; it may yield) or `cooperative` (coroutine.yield inside a coroutine,
-- blocking on the main thread). The Lua layer's, not the core's (see M.request).
M.LOOP_OPTIONS = {
  wait = M.func,
  cooperative = M.boolean,
}

-- A client's option checkers: the transport options, the loop options and its own.
function M.client_options(own)
  local all = {}
  for k, check in pairs(M.TRANSPORT_OPTIONS) do all[k] = check end
  for k, check in pairs(M.LOOP_OPTIONS) do all[k] = check end
  for k, check in pairs(own) do all[k] = check end
  return all
end

-- The core's options from a client's checked options: the transport ones, as they are.
function M.core_options(o)
  local copts = {}
  for k in pairs(M.TRANSPORT_OPTIONS) do copts[k] = o[k] end
  return copts
end

------------------------------------------------------------------------------------------------
-- Calls of the core, blocking or stepped in a host's event loop

-- The wait function of wrapper w for a call made now, or nil: block in the core, as always.
local function waiter(w)
  if w._wait then return w._wait end
  if w._cooperative and coroutine.isyieldable() then return coroutine.yield end
  return nil
end

-- The hook calls a step queued, made here, where they may yield: {fn, arg} (on_event,
-- on_refresh_token) or {provider, scope, "token"}, whose answer goes back to the batch.
local function make_calls(b, calls)
  for _, call in ipairs(calls) do
    if call[3] == "token" then
      b:provide(call[2], pcall(call[1], call[2]))
    else
      call[1](call[2])
    end
  end
end

local function steps(b, wait)
  while true do
    local w, calls, sleep = b:step()
    if calls then
      make_calls(b, calls) -- then step again at once: the hooks may have let requests start
    elseif w == nil then
      return b:results()
    elseif sleep then
      sleep(w:timeout()) -- a wait on the client's clock: its sleep hook, as in a blocking call
    else
      wait(w)
    end
  end
end

-- client:batch(reqs, copts) of wrapper w: the core's blocking call, or the same batch stepped
-- with each wait handed to the wait function. An error in a hook (or in wait) abandons the batch
-- (its transfers removed, the client idle) and propagates.
function M.batch(w, reqs, copts)
  local wait = waiter(w)
  if not wait then return w._client:batch(reqs, copts) end
  w._polled = true
  local b
  -- started inside the pcall: whatever raises once the batch exists (a memory error included)
  -- abandons it, so the client is idle again at once, not when the collector finds the batch
  local ok, results = pcall(function()
    b = w._client:start(reqs, copts)
    return steps(b, wait)
  end)
  if not ok then
    if b then b:abort() end
    error(results, 0)
  end
  return results
end

-- client:request(req, copts) of wrapper w: the response, or nil and the error.
function M.request(w, req, copts)
  if not waiter(w) then return w._client:request(req, copts) end
  local pair = M.batch(w, { req }, copts)[1]
  if pair[1] ~= nil then return pair[1] end
  return nil, pair[2]
end

-- The running calls of a client wrapper, by thread: weak, so that a call suspended in a
-- coroutine that was dropped (and collected) stops counting.
function M.call_counter()
  return setmetatable({}, { __mode = "k" })
end

-- Runs f(...) as a call of the client wrapper w, and gives what it returns: a close from one of
-- the call's hooks meanwhile is refused (w._calls counts the calls running, by thread). Errors
-- propagate as they are (position already in the message; an error object as it is).
function M.in_call(w, f, ...)
  local calls, co = w._calls, coroutine.running()
  calls[co] = (calls[co] or 0) + 1
  local r = table.pack(pcall(f, ...))
  calls[co] = calls[co] > 1 and calls[co] - 1 or nil
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

-- Closes the client wrapper w (`what` names it in messages: "AvePoint"); misuse at `level` while a
-- call of it runs (a close from a hook), which changes nothing: the wrapper stays open.
function M.close(w, what, level)
  if next(w._calls) ~= nil then
    M.misuse(level + 1, "close: the %s client is in a call (closed from one of its hooks?); "
             .. "close it once the call has returned", what)
  end
  if not w._closed then
    M.forget_descriptor(w)
    w._client:close()
    w._closed, w._client = true, nil
  end
end

-- Before the descriptor of wrapper w's client is closed: a host that caches descriptors must
-- forget it, or it would act on a closed (or reused) number. cqueues wants cqueues.cancel(fd)
-- for a descriptor it polled; its own sockets do so when they close.
function M.forget_descriptor(w)
  local cqueues = package.loaded.cqueues
  if w._polled and not w._closed and type(cqueues) == "table" and cqueues.cancel then
    cqueues.cancel(w._client:pollfd())
  end
end

-- A JSON object as the core decodes it: a table that is not a list (an empty table counts as both).
function M.is_object(v)
  return type(v) == "table" and (next(v) == nil or not is_array(v))
end

local function request_header(req, name)
  for k, v in pairs(req.headers or {}) do
    if k:lower() == name then return v end
  end
end

-- An error of `kind` about the answer `resp` to `req`, with the ids Partner Center gives or that
-- the request sent (absent for AvePoint).
function M.answer_error(kind, req, resp, fmt, ...)
  local h = resp.headers or {}
  return require("partnercustomers.core").error {
    kind = kind,
    method = req.method,
    url = req.url,
    status = resp.status,
    attempts = resp.attempts,
    request_id = h["ms-requestid"] or request_header(req, "ms-requestid"),
    correlation_id = h["ms-correlationid"] or request_header(req, "ms-correlationid"),
    cv = h["ms-cv"],
    message = fmt:format(...),
  }
end

-- A `protocol` error: a well-formed answer of the wrong shape.
function M.protocol_error(req, resp, fmt, ...)
  return M.answer_error("protocol", req, resp, fmt, ...)
end

return M
