-- The sandbox's Microsoft side: Entra ID-style token endpoints (v1 and v2, client_credentials and
-- refresh_token with rotation) and the Partner Center customer endpoints, over the tenants of the
-- generated AvePoint customers. See README.md beside this file for what a client may rely on.
--
-- The service (service.lua) owns the sockets-free request handling, the access-token store, the log
-- and the faults; it creates one `PartnerCenter` object, routes to it and passes itself in.

local basexx = require "basexx"
local json = require "partnercustomers.sandbox.json"
local data = require "partnercustomers.sandbox.data"
local faults = require "partnercustomers.sandbox.faults"
local device = require "partnercustomers.sandbox.device"

local partnercenter = {}

local PartnerCenter = {__name = "partnercustomers.sandbox.partnercenter"}
PartnerCenter.__index = PartnerCenter

-- The audience every Partner Center access token carries (the token store's `scope`).
partnercenter.AUDIENCE = "https://api.partnercenter.microsoft.com"
local SCOPE_V2 = partnercenter.AUDIENCE .. "/.default"
-- scopes a refresh_token grant may add to the .default one (as MSAL does)
local EXTRA_USER_SCOPES = {offline_access = true, openid = true, profile = true}
local RESOURCES_V1 = {[partnercenter.AUDIENCE] = true, [partnercenter.AUDIENCE .. "/"] = true}
local GRANTS = {client_credentials = true, refresh_token = true, [device.GRANT] = true}

local LIST_PATH = "/v1/customers"
local ORG_PATH = "^/v1/customers/([^/]+)/organization$"
local TOKEN_V1 = "^/([^/]+)/oauth2/token$"
local TOKEN_V2 = "^/([^/]+)/oauth2/v2%.0/token$"
local DEFAULT_PAGE, MAX_PAGE = 200, 500
local CONTINUATION = "MS-ContinuationToken"
local GUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local JSON_TYPE = "application/json; charset=utf-8"

-- Partner Center error codes the sandbox answers (some numbers, some strings, as the live service).
local CODES = {
  bad_customer_id = 2001, bad_size = 2002, bad_continuation = 2003,
  no_gdap = 3000, unknown_customer = "600008",
  invalid_token = "900401", wrong_audience = "900420",
}

---------------------------------------------------------------------------------------------
-- Small helpers

local function reply(status, value, headers)
  headers = headers or {}
  headers["content-type"] = headers["content-type"] or JSON_TYPE
  return {status = status, headers = headers, body = json.encode(value)}
end

local function url_decode(s)
  return (s:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function hex_to_bytes(hex)
  return (hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

function PartnerCenter:uuid()
  local h = self.svc.random_hex(16)
  local k = tonumber(h:sub(17, 17), 16) % 4 + 1
  return table.concat{h:sub(1, 8), "-", h:sub(9, 12), "-4", h:sub(14, 16), "-",
                      ("89ab"):sub(k, k), h:sub(18, 20), "-", h:sub(21, 32)}
end

-- A header value worth echoing: printable ASCII of sane length (else the sandbox makes its own).
local function echoable(value)
  if value and #value >= 1 and #value <= 256 and value:match("^[\32-\126]+$") then return value end
  return nil
end

---------------------------------------------------------------------------------------------
-- Paths

function partnercenter.is_token_path(path)
  return path:match(TOKEN_V2) ~= nil or path:match(TOKEN_V1) ~= nil or path:match(device.PATH) ~= nil
end

-- Partner Center API paths: their answers carry MS-RequestId, MS-CorrelationId and MS-CV.
function partnercenter.is_api_path(path)
  return path == "/v1" or path:sub(1, 4) == "/v1/"
end

-- The route of a request: {endpoint, handler = function(pc, req, rule)}, or nil and the
-- methods the path allows (for a 405) when the path is ours but the method is not.
function partnercenter.route(req)
  local path, method = req.path, req.method
  local v2_tenant, v1_tenant = path:match(TOKEN_V2), path:match(TOKEN_V1)
  local tenant = v2_tenant or v1_tenant
  if tenant then
    if method ~= "POST" then return nil, "POST" end
    local version = v2_tenant and 2 or 1
    return {endpoint = "pc_token",
            handler = function(pc, r) return pc:token_endpoint(r, version, url_decode(tenant)) end}
  end
  if path == device.PAGE then
    if method ~= "GET" then return nil, "GET" end
    return {endpoint = "other", handler = function(pc, r) return pc.device:page(r) end}
  end
  local device_tenant = path:match(device.PATH)
  if device_tenant then
    if method ~= "POST" then return nil, "POST" end
    return {endpoint = "pc_devicecode",
            handler = function(pc, r) return pc:devicecode_endpoint(r, url_decode(device_tenant)) end}
  end
  if path == LIST_PATH then
    if method ~= "GET" then return nil, "GET" end
    return {endpoint = "pc_list", handler = PartnerCenter.customers}
  end
  local id = path:match(ORG_PATH)
  if id then
    if method ~= "GET" then return nil, "GET" end
    return {endpoint = "pc_org",
            handler = function(pc, r, rule) return pc:organization(r, rule, url_decode(id)) end}
  end
  return nil
end

---------------------------------------------------------------------------------------------
-- Entra ID token endpoints

-- An error in Entra's shape. `correlation_id` is the client-request-id the client sent, else new.
function PartnerCenter:entra_error(req, status, code, aadsts, text)
  local trace = self:uuid()
  local correlation = echoable(req.headers["client-request-id"]) or self:uuid()
  local timestamp = os.date("!%Y-%m-%d %H:%M:%SZ")
  local description = string.format("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s",
    aadsts, text, trace, correlation, timestamp)
  return reply(status, {
    error = code, error_description = description, error_codes = json.array{aadsts},
    timestamp = timestamp, trace_id = trace, correlation_id = correlation,
    error_uri = (req.base_url or self.svc.base_url or "") .. "/error?code=" .. aadsts,
  }, self:entra_headers(req, trace))
end

function PartnerCenter:entra_headers(req, trace)
  return {["cache-control"] = "no-store, no-cache", pragma = "no-cache",
          ["x-ms-request-id"] = trace or self:uuid(),
          ["client-request-id"] = echoable(req.headers["client-request-id"])}
end

local function missing(pc, req, name)
  return pc:entra_error(req, 400, "invalid_request", 900144,
    "The request body must contain the following parameter: '" .. name .. "'.")
end

-- "a=1&b=2" -> form; a parameter given twice -> nil and its name. A body that is not a form
-- reads as an empty one (Entra then misses grant_type).
local function read_form(body, is_form)
  local form = {}
  if not is_form then return form end
  for part in body:gmatch("[^&]+") do
    local key, value = part:match("^([^=]*)=?(.*)$")
    key, value = url_decode(key), url_decode(value)
    if form[key] ~= nil then return nil, key end
    form[key] = value
  end
  return form
end

-- Checks the audience parameter; returns nil when acceptable, else the error answer.
function PartnerCenter:check_audience(req, form, version)
  if version == 2 then
    if form.resource then
      return self:entra_error(req, 400, "invalid_request", 901002,
        "The 'resource' request parameter is not supported.")
    end
    local wanted, ok = 0, true
    for word in (form.scope or ""):gmatch("%S+") do
      if word == SCOPE_V2 then
        wanted = wanted + 1
      elseif not (form.grant_type == "refresh_token" and EXTRA_USER_SCOPES[word]) then
        ok = false
      end
    end
    if ok and wanted == 1 then return nil end
    return self:entra_error(req, 400, "invalid_scope", 70011,
      "The provided request must include a 'scope' input parameter. The provided value for the " ..
      "input parameter 'scope' is not valid: ask for " .. SCOPE_V2 .. ".")
  end
  if RESOURCES_V1[form.resource or ""] then return nil end
  return self:entra_error(req, 400, "invalid_scope", 70011,
    "The provided value for the input parameter 'resource' is not valid: ask for " ..
    partnercenter.AUDIENCE .. ".")
end

function PartnerCenter:issue_refresh_token()
  self.refresh_issued = self.refresh_issued + 1
  local value = "0.A" .. self.svc.random_hex(40)
  self.refresh_tokens[value] = {serial = "r" .. self.refresh_issued, state = "valid"}
  return value
end

-- The AADSTS code of each failed client assertion check (the sandbox's choice, after Entra's:
-- 50027 invalid JWT, 700027 signature or key, 700021 application id, 700023 audience, 700024 time range).
local ASSERTION_CODES = {
  type = 50027, malformed = 50027, typ = 50027, alg = 700027, key = 700027, signature = 700027,
  no_certificate = 700027, issuer = 700021, client_id = 700021, audience = 700023,
  expired = 700024, not_yet_valid = 700024, lifetime = 700024, jti = 50027, replay = 700027,
}

-- Client authentication: a secret (in the body or HTTP Basic) or a client assertion (when the
-- sandbox has a certificate). Returns nil when the client is authenticated, else the error answer.
function PartnerCenter:authenticate_client(req, form)
  local svc = self.svc
  local creds, conflict = svc.client_credentials(req, form)
  if not creds then
    return self:entra_error(req, 400, "invalid_request", 900144, "Invalid client authentication: " .. conflict .. ".")
  end
  if creds.method == "assertion" then
    local claims, failure = svc:check_assertion(req, form)
    if claims then return nil end
    return self:entra_error(req, 401, "invalid_client", ASSERTION_CODES[failure.check] or 700027,
      failure.description .. ".")
  end
  if not creds.id then return missing(self, req, "client_id") end
  if creds.id ~= svc.cfg.client_id then
    return self:entra_error(req, 400, "unauthorized_client", 700016,
      "Application with identifier '" .. creds.id .. "' was not found in the directory '" ..
      self.tenant .. "'.")
  end
  if creds.secret == nil and form.grant_type == "client_credentials" then
    return self:entra_error(req, 401, "invalid_client", 7000218,
      "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
  elseif creds.secret ~= nil and creds.secret ~= svc.cfg.client_secret then
    return self:entra_error(req, 401, "invalid_client", 7000215,
      "Invalid client secret provided. Ensure the secret being sent in the request is the client " ..
      "secret value, not the client secret ID, for a secret added to app '" .. svc.cfg.client_id .. "'.")
  end
  return nil
end

-- The checks every Entra endpoint of the tenant makes first: the tenant, then the form. Returns
-- the form, or nil and the error answer.
function PartnerCenter:tenant_form(req, tenant)
  if tenant:lower() ~= self.tenant:lower() then
    return nil, self:entra_error(req, 400, "invalid_request", 90002,
      "Tenant '" .. tenant .. "' not found. Check that the tenant name or id is right.")
  end
  local form, twice = read_form(req.body, self.svc.is_form(req.headers["content-type"]))
  if not form then
    return nil, self:entra_error(req, 400, "invalid_request", 900144,
      "The request body must contain the parameter '" .. twice .. "' once only.")
  end
  return form
end

-- POST /{tenant}/oauth2/token (version 1) and /{tenant}/oauth2/v2.0/token (version 2).
-- Checked in this order: tenant, form, grant_type, client authentication (client_id and secret, or the
-- client assertion), audience, refresh token.
function PartnerCenter:token_endpoint(req, version, tenant)
  local form, refused = self:tenant_form(req, tenant)
  if not form then return refused end
  if not form.grant_type then return missing(self, req, "grant_type") end
  if not GRANTS[form.grant_type] then
    return self:entra_error(req, 400, "unsupported_grant_type", 70003,
      "The app requested an unsupported grant type '" .. form.grant_type .. "'.")
  end
  local denied = self:authenticate_client(req, form)
  if denied then return denied end
  if form.grant_type == device.GRANT then return self.device:redeem(req, form, version) end
  local bad_audience = self:check_audience(req, form, version)
  if bad_audience then return bad_audience end
  local redeemed
  if form.grant_type == "refresh_token" then
    if not form.refresh_token or form.refresh_token == "" then return missing(self, req, "refresh_token") end
    redeemed = self.refresh_tokens[form.refresh_token]
    if not redeemed or redeemed.state ~= "valid" then
      return self:entra_error(req, 400, "invalid_grant", 70008,
        "The provided authorization code or refresh token has expired due to inactivity, was " ..
        "already redeemed or was revoked. Send a new interactive authorization request for this user and resource.")
    end
    redeemed.state = "used"
  end
  local ttl = self.svc.cfg.token_ttl
  local now = os.time()
  local body = {token_type = "Bearer", access_token = self.svc:issue(partnercenter.AUDIENCE)}
  if redeemed then
    body.refresh_token = self:issue_refresh_token()
  end
  if version == 2 then
    body.expires_in, body.ext_expires_in = ttl, ttl
    if redeemed then body.scope = partnercenter.AUDIENCE .. "/user_impersonation" end
  else
    -- the v1 endpoint sends its numbers as strings
    body.expires_in, body.ext_expires_in = tostring(ttl), tostring(ttl)
    body.expires_on, body.not_before = tostring(now + ttl), tostring(now)
    body.resource = partnercenter.AUDIENCE
    if redeemed then body.scope = "user_impersonation" end
  end
  return reply(200, body, self:entra_headers(req))
end

-- POST /{tenant}/oauth2/v2.0/devicecode (device.lua): tenant and form checked as on the token
-- endpoint.
function PartnerCenter:devicecode_endpoint(req, tenant)
  local form, refused = self:tenant_form(req, tenant)
  if not form then return refused end
  return self.device:authorize(req, tenant, form)
end

---------------------------------------------------------------------------------------------
-- Partner Center API

local function pc_error(status, code, description, headers)
  return reply(status, {code = code, description = description, data = json.array(), source = "PartnerFD"},
    headers)
end

local function unauthorized(code, description)
  return pc_error(401, code, description, {["www-authenticate"] = 'Bearer error="invalid_token"'})
end

-- Returns the token, or nil and the 401 answer.
function PartnerCenter:authorize(req, rule)
  local svc = self.svc
  local token = svc:token_of(req)
  if rule and rule.type == "expire_token" then
    if token then token.expires = svc.clock() end
    return nil, unauthorized(CODES.invalid_token, "Unauthorized: the access token has expired.")
  end
  if not token or token.revoked or svc.clock() >= token.expires then
    return nil, unauthorized(CODES.invalid_token, "Unauthorized: the access token is missing, invalid or expired.")
  end
  if token.scope ~= partnercenter.AUDIENCE then
    return nil, unauthorized(CODES.wrong_audience,
      "Unauthorized: the token's audience is not " .. partnercenter.AUDIENCE .. ".")
  end
  return token
end

-- GET /v1/customers/{customer-tenant-id}/organization
function PartnerCenter:organization(req, rule, id)
  local _, denied = self:authorize(req, rule)
  if denied then return denied end
  if not id:match(GUID) then
    return pc_error(400, CODES.bad_customer_id, "The customer tenant id '" .. id .. "' is not a GUID.")
  end
  local tenant = self.by_id[id:lower()]
  if not tenant then
    return pc_error(404, CODES.unknown_customer, "Customer " .. id:lower() .. " was not found for this partner.")
  end
  if tenant.status == 403 then
    return pc_error(403, CODES.no_gdap, "Forbidden: the partner has no GDAP role (Global Administrator, " ..
      "Directory Writer or Global Reader) on customer " .. tenant.id .. ".")
  end
  return reply(200, json.array{tenant.organization})
end

-- The continuation token: base64 of "pc-continuation:<this sandbox's nonce>:<offset>", or with
-- ":<serial>" added (a fresh token for the same offset, made by the pc_stuck fault). Retries may
-- send one again; a token of another sandbox run or a made-up one is refused.
function PartnerCenter:continuation_token(offset, serial)
  return basexx.to_base64("pc-continuation:" .. self.nonce .. ":" .. offset .. (serial and ":" .. serial or ""))
end

function PartnerCenter:offset_of(token)
  if #token > 200 then return nil end
  local text = basexx.from_base64(token) or ""
  local nonce, offset = text:match("^pc%-continuation:(%x+):(%d+)$")
  if not nonce then nonce, offset = text:match("^pc%-continuation:(%x+):(%d+):%d+$") end
  offset = offset and #offset <= 9 and math.tointeger(tonumber(offset))
  if nonce == self.nonce and offset and offset <= #self.tenants then return offset end
  return nil
end

local function customer_item(t)
  return {
    id = t.id,
    companyProfile = {tenantId = t.id, domain = t.domain, companyName = t.company_name,
                      attributes = {objectType = "CustomerCompanyProfile"}},
    relationshipToPartner = "reseller",
    links = {self = {uri = "/customers/" .. t.id, method = "GET", headers = json.array()}},
    attributes = {objectType = "Customer"},
  }
end

-- GET /v1/customers?size=N. A request without MS-ContinuationToken is a first page.
function PartnerCenter:customers(req, rule)
  local _, denied = self:authorize(req, rule)
  if denied then return denied end
  local size = DEFAULT_PAGE
  local raw = req.params.size
  if raw ~= nil then
    size = #raw <= 4 and raw:match("^%d+$") and math.tointeger(tonumber(raw))
    if not size or size < 1 or size > MAX_PAGE then
      return pc_error(400, CODES.bad_size, "size must be an integer from 1 to " .. MAX_PAGE .. ".")
    end
  end
  local token = req.headers[CONTINUATION:lower()]
  local offset = 0
  if token then
    offset = self:offset_of(token)
    if not offset then
      return pc_error(400, CODES.bad_continuation, "The continuation token is invalid or stale.")
    end
  end
  local items = json.array()
  for i = offset + 1, math.min(offset + size, #self.tenants) do
    items[#items + 1] = customer_item(self.tenants[i])
  end
  local uri = LIST_PATH .. "?size=" .. size
  local links = {self = {uri = uri, method = "GET", headers = json.array()}}
  local next_offset = offset + size < #self.tenants and offset + size
  local serial
  if rule and rule.type == "pc_next" then
    -- on the last page the added link leads to this same page again
    uri, next_offset = faults.padded(rule.uri, rule.pad), next_offset or offset
  elseif rule and rule.type == "pc_stuck" then
    -- this same page again, under a token never sent before
    self.serial = (self.serial or 0) + 1
    next_offset, serial = offset, self.serial
  end
  if next_offset then
    links.next = {uri = uri, method = "GET",
                  headers = json.array{{key = CONTINUATION, value = self:continuation_token(next_offset, serial)}}}
  end
  return reply(200, {totalCount = #items, items = items, links = links,
                     attributes = {objectType = "Collection"}})
end

-- Adds MS-RequestId and MS-CorrelationId (echoed, else new) and MS-CV to a /v1 answer.
function PartnerCenter:stamp(req, res)
  res.headers = res.headers or {}
  local h = res.headers
  h["ms-requestid"] = echoable(req.headers["ms-requestid"]) or self:uuid()
  h["ms-correlationid"] = echoable(req.headers["ms-correlationid"]) or self:uuid()
  local cv = echoable(req.headers["ms-cv"])
  if not cv then
    cv = basexx.to_base64(hex_to_bytes(self.svc.random_hex(12)))
  end
  h["ms-cv"] = cv .. ".0"
end

---------------------------------------------------------------------------------------------
-- Admin endpoints (merged into the service's; no auth, no log, no faults)

partnercenter.admin = {}

partnercenter.admin["POST /_sandbox/refresh-token"] = function(pc)
  return reply(200, {refresh_token = pc:issue_refresh_token()})
end

partnercenter.admin["POST /_sandbox/revoke-refresh-tokens"] = function(pc)
  local n = 0
  for _, rt in pairs(pc.refresh_tokens) do
    if rt.state == "valid" then
      n = n + 1
      rt.state = "revoked"
    end
  end
  return reply(200, {revoked = n})
end

partnercenter.admin["GET /_sandbox/pc/organizations"] = function(pc)
  local out = {}
  for _, t in ipairs(pc.tenants) do
    out[t.id] = {status = t.status, organization = t.status == 200 and t.organization or nil}
  end
  return reply(200, out)
end

for key, handler in pairs(device.admin) do
  partnercenter.admin[key] = function(pc, req) return handler(pc.device, req) end
end

---------------------------------------------------------------------------------------------

-- svc: the service (for cfg, base_url, clock, random_hex, issue, token_of, is_form, client_credentials,
-- check_assertion).
function partnercenter.new(svc)
  local tenants = data.pc_tenants(svc.customers, svc.cfg.seed)
  local by_id = {}
  for _, t in ipairs(tenants) do by_id[t.id] = t end
  local pc = setmetatable({
    svc = svc,
    tenant = svc.cfg.pc_tenant or "sandbox-partner.onmicrosoft.com",
    tenants = tenants,
    by_id = by_id,
    refresh_tokens = {},
    refresh_issued = 0,
    nonce = svc.random_hex(4),
  }, PartnerCenter)
  pc.device = device.new(pc, svc, partnercenter.AUDIENCE)
  return pc
end

return partnercenter
