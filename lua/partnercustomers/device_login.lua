-- pc.device_login{...}: a user signs in with the OAuth 2.0 device authorization grant (RFC 8628)
-- at Entra ID, which gives the first refresh token of Partner Center's app+user calls.
-- HTTP goes through a core client without credentials of its own: the forms are built here, sent
-- as sensitive requests (their answers never go into errors), and the waits between polls use the
-- injected clock and sleep.

local core = require "partnercustomers.core"
local util = require "partnercustomers.util"
local partnercenter = require "partnercustomers.partnercenter"

local misuse = util.misuse

local M = {}

M.DEFAULT_SCOPE = partnercenter.RESOURCE .. "/user_impersonation offline_access"
local GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
local DEVICE_PATH, TOKEN_PATH = "/oauth2/v2.0/devicecode", "/oauth2/v2.0/token"
local DEFAULT_INTERVAL = 5 -- RFC 8628 3.2, when the server names none
local SLOW_DOWN_STEP = 5   -- RFC 8628 3.5
local MAX_EXPIRES = 86400  -- a longer life from a server is taken as a day
local MAX_TOKEN = 65536    -- longest code or token taken
local SLICE = 0.1          -- the real sleep wakes this often, so that Ctrl-C ends it

local function scope(v)
  if type(v) == "string" and v:find("%S") and not v:find("[%c]") and #v <= 4096 then return v end
  return nil, "a non-empty string of space-separated scopes"
end

local OPTIONS = util.client_options {
  tenant = partnercenter.tenant,
  client_id = util.string,
  client_secret = util.string,
  cloud = util.one_of { "global", "usgov", "china" },
  scope = scope,
  devicecode_url = util.url,
  token_url = util.url,
  on_code = util.func,
  deadline = util.deadline,
}

------------------------------------------------------------------------------------------------
-- Forms and secrets

local function form_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function form(fields)
  local parts = {}
  for _, kv in ipairs(fields) do
    if kv[2] then parts[#parts + 1] = form_encode(kv[1]) .. "=" .. form_encode(kv[2]) end
  end
  return table.concat(parts, "&")
end

local function replace_plain(s, what, by)
  local out, i = {}, 1
  while true do
    local a, b = s:find(what, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1)
    out[#out + 1] = by
    i = b + 1
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

-- Replaces, in every string field of err, each secret (literal or form-encoded) by "[redacted]":
-- the core does not know the device code or a client secret it was never given.
local function scrub(err, secrets)
  for k, v in pairs(err) do
    if type(v) == "string" then
      for _, s in ipairs(secrets) do
        v = replace_plain(replace_plain(v, s, "[redacted]"), form_encode(s), "[redacted]")
      end
      err[k] = v
    end
  end
  return err
end

------------------------------------------------------------------------------------------------
-- Checking the answers

local function printable(v, max)
  return type(v) == "string" and #v >= 1 and #v <= max and v:find("^[\32-\126]+$") ~= nil
end

-- A URL the user may be sent to: what the module itself would request (https, or http to a
-- loopback host), without spaces.
local function user_url(v)
  return printable(v, 2048) and not v:find(" ", 1, true) and core.url_problem(v) == nil
end

local function token_value(v)
  return type(v) == "string" and #v >= 1 and #v <= MAX_TOKEN and not v:find("[\r\n%z]")
end

-- The device authorization answer: {device_code, user_code, verification_uri,
-- verification_uri_complete?, expires_in, interval, message?}, or nil and what is wrong.
local function device_answer(d)
  if not util.is_object(d) then return nil, "the device code answer is not a JSON object" end
  if not token_value(d.device_code) then return nil, 'the answer has no usable "device_code"' end
  if not printable(d.user_code, 64) then return nil, 'the answer has no usable "user_code"' end
  -- verification_url: the name Entra's older endpoint used
  local uri = d.verification_uri or d.verification_url
  if not user_url(uri) then
    return nil, 'the answer has no "verification_uri" that is an https:// URL'
  end
  local expires_in = util.to_integer(d.expires_in)
  if not expires_in or expires_in < 1 then return nil, 'the answer has no usable "expires_in"' end
  local interval = util.to_integer(d.interval) or DEFAULT_INTERVAL
  local message = type(d.message) == "string" and #d.message <= 1024
                  and (d.message:gsub("%c", " ")) or nil
  return {
    device_code = d.device_code,
    user_code = d.user_code,
    verification_uri = uri,
    verification_uri_complete = user_url(d.verification_uri_complete) and d.verification_uri_complete or nil,
    expires_in = math.min(expires_in, MAX_EXPIRES),
    interval = math.min(math.max(interval, 1), expires_in),
    message = message,
  }
end

local function tokens_of(d)
  if not util.is_object(d) then return nil, "the token answer is not a JSON object" end
  if not token_value(d.access_token) then return nil, 'the token answer has no usable "access_token"' end
  if d.refresh_token == nil then
    return nil, "the token answer holds no refresh token (was offline_access granted?)"
  end
  if not token_value(d.refresh_token) then return nil, 'the token answer has no usable "refresh_token"' end
  return {
    access_token = d.access_token,
    refresh_token = d.refresh_token,
    expires_in = util.to_integer(d.expires_in),
    token_type = type(d.token_type) == "string" and d.token_type or nil,
    scope = type(d.scope) == "string" and d.scope or nil,
    id_token = token_value(d.id_token) and d.id_token or nil,
  }
end

------------------------------------------------------------------------------------------------
-- The flow

-- What to tell the user, from the on_code table: one line.
function M.instructions(info)
  return ("To sign in, open %s in a web browser and enter the code %s (it expires in %d minutes).")
    :format(info.verification_uri, info.user_code, math.max(1, info.expires_in // 60))
end

local function default_on_code(info)
  io.stderr:write(M.instructions(info), "\n")
  io.stderr:flush()
end

-- The real sleep, in slices: a Ctrl-C between two slices ends it.
local function real_sleep(seconds)
  local stop = core.now() + seconds
  while true do
    local left = stop - core.now()
    if not (left > 0) then return end
    core.sleep(math.min(left, SLICE))
  end
end

local function request(url, body)
  return {
    method = "POST", url = url, body = body, sensitive = true, decode = true,
    headers = { ["Content-Type"] = "application/x-www-form-urlencoded", ["Accept"] = "application/json" },
  }
end

-- attempts: the requests made with the device code (none of them failed: the code ran out).
local function expired_error(req, attempts)
  return core.error {
    kind = "auth", code = "expired_token", method = req.method, url = req.url, attempts = attempts,
    message = "the code expired before the sign-in was completed",
  }
end

-- An OAuth refusal from the device code or token endpoint is an auth error, as the core makes
-- those of its own token requests.
local function refused(err)
  local s = err.status
  if s and s >= 400 and s < 500 and s ~= 408 and s ~= 429 then err.kind = "auth" end
  return err
end

local function urls(o, level)
  if o.token_url and o.devicecode_url then return o.devicecode_url, o.token_url end
  if o.devicecode_url then
    misuse(level + 1, "pc.device_login: option 'devicecode_url' needs option 'token_url'")
  end
  if o.token_url then
    local base = o.token_url:sub(1, -#TOKEN_PATH - 1)
    if o.token_url:sub(-#TOKEN_PATH):lower() ~= TOKEN_PATH then
      misuse(level + 1, "pc.device_login: option 'token_url' does not end in %s: give option "
                        .. "'devicecode_url' too", TOKEN_PATH)
    end
    return base .. DEVICE_PATH, o.token_url
  end
  if not o.tenant then
    misuse(level + 1, "pc.device_login: option 'tenant' is required (or give option 'token_url')")
  end
  local authority = partnercenter.CLOUDS[o.cloud or "global"].authority .. "/" .. o.tenant
  return authority .. DEVICE_PATH, authority .. TOKEN_PATH
end

-- Asks for a device code; returns the checked answer or nil, err.
local function device_code(client, o, url, at)
  local req = request(url, form {
    { "client_id", o.client_id }, { "client_secret", o.client_secret }, { "scope", o.scope },
  })
  local copts = util.call_options(o, at)
  if not copts then return nil, util.deadline_error(req, "pc.device_login") end
  local resp, err = client:request(req, copts)
  if not resp then return nil, scrub(refused(err), o.secrets) end
  local info, why = device_answer(resp.data)
  if not info then return nil, scrub(util.protocol_error(req, resp, "%s", why), o.secrets) end
  return info
end

-- Polls the token endpoint every `interval` seconds until the user has answered, the code expires
-- or the deadline passes.
local function poll(client, o, url, info, at)
  local req = request(url, form {
    { "grant_type", GRANT_TYPE }, { "client_id", o.client_id }, { "client_secret", o.client_secret },
    { "device_code", info.device_code },
  })
  req.retry = "unsent" -- a device code the server may have redeemed is not sent twice
  local expires_at = o._clock() + info.expires_in
  local interval, reason, polls = info.interval, "start", 0
  while true do
    local now = o._clock()
    if now + interval > expires_at then
      return nil, expired_error(req, polls)
    elseif at and now + interval >= at then
      return nil, util.deadline_error(req, "pc.device_login")
    end
    if o.on_event then o.on_event { type = "poll", wait = interval, reason = reason } end
    o._sleep(interval)
    now = o._clock() -- a wait may last longer than asked
    if at and now >= at then
      return nil, util.deadline_error(req, "pc.device_login")
    elseif now >= expires_at then
      return nil, expired_error(req, polls)
    end
    local copts = util.call_options(o, math.min(at or expires_at, expires_at))
    local resp, err = client:request(req, copts)
    polls = polls + 1
    if resp then
      local tokens, why = tokens_of(resp.data)
      if tokens then return tokens end
      return nil, scrub(util.protocol_error(req, resp, "%s", why), o.secrets)
    end
    local code = err.status and err.status < 500 and err.code
    if code == "authorization_pending" then
      reason = code
    elseif code == "slow_down" then
      interval, reason = interval + SLOW_DOWN_STEP, code
    else -- expired_token, access_denied (Entra: authorization_declined), and every other refusal
      return nil, scrub(refused(err), o.secrets)
    end
  end
end

function M.device_login(opts)
  local o = util.options(opts, OPTIONS, "pc.device_login", 2)
  if not o.client_id then misuse(2, "pc.device_login: option 'client_id' is required") end
  local devicecode_url, token_url = urls(o, 2)
  o.scope = o.scope or M.DEFAULT_SCOPE
  o._clock = o.clock or core.now
  o._sleep = o.sleep or real_sleep
  o.secrets = { o.client_secret }
  local client <close> = util.new_core(core, util.core_options(o), 2)
  local at = util.deadline_at(o, o.deadline)

  local info, err = device_code(client, o, devicecode_url, at)
  if not info then return nil, err end
  o.secrets[#o.secrets + 1] = info.device_code
  local on_code = o.on_code or default_on_code
  on_code {
    user_code = info.user_code,
    verification_uri = info.verification_uri,
    verification_uri_complete = info.verification_uri_complete,
    expires_in = info.expires_in,
    interval = info.interval,
    message = info.message,
  }
  return poll(client, o, token_url, info, at)
end

return M
