-- What the sandbox answers, apart from sockets: `service:handle(request) -> response`.
--
-- request  = {method, path, query (raw), params (decoded query), headers (lower-case name ->
--             value), body, base_url ("http://host:port" the client used)}
-- response = {status, headers, body, delay = seconds to wait first,
--             action = nil | "drop" | "hang" (with hang = seconds) | "shutdown"}

local basexx = require "basexx"
local json = require "partnercustomers.sandbox.json"
local data = require "partnercustomers.sandbox.data"
local faults = require "partnercustomers.sandbox.faults"
local partnercenter = require "partnercustomers.sandbox.partnercenter"

local service = {}

local Service = {}
Service.__index = Service

local ODATA_SCOPE = "partner.customers.read.all"
local V3_SCOPE = "elements.customers.read.all"
local SCOPES = {[ODATA_SCOPE] = true, [V3_SCOPE] = true}
local V3_PATH = "/partner/external/v3/general/customers"
local V3_MAX_PAGE_SIZE = 100
local JSON_TYPE = "application/json; charset=utf-8"

---------------------------------------------------------------------------------------------
-- Encoding helpers

local function url_decode(s)
  s = s:gsub("%+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- "a=1&b=2" -> {{key = "a", value = "1"}, ...}
local function parse_pairs(s)
  local list = {}
  for part in s:gmatch("[^&]+") do
    local key, value = part:match("^([^=]*)=?(.*)$")
    list[#list + 1] = {key = url_decode(key), value = url_decode(value)}
  end
  return list
end

-- Query parameters: the first value of each name wins.
function service.parse_query(query)
  local params = {}
  for _, p in ipairs(parse_pairs(query)) do
    if params[p.key] == nil then params[p.key] = p.value end
  end
  return params
end

-- A form body; a parameter given twice is an error (RFC 6749, section 3.2).
local function parse_form(body)
  local form = {}
  for _, p in ipairs(parse_pairs(body)) do
    if form[p.key] ~= nil then
      return nil, "parameter '" .. p.key .. "' is given more than once"
    end
    form[p.key] = p.value
  end
  return form
end

local function is_form(content_type)
  return content_type ~= nil
    and content_type:lower():match("^%s*application/x%-www%-form%-urlencoded%s*[;]?") ~= nil
end

-- The opaque $skiptoken of /partner/customers is the hex of "skip:<offset>", or of
-- "skip:<offset>:<serial>" (a fresh token for the same offset, made by the stuck_next_link fault).
local function encode_skiptoken(offset, serial)
  local text = "skip:" .. offset .. (serial and ":" .. serial or "")
  return (text:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function decode_skiptoken(token, count)
  if #token > 40 or #token % 2 ~= 0 or not token:match("^%x+$") then return nil end
  local text = token:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  local digits = text:match("^skip:(%d+)$") or text:match("^skip:(%d+):%d+$")
  local offset = math.tointeger(tonumber(digits))
  if offset and offset <= count then return offset end
  return nil
end

---------------------------------------------------------------------------------------------
-- Responses

local function reply(status, value, headers)
  headers = headers or {}
  headers["content-type"] = headers["content-type"] or JSON_TYPE
  return {status = status, headers = headers, body = json.encode(value)}
end

local function oauth_error(code, description)
  return reply(400, {error = code, error_description = description}, {["cache-control"] = "no-store"})
end

local function api_error(status, code, description)
  return reply(status, {error = code, error_description = description})
end

local function unauthorized()
  return reply(401, {error = "invalid_token"}, {["www-authenticate"] = 'Bearer error="invalid_token"'})
end

local function forbidden(scope)
  return reply(403, {error = "insufficient_scope", error_description = "this call needs scope " .. scope},
    {["www-authenticate"] = string.format('Bearer error="insufficient_scope", scope="%s"', scope)})
end

---------------------------------------------------------------------------------------------
-- Tokens

local function bearer_value(headers)
  local auth = headers.authorization
  local scheme, value = (auth or ""):match("^%s*(%S+)%s+(%S+)%s*$")
  if scheme and scheme:lower() == "bearer" then return value end
  return nil
end

-- HTTP Basic client authentication (RFC 6749, section 2.3.1): id and secret, form-encoded.
local function basic_credentials(auth)
  local encoded = (auth or ""):match("^%s*[Bb][Aa][Ss][Ii][Cc]%s+(%S+)%s*$")
  local ok, decoded = pcall(basexx.from_base64, encoded or "")
  local id, secret = (ok and decoded or ""):match("^([^:]*):(.*)$")
  if not id then return nil end
  return url_decode(id), url_decode(secret)
end

-- How a token request authenticates the client (RFC 6749 2.3, RFC 7523 2.2), for both sides'
-- token endpoints: {method = "basic" | "post" | "assertion" | "none", id, secret}, or nil and a
-- message when it uses more than one method (invalid_request).
function service.client_credentials(req, form)
  local basic_id, basic_secret = basic_credentials(req.headers.authorization)
  local has_assertion = form.client_assertion ~= nil or form.client_assertion_type ~= nil
  local methods = (basic_id and 1 or 0) + (form.client_secret and 1 or 0) + (has_assertion and 1 or 0)
  if methods > 1 then
    return nil, "client credentials given more than one way (Basic, client_secret, client_assertion): use one"
  end
  if basic_id then
    if form.client_id and form.client_id ~= basic_id then
      return nil, "client credentials given both in the body and in Basic"
    end
    return {method = "basic", id = basic_id, secret = basic_secret}
  end
  if has_assertion then
    return {method = "assertion", id = form.client_id}
  end
  return {method = form.client_secret and "post" or "none", id = form.client_id, secret = form.client_secret}
end

-- Checks a client assertion against the certificate given with --client-cert; `aud` must be
-- the token endpoint's URL as the client addressed it (Host header, path). Returns the claims,
-- or nil and {check, description}.
function Service:check_assertion(req, form)
  if not self.assertions then
    return nil, {check = "no_certificate", description = "client assertion: the sandbox has no client " ..
      "certificate to check it with (start it with --client-cert FILE)"}
  end
  return self.assertions:check{type = form.client_assertion_type, assertion = form.client_assertion,
    client_id = form.client_id, audience = (req.base_url or self.base_url or "") .. req.path}
end

function Service:token_of(req)
  local value = bearer_value(req.headers)
  return value and self.tokens[value]
end

function Service:issue(scope)
  self.issued = self.issued + 1
  local value = self.random_hex(24)
  self.tokens[value] = {serial = "t" .. self.issued, scope = scope,
                        expires = self.clock() + self.cfg.token_ttl}
  return value
end

---------------------------------------------------------------------------------------------
-- Token introspection (RFC 7662): with `introspection` configured, a bearer token the sandbox did
-- not issue is sent to that endpoint (by the resource server, with HTTP Basic), and accepted when
-- it is active and holds the endpoint's scope. Positive answers are kept until the token's `exp`.

local INTROSPECTION_TIMEOUT = 5 -- seconds for the whole exchange
local INTROSPECTION_MAX_BODY = 64 * 1024
local INTROSPECTION_CACHE_PURGE = 1000 -- expired entries are dropped once the cache holds this many

local function form_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function unavailable(description)
  return reply(503, {error = "introspection_failed", error_description = description})
end

-- Asks the introspection endpoint about the token `value`. Returns {active = boolean, scopes =
-- {name = true}, exp = Unix seconds or nil}, or nil and a message (no secret, no token in it).
function Service:introspect(value)
  local intro = self.introspection
  local credentials = form_encode(intro.client_id) .. ":" .. form_encode(intro.secret)
  local ok, status, body = pcall(intro.post, intro.url, {
    authorization = "Basic " .. basexx.to_base64(credentials),
    ["content-type"] = "application/x-www-form-urlencoded",
    accept = "application/json",
  }, "token=" .. form_encode(value), INTROSPECTION_TIMEOUT)
  if not ok then
    return nil, "token introspection failed: " .. tostring(status)
  elseif not status then
    return nil, "token introspection failed: " .. tostring(body)
  elseif status ~= 200 then
    return nil, "token introspection failed: the endpoint answered HTTP " .. tostring(status)
  elseif #body > INTROSPECTION_MAX_BODY then
    return nil, "token introspection failed: the answer is too large"
  end
  local doc = json.decode(body)
  if type(doc) ~= "table" or type(doc.active) ~= "boolean" then
    return nil, "token introspection failed: the answer has no boolean 'active'"
  end
  local answer = {active = doc.active, scopes = {}}
  if type(doc.scope) == "string" then
    for name in doc.scope:gmatch("%S+") do answer.scopes[name] = true end
  end
  if math.type(doc.exp) == "integer" or (type(doc.exp) == "number" and doc.exp == doc.exp
      and doc.exp < math.huge) then
    answer.exp = doc.exp
  end
  return answer
end

function Service:remember_introspected(value, answer)
  self.introspected_count = self.introspected_count + 1
  if self.introspected_count > INTROSPECTION_CACHE_PURGE then
    local now, n = self.now(), 0
    for v, known in pairs(self.introspected) do
      if not known.revoked and now >= known.exp then self.introspected[v] = nil else n = n + 1 end
    end
    self.introspected_count = n + 1
  end
  self.introspected[value] = answer
end

-- A bearer token the sandbox did not issue, checked by introspection (or by an earlier positive
-- answer). Returns the answer, or nil and the 401/403/503 answer. Notes the outcome in the log.
function Service:authorize_introspected(req, value, scope, rule)
  local entry = req.log_entry or {headers = {}}
  entry.token = "introspected"
  entry.headers.authorization = "Bearer [introspected]"
  local known = self.introspected[value]
  if rule and rule.type == "expire_token" then
    -- refused from now on, whatever the introspection endpoint says
    if not known then self.introspected_count = self.introspected_count + 1 end
    self.introspected[value] = {revoked = true, scopes = {}}
    entry.introspection = known and "cached" or nil
    return nil, unauthorized()
  end
  if known then
    entry.introspection = "cached"
    if known.revoked then return nil, unauthorized() end
    if self.now() >= known.exp then
      self.introspected[value] = nil
      return nil, unauthorized()
    end
  else
    local answer, err = self:introspect(value)
    if not answer then
      entry.introspection = "failed"
      return nil, unavailable(err)
    end
    if not answer.active or (answer.exp and self.now() >= answer.exp) then
      entry.introspection = "inactive"
      return nil, unauthorized()
    end
    entry.introspection = "active"
    if answer.exp then self:remember_introspected(value, answer) end
    known = answer
  end
  if not known.scopes[scope] then
    return nil, forbidden(scope)
  end
  return known
end

-- Returns the token, or nil and the 401/403 answer (503 when introspection fails).
function Service:authorize(req, scope, rule)
  local token = self:token_of(req)
  if not token and self.introspection then
    local value = bearer_value(req.headers)
    if value then return self:authorize_introspected(req, value, scope, rule) end
  end
  if rule and rule.type == "expire_token" then
    -- really expire it, so that a client that keeps using it keeps failing
    if token then token.expires = self.clock() end
    return nil, unauthorized()
  end
  if not token or token.revoked or self.clock() >= token.expires then
    return nil, unauthorized()
  end
  if token.scope ~= scope then
    -- a Partner Center token is no AvePoint token at all; the other AvePoint scope is 403
    if not SCOPES[token.scope] then return nil, unauthorized() end
    return nil, forbidden(scope)
  end
  return token
end

---------------------------------------------------------------------------------------------
-- The log

local secret_params = {client_secret = true, client_assertion = true, refresh_token = true, password = true,
                       device_code = true}

local function redact_form(body)
  return (body:gsub("([^&=]*)=([^&]*)", function(key)
    if secret_params[url_decode(key)] then return key .. "=[redacted]" end
  end))
end

local function describe_authorization(value, token)
  local scheme = (value:match("^%s*(%S+)") or ""):lower()
  if scheme == "bearer" then
    return "Bearer " .. (token and token.serial or "[unknown]")
  elseif scheme == "basic" then
    return "Basic [redacted]"
  end
  return "[redacted]"
end

local function redact_headers(headers, token)
  local out = {}
  for name, value in pairs(headers) do
    if name == "authorization" then
      value = describe_authorization(value, token)
    elseif name == "proxy-authorization" then
      value = "[redacted]"
    end
    out[name] = value
  end
  return out
end

-- Seconds since the sandbox started, millisecond precision (the log's `time` and `answered`).
function Service:elapsed()
  return math.floor((self.clock() - self.started) * 1000 + 0.5) / 1000
end

function Service:record(req, endpoint)
  local token = self:token_of(req)
  local body = req.body
  if req.path == "/connect/token" or partnercenter.is_token_path(req.path)
      or is_form(req.headers["content-type"]) then
    body = redact_form(body)
  end
  local entry = {
    method = req.method, path = req.path, query = req.query,
    headers = redact_headers(req.headers, token), body = body,
    token = token and token.serial, onboard_attempt = endpoint == "onboard",
    time = self:elapsed(),
  }
  self.log[#self.log + 1] = entry
  return entry
end

---------------------------------------------------------------------------------------------
-- AvePoint endpoints

function Service:token_endpoint(req)
  if not is_form(req.headers["content-type"]) then
    return oauth_error("invalid_request", "expected an application/x-www-form-urlencoded body")
  end
  local form, err = parse_form(req.body)
  if not form then
    return oauth_error("invalid_request", err)
  end
  local creds, conflict = service.client_credentials(req, form)
  if not creds then
    return oauth_error("invalid_request", conflict)
  end
  if creds.method == "assertion" then
    local claims, failure = self:check_assertion(req, form)
    if not claims then
      return oauth_error("invalid_client", failure.description)
    end
  elseif creds.id ~= self.cfg.client_id or creds.secret ~= self.cfg.client_secret then
    return oauth_error("invalid_client", "unknown client or wrong client secret")
  end
  if form.grant_type ~= "client_credentials" then
    return oauth_error("unsupported_grant_type", "only client_credentials is supported")
  end
  if not SCOPES[form.scope] then
    return oauth_error("invalid_scope",
      "ask for exactly one scope: " .. ODATA_SCOPE .. " or " .. V3_SCOPE)
  end
  return reply(200, {access_token = self:issue(form.scope), token_type = "Bearer",
                     expires_in = self.cfg.token_ttl},
    {["cache-control"] = "no-store", pragma = "no-cache"})
end

function Service:odata_customers(req, rule)
  local _, denied = self:authorize(req, ODATA_SCOPE, rule)
  if denied then return denied end
  local list = self.customers
  local offset = 0
  if req.params["$skiptoken"] then
    offset = decode_skiptoken(req.params["$skiptoken"], #list)
    if not offset then return api_error(400, "invalid_request", "invalid $skiptoken") end
  end
  local size = self.cfg.odata_page_size
  local value = json.array()
  for i = offset + 1, math.min(offset + size, #list) do
    value[#value + 1] = data.odata_view(list[i])
  end
  local base = req.base_url or self.base_url
  local body = {["@odata.context"] = base .. "/partner/$metadata#Customers", value = value}
  if offset + size < #list then
    body["@odata.nextLink"] = base .. "/partner/customers?$skiptoken=" .. encode_skiptoken(offset + size)
  end
  if rule and rule.type == "next_link" then
    body["@odata.nextLink"] = faults.padded(rule.link, rule.pad)
  elseif rule and rule.type == "stuck_next_link" then
    -- this same page again, under a token never sent before
    self.skip_serial = (self.skip_serial or 0) + 1
    body["@odata.nextLink"] = base .. "/partner/customers?$skiptoken=" .. encode_skiptoken(offset, self.skip_serial)
  end
  return reply(200, body)
end

-- A v3 paging parameter: absent -> default; otherwise a decimal integer in 1..max.
local function page_param(params, name, default, max)
  local raw = params[name]
  if raw == nil then return default end
  local n = #raw <= 9 and raw:match("^%d+$") and math.tointeger(tonumber(raw))
  if n and n >= 1 and n <= (max or math.maxinteger) then return n end
  return nil
end

function Service:v3_page(req, rule, list)
  local index = page_param(req.params, "pageIndex", 1)
  if not index then
    return api_error(400, "invalid_request", "pageIndex must be an integer >= 1")
  end
  local size = page_param(req.params, "pageSize", 100, V3_MAX_PAGE_SIZE)
  if not size then
    return api_error(400, "invalid_request", "pageSize must be an integer from 1 to " .. V3_MAX_PAGE_SIZE)
  end
  local first = (index - 1) * size
  if rule and rule.type == "repeat_page" then first = 0 end
  local page = json.array()
  for i = first + 1, math.min(first + size, #list) do
    page[#page + 1] = data.v3_view(list[i], self.cfg.v3_status)
  end
  local total = #list
  if rule and rule.type == "wrong_total" then total = rule.total end
  if rule and rule.type == "no_total" then total = nil end -- metadata without totalCount
  return reply(200, {data = page, metadata = {pageIndex = index, pageSize = size, totalCount = total}})
end

function Service:v3_get(req, rule)
  local _, denied = self:authorize(req, V3_SCOPE, rule)
  if denied then return denied end
  return self:v3_page(req, rule, self.customers)
end

-- The customers a batch body selects, in the service's order; nil and a message when the
-- body is not understood. No body, `{}` or an empty customerIds select everyone.
function Service:select(body)
  if not body:find("%S") then return self.customers end
  local doc = json.decode(body)
  if type(doc) ~= "table" or doc[1] ~= nil then
    return nil, "the body must be a JSON object"
  end
  local ids = doc.customerIds
  if ids == nil or ids == json.null then return self.customers end
  if type(ids) ~= "table" or (next(ids) ~= nil and ids[1] == nil) then
    return nil, "customerIds must be an array of strings"
  end
  if #ids == 0 then return self.customers end
  local wanted = {}
  for _, id in ipairs(ids) do
    if type(id) ~= "string" then return nil, "customerIds must be an array of strings" end
    wanted[id:lower()] = true
  end
  local out = {}
  for _, c in ipairs(self.customers) do
    if wanted[c.id] then out[#out + 1] = c end
  end
  return out
end

function Service:v3_batch(req, rule)
  local _, denied = self:authorize(req, V3_SCOPE, rule)
  if denied then return denied end
  local list, err = self:select(req.body)
  if not list then return api_error(400, "invalid_request", err) end
  return self:v3_page(req, rule, list)
end

-- A POST to the v3 path without /batch creates a customer in the real service.
function Service:onboard()
  return reply(400, {error = "onboarding_not_supported"})
end

local routes = {
  ["POST /connect/token"] = {endpoint = "token", handler = Service.token_endpoint},
  ["GET /partner/customers"] = {endpoint = "odata", handler = Service.odata_customers},
  ["GET " .. V3_PATH] = {endpoint = "v3", handler = Service.v3_get},
  ["POST " .. V3_PATH .. "/batch"] = {endpoint = "v3", handler = Service.v3_batch},
  ["POST " .. V3_PATH] = {endpoint = "onboard", handler = Service.onboard},
}

local allowed_methods = {
  ["/connect/token"] = "POST", ["/partner/customers"] = "GET",
  [V3_PATH] = "GET, POST", [V3_PATH .. "/batch"] = "POST",
}

local function not_found(req, allow)
  allow = allow or allowed_methods[req.path]
  if allow then
    return reply(405, {error = "method_not_allowed", error_description = "use " .. allow}, {allow = allow})
  end
  return api_error(404, "not_found", "no such endpoint")
end

---------------------------------------------------------------------------------------------
-- Faults that replace the answer

local replacing = {}

function replacing.status(rule)
  local body = rule.body or json.encode{error = "sandbox_fault",
                                        error_description = "fault rule: HTTP " .. rule.status}
  return {status = rule.status, body = body,
          headers = {["content-type"] = rule.content_type or JSON_TYPE, ["retry-after"] = rule.retry_after}}
end

function replacing.html()
  return {status = 200, headers = {["content-type"] = "text/html; charset=utf-8"}, body = faults.html_page}
end

function replacing.drop()
  return {action = "drop"}
end

function replacing.hang(rule)
  return {action = "hang", hang = rule.max}
end

function replacing.large(rule)
  return {status = 200, headers = {["content-type"] = JSON_TYPE}, body = faults.large_body(rule.bytes)}
end

function replacing.gzip_bomb(rule)
  local body, err = faults.gzip_bomb(rule.bytes)
  if not body then return api_error(500, "sandbox_error", err) end
  return {status = 200, headers = {["content-type"] = JSON_TYPE, ["content-encoding"] = "gzip"}, body = body}
end

function Service:answer(req, route, rule)
  local replace = rule and replacing[rule.type]
  if replace then return replace(rule) end
  local res
  if route and route.handler then
    res = route.handler(route.pc and self.pc or self, req, rule)
  else
    res = not_found(req, route and route.allow)
  end
  if rule and rule.type == "malformed" then
    res = {status = 200, headers = {["content-type"] = JSON_TYPE}, body = faults.truncate(res.body)}
  elseif rule and (rule.type == "slow" or rule.type == "no_total") and rule.delay > 0 then
    res.delay = rule.delay
  end
  return res
end

---------------------------------------------------------------------------------------------
-- Admin endpoints (no auth, no log, no faults)

local admin = {}

admin["GET /_sandbox/log"] = function(self)
  return reply(200, self.log)
end

admin["DELETE /_sandbox/log"] = function(self)
  self.log = json.array()
  return reply(200, {cleared = true})
end

admin["GET /_sandbox/faults"] = function(self)
  return reply(200, faults.public(self.rules))
end

admin["PUT /_sandbox/faults"] = function(self, req)
  local rules, err = faults.parse(req.body)
  if not rules then
    return api_error(400, "invalid_rules", err)
  end
  self.rules = rules
  return reply(200, faults.public(rules))
end

admin["POST /_sandbox/revoke"] = function(self)
  local n = 0
  for _, token in pairs(self.tokens) do
    if not token.revoked then n = n + 1 end
    token.revoked = true
  end
  -- tokens accepted through introspection are refused from now on too
  for _, known in pairs(self.introspected) do
    if not known.revoked then n = n + 1 end
    known.revoked = true
  end
  return reply(200, {revoked = n})
end

admin["GET /_sandbox/customers"] = function(self)
  local out = json.array()
  for i, c in ipairs(self.customers) do
    out[i] = data.v3_view(c, "int")
  end
  return reply(200, out)
end

admin["POST /_sandbox/shutdown"] = function()
  local res = reply(200, {shutdown = true})
  res.action = "shutdown"
  return res
end

local function is_admin(path)
  return path == "/_sandbox" or path:sub(1, 10) == "/_sandbox/"
end

---------------------------------------------------------------------------------------------

function Service:handle(req)
  if is_admin(req.path) then
    local key = req.method .. " " .. req.path
    if partnercenter.admin[key] then return partnercenter.admin[key](self.pc, req) end
    local handler = admin[key]
    return handler and handler(self, req) or api_error(404, "not_found", "no such admin endpoint")
  end
  local route = routes[req.method .. " " .. req.path]
  if not route then
    -- the Partner Center and Entra paths (with an id or a tenant in them)
    local pc_route, allow = partnercenter.route(req)
    if pc_route then
      pc_route.pc = true
      route = pc_route
    elseif allow then
      route = {endpoint = "other", allow = allow}
    end
  end
  local endpoint = route and route.endpoint or "other"
  local entry = self:record(req, endpoint)
  req.log_entry = entry
  local rule = faults.take(self.rules, req, endpoint)
  entry.fault = rule and rule.type
  local res = self:answer(req, route, rule)
  if res.status and partnercenter.is_api_path(req.path) then
    self.pc:stamp(req, res)
  end
  entry.status = res.status
  return res
end

-- The form check and the client credentials, for the Partner Center side's token endpoints.
Service.is_form = is_form
Service.client_credentials = service.client_credentials

-- cfg: count, seed, client_id, client_secret, token_ttl, odata_page_size, v3_status, pc_tenant,
-- clock (function -> seconds), random_hex (function(nbytes) -> hex string), base_url, and
-- client_cert (a PEM certificate file: client assertions are accepted, see assertion.lua),
-- approve_devices (device codes start approved),
-- introspection = {url, client_id, secret, post} (tokens the sandbox did not issue are checked
-- there; post(url, headers, body, timeout) -> status, body | nil, message does the HTTP POST and
-- must not block other requests), now (function -> Unix seconds, default os.time; for `exp`).
function service.new(cfg)
  local client_cert = cfg.client_cert
  local svc = setmetatable({
    cfg = cfg,
    clock = cfg.clock,
    random_hex = cfg.random_hex,
    started = cfg.clock(),
    base_url = cfg.base_url,
    customers = data.generate(cfg.count, cfg.seed),
    tokens = {},
    issued = 0,
    introspection = cfg.introspection,
    introspected = {}, -- token value -> {scopes, exp, revoked}: positive introspection answers
    introspected_count = 0,
    now = cfg.now or os.time,
    log = json.array(),
    rules = {},
    -- loaded only when asked for (it needs luaossl's x509 and the openssl command)
    assertions = client_cert and require("partnercustomers.sandbox.assertion").new{
      certificate = client_cert, client_id = cfg.client_id},
  }, Service)
  svc.pc = partnercenter.new(svc)
  return svc
end

return service
