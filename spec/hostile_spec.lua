-- The README's promises against a hostile peer (spec/helpers/rawpeer.lua: raw bytes on
-- 127.0.0.1): whatever the server does, every call returns (never raises), ends in a result or
-- an error object of an allowed kind, never shows a secret, never loops without end and never
-- waits beyond retry_after_cap. The cases are tables in spec/hostile/*.lua; this file runs them.
--
-- A case: { name, call, token = answers, api = answers, expect, timeout, max_retries, check }
--   call    one of CALLS below
--   expect  { ok = true } a result is allowed; kind = "x" or kinds = {...}: the allowed error
--           kinds; status, code, attempts: fields the error must have; sleeps = {...}: the exact
--           waits; max_sleep: the longest wait allowed; retry_after_over = n: err.retry_after > n
--   check   function(ctx, res, err) with more assertions (ctx.log: what the peer received)
local pc = require "partnercustomers"
local core = require "partnercustomers.core"
local rawpeer = require "spec.helpers.rawpeer"
local fake_time = require("spec.helpers.util").fake_time
local C = require "spec.hostile.common"

local GROUPS = { "transport", "status", "retry_after", "hangs", "token", "secrets", "paging", "json" }
local MAX_EVENTS = 400 -- a paging loop that never ends fails here instead of hanging the suite
local fail = C.fail

------------------------------------------------------------------------------------------------
-- The calls

local function transport(ctx, case)
  return { timeout = case.timeout or 3, connect_timeout = 1, max_retries = case.max_retries or 2,
           max_response_bytes = 1024 * 1024, clock = ctx.time.clock, sleep = ctx.time.sleep,
           on_event = ctx.on_event }
end

local function core_client(ctx, case, creds)
  local o = transport(ctx, case)
  o.low_speed_time, o.backoff_base, o.random = 1, 0.5, function() return 1 end
  for k, v in pairs(creds) do o[k] = v end
  return core.new(o)
end

local function client_credentials(ctx)
  return { client_credentials = { token_url = ctx.url .. "/token", client_id = C.CLIENT_ID, client_secret = C.SECRET } }
end

local function get(c, ctx, path)
  return c:request { url = ctx.url .. path, scope = "things.read" }
end

-- Two calls on one client; the outcome is the second's, or the first's failure. strict: the
-- first must succeed (the second is the one the case is about).
local function twice(ctx, case, creds, strict)
  local c <close> = core_client(ctx, case, creds)
  local first, err = get(c, ctx, "/api/first")
  if not first then
    if strict then ctx.first_err = err end
    return nil, err
  end
  return get(c, ctx, "/api/second")
end

-- Collects an iterator's items; it raises its error object (io.lines style), which counts as
-- returning it. Any other raise goes on.
local function collect(iter)
  local list = {}
  local ok, e = pcall(function()
    for item in iter do list[#list + 1] = item end
  end)
  if ok then return list end
  if pc.is_error(e) then return nil, e end
  error(e, 0)
end

local function avepoint(ctx, case)
  local o = transport(ctx, case)
  o.base_url, o.token_url, o.client_id, o.client_secret = ctx.url, ctx.url .. "/token", C.CLIENT_ID, C.SECRET
  return pc.avepoint(o)
end

local function partnercenter(ctx, case, creds)
  local o = transport(ctx, case)
  o.base_url, o.token_url, o.client_id = ctx.url, ctx.url .. "/token", C.CLIENT_ID
  for k, v in pairs(creds) do o[k] = v end
  return pc.partnercenter(o)
end

local CALLS = {}
function CALLS.core(ctx, case)
  local c <close> = core_client(ctx, case, client_credentials(ctx))
  return get(c, ctx, "/api/things")
end
function CALLS.core_fixed(ctx, case)
  local c <close> = core_client(ctx, case, { access_token = C.FIXED })
  return get(c, ctx, "/api/things")
end
function CALLS.core_twice(ctx, case) return twice(ctx, case, { access_token = C.FIXED }, true) end
function CALLS.core_cc_twice(ctx, case) return twice(ctx, case, client_credentials(ctx)) end
function CALLS.ave_customers(ctx, case)
  local ave <close> = avepoint(ctx, case)
  return ave:customers()
end
function CALLS.ave_all(ctx, case)
  local ave <close> = avepoint(ctx, case)
  return ave:all_customers { page_size = 2 }
end
function CALLS.ave_each(ctx, case)
  local ave <close> = avepoint(ctx, case)
  return collect(ave:each_customer { page_size = 2 })
end
function CALLS.ave_page(ctx, case)
  local ave <close> = avepoint(ctx, case)
  return ave:customer_page(1, 2)
end
function CALLS.pc_org(ctx, case)
  local mpc <close> = partnercenter(ctx, case, { client_secret = C.SECRET })
  return mpc:organization(C.TENANT)
end
function CALLS.pc_refresh(ctx, case)
  local mpc <close> = partnercenter(ctx, case, { refresh_token = C.REFRESH,
    on_refresh_token = function(new) ctx.refreshed = new end })
  return mpc:organization(C.TENANT)
end
function CALLS.pc_customers(ctx, case)
  local mpc <close> = partnercenter(ctx, case, { client_secret = C.SECRET })
  return mpc:customers { page_size = 2 }
end

------------------------------------------------------------------------------------------------
-- The checks

local function first_line(s) return (tostring(s):match("^[^\n]*")) end

local function has(list, x)
  for _, v in ipairs(list) do
    if v == x then return true end
  end
  return false
end

local function check_error_fields(e, err)
  if e.status and err.status ~= e.status then
    fail("expected status %s, got %s: %s", e.status, tostring(err.status), tostring(err))
  end
  if e.code and err.code ~= e.code then fail("expected code %s, got %s", e.code, tostring(err.code)) end
  if e.attempts and err.attempts ~= e.attempts then
    fail("expected %d attempt(s), got %s: %s", e.attempts, tostring(err.attempts), tostring(err))
  end
  if e.retry_after_over and not (type(err.retry_after) == "number" and err.retry_after > e.retry_after_over) then
    fail("expected retry_after over %d, got %s", e.retry_after_over, tostring(err.retry_after))
  end
  if type(err.kind) ~= "string" or tostring(err):find("\n") then fail("malformed error object: %s", tostring(err)) end
end

local function check_outcome(e, res, err)
  local kinds = e.kinds or { e.kind }
  local wanted = (e.ok and "a result or " or "") .. (#kinds > 0 and "kind " .. table.concat(kinds, "/") or "")
  if res ~= nil then
    if not e.ok then fail("expected %s, got a result", wanted) end
    if err ~= nil then fail("returned a result and an error together") end
    return
  end
  if not pc.is_error(err) then fail("returned nil and %s (%s), not an error object", type(err), tostring(err)) end
  if not has(kinds, err.kind) then fail("expected %s, got %s: %s", wanted, tostring(err.kind), tostring(err)) end
  check_error_fields(e, err)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

-- Every string reachable from v, with where it was found (in a stable order, for stable reports).
local function strings(v, where, out, seen)
  if type(v) == "string" then
    out[#out + 1] = { v, where }
  elseif type(v) == "table" and not seen[v] then
    seen[v] = true
    if pc.is_error(v) then out[#out + 1] = { tostring(v), "tostring(" .. where .. ")" } end
    for _, k in ipairs(sorted_keys(v)) do
      strings(k, where .. " (a key)", out, seen)
      strings(v[k], where .. "." .. tostring(k), out, seen)
    end
  end
  return out
end

local SECRET_NAMES = { "the client secret", "the issued token", "the fixed token", "the refresh token", "the new refresh token" }

local function check_secrets(ctx, res, err)
  local seen = {}
  local found = strings(err, "err", {}, seen)
  strings(ctx.events, "events", found, seen)
  strings(res, "res", found, seen)
  for _, f in ipairs(found) do
    for i, secret in ipairs(C.SECRETS) do
      if f[1]:find(secret, 1, true) then fail("%s in %s", SECRET_NAMES[i], f[2]) end
    end
  end
end

-- What reached the peer: no followed redirect, no smuggled request, no injected header.
local function check_peer(log)
  for _, r in ipairs(log) do
    if r.path:find("^/elsewhere") then fail("a redirect was followed to %s", r.path) end
    if r.path:find("^/smuggled") or r.head:find("\r\nGET /smuggled") then fail("a smuggled request reached the peer") end
    if r.head:lower():find("[\r\n]x%-injected:") then fail("an injected header reached the peer") end
  end
end

local function same_numbers(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i] ~= b[i] then return false end
  end
  return true
end

local function check_sleeps(e, sleeps)
  for _, s in ipairs(sleeps) do
    if type(s) ~= "number" or s ~= s or s < 0 or s > 120 then fail("slept %s s (beyond 0..120)", tostring(s)) end
    if e.max_sleep and s > e.max_sleep then fail("slept %s s, expected at most %s", s, e.max_sleep) end
  end
  if #sleeps > 12 then fail("slept %d times", #sleeps) end
  if e.sleeps and not same_numbers(e.sleeps, sleeps) then
    fail("expected waits {%s}, got {%s}", table.concat(e.sleeps, ", "), table.concat(sleeps, ", "))
  end
end

------------------------------------------------------------------------------------------------
-- The runner

local function answers(v, peer)
  if type(v) == "function" then return v(peer) end
  return v
end

local function new_ctx(peer)
  local ctx = { url = peer.url, port = peer.port, time = fake_time(C.NOW), events = {} }
  ctx.on_event = function(ev)
    ctx.events[#ctx.events + 1] = ev
    if #ctx.events > MAX_EVENTS then error("runaway: more than " .. MAX_EVENTS .. " events", 0) end
  end
  return ctx
end

local function run(peer, case)
  peer:script { token = answers(case.token, peer) or { C.TOKEN_OK },
                api = answers(case.api, peer) or { C.good(case.call) } }
  local ctx = new_ctx(peer)
  local ok, res, err = pcall(CALLS[case.call], ctx, case)
  ctx.log = peer:log()
  if not ok then fail("raised: %s", first_line(res)) end
  if ctx.first_err then fail("the first of two calls failed: %s", tostring(ctx.first_err)) end
  check_peer(ctx.log)
  check_outcome(case.expect, res, err)
  check_secrets(ctx, res, err)
  check_sleeps(case.expect, ctx.time.sleeps)
  if case.check then case.check(ctx, res, err) end
end

describe("against a hostile peer", function()
  local peer
  -- the peer stops when this process closes its control connection; 900 s is only a backstop
  setup(function() peer = rawpeer.start { lifetime = 900 } end)
  teardown(function() peer:stop() end)

  local total = 0
  for _, group in ipairs(GROUPS) do
    describe(group, function()
      for i, case in ipairs(require("spec.hostile." .. group)) do
        assert(CALLS[case.call], "unknown call " .. tostring(case.call))
        total = total + 1
        it(("#%d %s [%s]"):format(i, case.name, case.call), function() run(peer, case) end)
      end
    end)
  end

  it("has at least 100 cases", function() assert.is_true(total >= 100, total .. " cases") end)
end)
