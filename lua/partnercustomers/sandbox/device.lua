-- The sandbox's Entra ID-style device authorization grant (RFC 8628): the device code endpoint,
-- the device_code grant of the v2 token endpoint, and admin calls with which a test plays the user
-- (approve, deny) or time (expire, slow down). Routed to by partnercenter.lua; see README.md.

local cjson = require "cjson.safe"
local json = require "partnercustomers.sandbox.json"

local device = {}

device.GRANT = "urn:ietf:params:oauth:grant-type:device_code"
device.PATH = "^/([^/]+)/oauth2/v2%.0/devicecode$"
device.PAGE = "/devicelogin"

local USER_SCOPE = "https://api.partnercenter.microsoft.com/user_impersonation"
local OTHER_SCOPES = {offline_access = true, openid = true, profile = true}
local USER_CODE_CHARS = "BCDFGHJKLMNPQRSTVWXZ23456789" -- no vowels, no 0/1 look-alikes
local USER_CODE_LENGTH = 9
local EXPIRES_IN, INTERVAL = 900, 5 -- Entra's values

local Device = {__name = "partnercustomers.sandbox.device"}
Device.__index = Device

local function reply(status, value, headers)
  headers = headers or {}
  headers["content-type"] = "application/json; charset=utf-8"
  return {status = status, headers = headers, body = json.encode(value)}
end

function Device:user_code()
  local hex = self.svc.random_hex(USER_CODE_LENGTH)
  local out = {}
  for h in hex:gmatch("%x%x") do
    local k = tonumber(h, 16) % #USER_CODE_CHARS + 1
    out[#out + 1] = USER_CODE_CHARS:sub(k, k)
  end
  return table.concat(out)
end

-- Checks the scope of a device code request: the Partner Center user scope, plus OIDC ones.
local function scope_ok(scope)
  local user = false
  for word in (scope or ""):gmatch("%S+") do
    if word == USER_SCOPE then
      user = true
    elseif not OTHER_SCOPES[word] then
      return false
    end
  end
  return user
end

-- POST /{tenant}/oauth2/v2.0/devicecode: form `client_id`, `scope` (and `client_secret` from a
-- confidential client). Checked like the token endpoint: tenant, form, client, scope.
function Device:authorize(req, tenant, form)
  local pc = self.pc
  local denied = pc:authenticate_client(req, form)
  if denied then return denied end
  if not form.scope then
    return pc:entra_error(req, 400, "invalid_request", 900144,
      "The request body must contain the following parameter: 'scope'.")
  end
  if not scope_ok(form.scope) then
    return pc:entra_error(req, 400, "invalid_scope", 70011,
      "The provided value for the input parameter 'scope' is not valid: ask for " .. USER_SCOPE ..
      " (and offline_access for a refresh token).")
  end
  local code = {
    device_code = "DAQABAAEAAAA" .. self.svc.random_hex(48),
    user_code = self:user_code(),
    client_id = form.client_id,
    scope = form.scope,
    created = self.svc.clock(),
    expires_in = EXPIRES_IN,
    state = self.svc.cfg.approve_devices and "approved" or "pending",
    polls = 0,
    slow_down = 0,
  }
  self.codes[code.device_code] = code
  self.by_user[code.user_code] = code
  self.order[#self.order + 1] = code
  local uri = (req.base_url or self.svc.base_url or "") .. device.PAGE
  return reply(200, {
    user_code = code.user_code, device_code = code.device_code, verification_uri = uri,
    expires_in = EXPIRES_IN, interval = INTERVAL,
    message = "To sign in, use a web browser to open the page " .. uri .. " and enter the code " ..
              code.user_code .. " to authenticate.",
  }, pc:entra_headers(req))
end

-- The device_code grant (v2 token endpoint), once the client is authenticated. The AADSTS codes
-- are the sandbox's choice, after Entra's.
function Device:redeem(req, form, version)
  local pc = self.pc
  if version ~= 2 then
    return pc:entra_error(req, 400, "unsupported_grant_type", 70003,
      "The device code grant is served on the v2.0 token endpoint only.")
  end
  if not form.device_code or form.device_code == "" then
    return pc:entra_error(req, 400, "invalid_request", 900144,
      "The request body must contain the following parameter: 'device_code'.")
  end
  local code = self.codes[form.device_code]
  if not code or code.client_id ~= form.client_id then
    return pc:entra_error(req, 400, "bad_verification_code", 70000,
      "The device code was not recognized.")
  end
  code.polls = code.polls + 1
  if code.state ~= "redeemed" and self.svc.clock() >= code.created + code.expires_in then
    code.state = "expired"
  end
  if code.state == "expired" then
    return pc:entra_error(req, 400, "expired_token", 70019,
      "Verification code expired. Start the sign-in again.")
  elseif code.state == "denied" then
    return pc:entra_error(req, 400, code.denial, 70000, "The user declined the sign-in.")
  elseif code.state == "redeemed" then
    return pc:entra_error(req, 400, "invalid_grant", 70000, "The device code was already redeemed.")
  elseif code.slow_down > 0 then
    code.slow_down = code.slow_down - 1
    return pc:entra_error(req, 400, "slow_down", 70016, "Polling too fast: add 5 seconds to the interval.")
  elseif code.state == "pending" then
    return pc:entra_error(req, 400, "authorization_pending", 70016,
      "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
  end
  code.state = "redeemed"
  local ttl = self.svc.cfg.token_ttl
  local body = {token_type = "Bearer", scope = USER_SCOPE, expires_in = ttl, ext_expires_in = ttl,
                access_token = self.svc:issue(self.audience)}
  for word in code.scope:gmatch("%S+") do
    if word == "offline_access" then body.refresh_token = pc:issue_refresh_token() end
  end
  return reply(200, body, pc:entra_headers(req))
end

-- GET /devicelogin, the verification page: a sandbox has no users, so it says how to play one.
function Device:page(req)
  local base = req.base_url or self.svc.base_url or ""
  return {status = 200, headers = {["content-type"] = "text/plain; charset=utf-8"},
          body = "partnercustomers sandbox: no one signs in here. Approve the latest code with\n" ..
                 "  curl -X POST -d '{\"action\":\"approve\"}' " .. base .. "/_sandbox/device\n" ..
                 "(or \"deny\", \"expire\", \"slow_down\"; add \"user_code\" for another code).\n"}
end

-- What a test may see of a code (the device code too, so that a test can look for it where it
-- must not be).
local function public(code)
  return {user_code = code.user_code, device_code = code.device_code, state = code.state,
          polls = code.polls, scope = code.scope, client_id = code.client_id, slow_down = code.slow_down}
end

---------------------------------------------------------------------------------------------
-- Admin

device.admin = {}

device.admin["GET /_sandbox/device"] = function(self)
  local out = json.array()
  for i, code in ipairs(self.order) do out[i] = public(code) end
  return reply(200, out)
end

local ACTIONS = {
  approve = function(code) code.state = "approved" end,
  deny = function(code, body)
    code.state, code.denial = "denied", body.error or "authorization_declined"
  end,
  expire = function(code) code.state = "expired" end,
  slow_down = function(code) code.slow_down = code.slow_down + 1 end,
}

-- body: {"action": "approve"|"deny"|"expire"|"slow_down", "user_code": (default: the latest),
-- "error": (deny only) "authorization_declined" (Entra's, the default) or "access_denied" (RFC 8628)}
device.admin["POST /_sandbox/device"] = function(self, req)
  local body = cjson.decode(req.body or "")
  local action = type(body) == "table" and ACTIONS[body.action]
  local bad_error = type(body) == "table" and body.error ~= nil and body.error ~= "authorization_declined"
                    and body.error ~= "access_denied"
  if not action or bad_error then
    return reply(400, {error = "invalid_request", error_description =
      'expected {"action": "approve"|"deny"|"expire"|"slow_down", "user_code"?, "error"?}'})
  end
  local code = body.user_code and self.by_user[body.user_code] or (body.user_code == nil and self.order[#self.order])
  if not code then
    return reply(404, {error = "not_found", error_description = "no such user code"})
  end
  if code.state ~= "pending" and code.state ~= "approved" and body.action ~= "slow_down" then
    return reply(409, {error = "conflict", error_description = "the code is " .. code.state})
  end
  action(code, body)
  return reply(200, public(code))
end

-- pc: the sandbox's Partner Center side (entra_error, entra_headers, authenticate_client,
-- issue_refresh_token); svc: the service (clock, random_hex, issue, cfg, base_url); audience: that
-- of the access tokens issued.
function device.new(pc, svc, audience)
  return setmetatable({pc = pc, svc = svc, audience = audience, codes = {}, by_user = {}, order = {}},
                      Device)
end

return device
