-- The Microsoft Partner Center client: pc.partnercenter{...}.
-- HTTP, retries, tokens (Entra ID: client credentials or a rotating refresh token) and JSON
-- decoding are the core's (partnercustomers.core); this layer builds the requests with the
-- headers Partner Center wants, checks the answers' shape and follows the continuation links.

local core = require "partnercustomers.core"
local pager = require "partnercustomers.pager"
local util = require "partnercustomers.util"

local misuse = util.misuse
local protocol_error, is_object = util.protocol_error, util.is_object

-- Authority (token host) and API host of each cloud (api-docs/FIELD-NOTES.md).
local CLOUDS = {
  global = {
    authority = "https://login.microsoftonline.com",
    base_url = "https://api.partnercenter.microsoft.com",
  },
  usgov = {
    authority = "https://login.microsoftonline.us",
    -- inferred: FIELD-NOTES names no API host for US Government; Microsoft's page of Partner
    -- Center REST URLs lists the worldwide host for it. Override with base_url if it differs.
    base_url = "https://api.partnercenter.microsoft.com",
  },
  china = {
    authority = "https://login.chinacloudapi.cn",
    base_url = "https://partner.partnercenterapi.microsoft.cn",
  },
}

-- What the token is asked for: v2 takes a scope, v1 (the form Partner Center's docs show) a
-- resource. The same audience in every cloud (inferred for usgov and china).
local RESOURCE = "https://api.partnercenter.microsoft.com"
local TOKEN_FORMS = {
  v2 = { path = "/oauth2/v2.0/token", scope = RESOURCE .. "/.default", audience = "scope" },
  v1 = { path = "/oauth2/token", scope = RESOURCE, audience = "resource" },
}

local CUSTOMERS_PATH = "/v1/customers"
local MAX_PAGE_SIZE = 500 -- the largest `size` the service takes (and the sandbox's limit)
-- organizations with a progress function: lookups in windows of this many times `parallel` ids,
-- progress reported as each window returns
local PROGRESS_WINDOW = 8

------------------------------------------------------------------------------------------------
-- Checkers

local GUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local function is_guid(v)
  return type(v) == "string" and v:find(GUID) ~= nil
end

local function guid(v)
  if is_guid(v) then return v end
  return nil, "a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
end

-- The partner's tenant goes into the token URL's path: a GUID or a domain name.
local function tenant(v)
  if type(v) == "string" and v:find("^[%w][%w.%-]*$") and #v <= 253 then return v end
  return nil, 'a tenant id (GUID) or domain name such as "contoso.onmicrosoft.com"'
end

-- X-Locale: a language tag such as "en-US".
local function locale(v)
  if type(v) == "string" and v:find("^%a[%w%-_]*$") and #v <= 35 then return v end
  return nil, 'a locale such as "en-US"'
end

local OPTIONS = util.client_options {
  tenant = tenant,
  client_id = util.string,
  client_secret = util.string,
  refresh_token = util.string,
  on_refresh_token = util.func,
  certificate = util.table,
  client_auth = util.one_of { "post", "basic" }, -- addition: how a client_secret travels
  access_token = util.header_string,
  token = util.func,
  cloud = util.one_of { "global", "usgov", "china" },
  base_url = util.url,
  token_url = util.url,
  locale = locale,
  token_endpoint = util.one_of { "v2", "v1" },
  correlation_id = guid,
}


local CALL_OPTIONS = { correlation_id = guid, deadline = util.deadline }
local ORGANIZATIONS_OPTIONS = {
  correlation_id = guid,
  parallel = util.parallel,
  progress = util.func,
  deadline = util.deadline,
}
local PAGING_OPTIONS = {
  correlation_id = guid,
  page_size = util.number { integer = true, min = 1, max = MAX_PAGE_SIZE },
  max_pages = pager.max_pages,
  deadline = util.deadline,
}

local Partnercenter = { __name = "partnercustomers.partnercenter" }
local methods = {}
Partnercenter.__index = methods

------------------------------------------------------------------------------------------------
-- Construction

-- Which ways to authenticate the options use (names for messages).
local function credential_ways(o)
  local ways = {}
  if o.certificate then
    ways[#ways + 1] = "certificate"
    if o.client_secret then ways[#ways + 1] = "client_secret" end
  end
  if o.refresh_token then
    ways[#ways + 1] = "refresh_token"
  elseif o.client_secret and not o.certificate then
    ways[#ways + 1] = "client_id + client_secret"
  end
  if o.access_token then ways[#ways + 1] = "access_token" end
  if o.token then ways[#ways + 1] = "token" end
  return ways
end

local function check_credentials(o, level)
  local what = "pc.partnercenter"
  local ways = credential_ways(o)
  if o.on_refresh_token and not o.refresh_token then
    misuse(level + 1, "%s: option 'on_refresh_token' needs option 'refresh_token'", what)
  end
  if #ways == 0 then
    if o.client_id then
      misuse(level + 1, "%s: option 'client_id' needs option 'client_secret' (app-only) or "
                        .. "option 'refresh_token' (app+user)", what)
    end
    misuse(level + 1, "%s needs credentials: client_id + client_secret, client_id + certificate, "
                      .. "client_id + refresh_token, access_token or token", what)
  elseif #ways > 1 then
    misuse(level + 1, "%s takes one kind of credentials, got %s", what, table.concat(ways, " and "))
  elseif o.certificate and o.refresh_token then
    misuse(level + 1, "%s takes one kind of credentials, got certificate and refresh_token", what)
  elseif o.certificate and not o.client_id then
    misuse(level + 1, "%s: option 'certificate' needs option 'client_id'", what)
  elseif (o.access_token or o.token) and o.client_id then
    misuse(level + 1, "%s takes one kind of credentials, got client_id and %s", what,
           o.access_token and "access_token" or "token")
  elseif (o.client_secret or o.refresh_token) and not o.client_id then
    misuse(level + 1, "%s: option '%s' needs option 'client_id'", what,
           o.refresh_token and "refresh_token" or "client_secret")
  end
end

-- The token form a token_url names when token_endpoint is not given: Entra v1 (".../oauth2/token",
-- which takes a resource and refuses a v2 scope) or v2 (anything else). util.url has taken the
-- trailing slash off; a path is compared case-insensitively, as Entra does.
local function token_form_of(token_url)
  local path = token_url and util.parse_url(token_url).path:lower()
  if path and path:sub(-#TOKEN_FORMS.v1.path) == TOKEN_FORMS.v1.path then return "v1" end
  return "v2"
end

local function new(opts)
  local o = util.options(opts, OPTIONS, "pc.partnercenter", 2)
  check_credentials(o, 2)

  local cloud = CLOUDS[o.cloud or "global"]
  local form = TOKEN_FORMS[o.token_endpoint or token_form_of(o.token_url)]
  local copts = util.core_options(o)
  if o.client_id then
    if not o.token_url and not o.tenant then
      misuse(2, "pc.partnercenter: option 'tenant' is required with %s (or give option 'token_url')",
             o.refresh_token and "refresh_token" or o.certificate and "certificate" or "client_id + client_secret")
    end
    local certificate -- the core reads its fields and refuses what is wrong, before any request
    if o.certificate then
      certificate = {}
      for k, v in pairs(o.certificate) do certificate[k] = v end
    end
    local cred = {
      token_url = o.token_url or (cloud.authority .. "/" .. o.tenant .. form.path),
      client_id = o.client_id,
      client_secret = o.client_secret,
      certificate = certificate,
      client_auth = (not o.refresh_token) and o.client_auth or nil,
      audience = form.audience,
    }
    if o.refresh_token then
      cred.refresh_token = o.refresh_token
      cred.on_refresh_token = o.on_refresh_token
      copts.refresh_token = cred
    else
      copts.client_credentials = cred
    end
  else
    copts.access_token, copts.token = o.access_token, o.token
  end

  local base = o.base_url or cloud.base_url
  local client = util.new_core(core, copts, 2)
  return setmetatable({
    _client = client,
    _base = base,
    -- a path in base_url (a gateway in front of the service) is kept for continuation links
    _prefix = util.parse_url(base).path,
    _scope = form.scope,
    _locale = o.locale,
    _correlation_id = o.correlation_id or core.uuid(),
    _on_event = o.on_event,
    _max_parallel = o.max_parallel or util.DEFAULT_MAX_PARALLEL,
    _clock = o.clock or core.now, -- for deadlines that span several core calls
    _wait = o.wait, _cooperative = o.cooperative, -- a host's event loop (see util.request)
    _closed = false,
    _calls = util.call_counter(), -- calls running (see util.in_call)
  }, Partnercenter)
end

local function check_open(self, name, level)
  if self._closed then
    misuse(level + 1, "%s: attempt to use a closed Partner Center client", name)
  end
end

local function check_self(self, name, level)
  if getmetatable(self) ~= Partnercenter then
    misuse(level + 1, "%s: call it as mpc:%s(...)", name, name)
  end
  check_open(self, name, level + 1)
end

------------------------------------------------------------------------------------------------
-- Requests and answers

-- One logical call: a fresh MS-RequestId, which the core sends again on every retry of it.
-- `extra`: headers a continuation link asks for (they replace ours of the same name).
local function request(self, url, correlation_id, extra)
  local headers = {
    ["Accept"] = "application/json",
    ["MS-Contract-Version"] = "v1",
    ["MS-RequestId"] = core.uuid(),
    ["MS-CorrelationId"] = correlation_id or self._correlation_id,
    ["X-Locale"] = self._locale,
  }
  if extra then
    for name, value in pairs(extra) do
      for mine in pairs(headers) do
        if mine:lower() == name:lower() then headers[mine] = nil end
      end
      headers[name] = value
    end
  end
  return { method = "GET", url = url, headers = headers, scope = self._scope, decode = true }
end

local function shape_of(v)
  if type(v) == "table" then return util.is_array(v) and "an array" or "an object" end
  return util.got(v):gsub("^got ", "")
end

-- The organization from an answer: the first element of the array; its technicalNotificationMails
-- always an array.
local function organization_of(req, resp)
  local data = resp.data
  if type(data) ~= "table" or not util.is_array(data) then
    return nil, protocol_error(req, resp, "expected a JSON array of organizations (got %s)",
                               shape_of(data))
  end
  local org = data[1]
  if org == nil then
    return nil, protocol_error(req, resp, "the service answered an empty array: no organization")
  elseif not is_object(org) then
    return nil, protocol_error(req, resp, "the organization is %s, not an object", shape_of(org))
  end
  local mails = org.technicalNotificationMails
  if mails == nil then
    org.technicalNotificationMails = {}
  elseif type(mails) ~= "table" or not util.is_array(mails) then
    return nil, protocol_error(req, resp, '"technicalNotificationMails" is not an array')
  else
    for _, m in ipairs(mails) do
      if type(m) ~= "string" then
        return nil, protocol_error(req, resp, '"technicalNotificationMails" holds a non-string')
      end
    end
  end
  return org
end

local function organization_url(self, id)
  return ("%s%s/%s/organization"):format(self._base, CUSTOMERS_PATH, id)
end

------------------------------------------------------------------------------------------------
-- organization, organizations

function methods:organization(id, opts)
  check_self(self, "organization", 2)
  if not is_guid(id) then
    misuse(2, "organization: the customer tenant id must be a GUID (%s)",
           type(id) == "string" and "got a string that is not one" or util.got(id))
  end
  local o = util.options(opts, CALL_OPTIONS, "organization", 2)
  local at = util.deadline_at(self, o.deadline)
  return util.in_call(self, function()
    local req = request(self, organization_url(self, id), o.correlation_id)
    local copts = util.call_options(self, at)
    if not copts then return nil, util.deadline_error(req, "organization") end
    local resp, err = util.request(self, req, copts)
    if not resp then return nil, err end
    return organization_of(req, resp)
  end)
end

-- The ids, checked (all before any request) and without repeats, in order.
local function tenant_ids(ids, level)
  if type(ids) ~= "table" or not util.is_array(ids) then
    misuse(level + 1, "organizations: ids must be an array of customer tenant ids (%s)",
           type(ids) == "table" and "got a table that is not an array" or util.got(ids))
  end
  local list, seen = {}, {}
  for i, id in ipairs(ids) do
    if not is_guid(id) then
      misuse(level + 1, "organizations: ids[%d] must be a customer tenant id, a GUID (%s)", i,
             type(id) == "string" and "got a string that is not one" or util.got(id))
    end
    if not seen[id] then
      seen[id] = true
      list[#list + 1] = id
    end
  end
  return list
end

-- Looks every id of list up; results[id] = organization or errors[id] = err. Without progress,
-- one client:batch of every id: one sliding window of `parallel` transfers, each freed slot
-- refilled at once. With progress, windows of PROGRESS_WINDOW x parallel ids, progress called
-- for each id of a window once it returns (the core's batch cannot report midway).
local function look_up(self, list, o)
  local parallel, progress = o.parallel, o.progress
  local results, errors = {}, {}
  local total, done = #list, 0
  local span = progress and PROGRESS_WINDOW * parallel or math.max(total, 1)
  for first = 1, total, span do
    local last = math.min(first + span - 1, total)
    local reqs = {}
    for i = first, last do
      reqs[#reqs + 1] = request(self, organization_url(self, list[i]), o.correlation_id)
    end
    local copts = util.call_options(self, o.at, math.min(parallel, #reqs))
    local answers
    if copts then
      answers = util.batch(self, reqs, copts)
    else -- the deadline passed between two windows: the rest are not asked
      answers = {}
      for j, req in ipairs(reqs) do answers[j] = { nil, util.deadline_error(req, "organizations") } end
    end
    for j, answer in ipairs(answers) do
      local id = list[first + j - 1]
      local resp, err = answer[1], answer[2]
      local org
      if resp then org, err = organization_of(reqs[j], resp) end
      if org then results[id] = org else errors[id] = err end
      done = done + 1
      if progress then progress(done, total) end
    end
  end
  if progress and total == 0 then progress(0, 0) end
  return results, errors
end

function methods:organizations(ids, opts)
  check_self(self, "organizations", 2)
  local list = tenant_ids(ids, 2)
  local o = util.options(opts, ORGANIZATIONS_OPTIONS, "organizations", 2)
  o.parallel = util.parallel_of(self, o, "organizations", 2)
  o.at = util.deadline_at(self, o.deadline)
  return util.in_call(self, look_up, self, list, o)
end

------------------------------------------------------------------------------------------------
-- customers: GET /v1/customers?size=N, then links.next until it is absent

-- Checks one page; returns {items, req, resp, link = links.next or nil, next_error} for the
-- pager (which checks the link itself), or nil and a protocol error. `next_error` is set when the
-- page is good but links.next has the wrong shape: the listing fails after this page.
local function read_page(req, resp)
  local body = resp.data
  if not is_object(body) then
    return nil, protocol_error(req, resp, "expected a JSON object (got %s)", shape_of(body))
  end
  local items = body.items
  if items == nil then
    items = {}
  elseif type(items) ~= "table" or not util.is_array(items) then
    return nil, protocol_error(req, resp, '"items" is not an array')
  end
  for i, c in ipairs(items) do
    if not is_object(c) then
      return nil, protocol_error(req, resp, "customer %d is not an object", i)
    end
  end
  local page = { items = items, req = req, resp = resp }
  local links, nxt = body.links, nil
  if is_object(links) then nxt = links.next end
  if links ~= nil and not is_object(links) then
    page.next_error = protocol_error(req, resp, '"links" is not an object')
  elseif nxt ~= nil and not is_object(nxt) then
    page.next_error = protocol_error(req, resp, '"links.next" is not an object')
  elseif nxt and nxt.method ~= nil and (type(nxt.method) ~= "string" or nxt.method:upper() ~= "GET") then
    page.next_error = protocol_error(req, resp, '"links.next.method" is not GET')
  elseif nxt then
    page.link = { uri = nxt.uri, headers = nxt.headers }
  end
  return page
end

-- The listing shared by customers (keep_all: every customer is kept in one table anyway) and
-- each_customer: GET /v1/customers?size=N, then links.next until it is absent.
-- Pages one after another: each continuation comes with the page before it.
local function walk(self, o, keep_all, what)
  local first = ("%s%s?size=%d"):format(self._base, CUSTOMERS_PATH, o.page_size or MAX_PAGE_SIZE)
  local at = util.deadline_at(self, o.deadline)
  return pager.new {
    first = pager.link_cursor(first),
    fetch = function(cursor)
      local req = request(self, cursor.url, o.correlation_id, cursor.headers)
      local copts = util.call_options(self, at)
      if not copts then return nil, util.deadline_error(req, what) end
      local resp, err = util.request(self, req, copts)
      if not resp then return nil, err end
      return read_page(req, resp)
    end,
    on_page = function(index, _, fresh)
      if self._on_event then self._on_event { type = "page", page_index = index, count = #fresh } end
    end,
    max_pages = o.max_pages, keep_all = keep_all, noun = "customer",
    link_name = '"links.next.uri"', headers_name = '"links.next.headers"', prefix = self._prefix,
  }
end

function methods:customers(opts)
  check_self(self, "customers", 2)
  return util.in_call(self, pager.collect,
                      walk(self, util.options(opts, PAGING_OPTIONS, "customers", 2), true, "customers"))
end

function methods:each_customer(opts)
  check_self(self, "each_customer", 2)
  local w = walk(self, util.options(opts, PAGING_OPTIONS, "each_customer", 2), false, "each_customer")
  local list, i = {}, 0
  return function()
    check_open(self, "each_customer", 2)
    i = i + 1
    while list[i] == nil do
      local items, err = util.in_call(self, w.next, w)
      if items == nil then
        if err ~= nil then error(err, 0) end -- io.lines style: the error object itself
        return nil
      end
      list, i = items, 1
    end
    return list[i]
  end
end

function methods:close()
  if getmetatable(self) ~= Partnercenter then misuse(2, "close: call it as mpc:close()") end
  util.close(self, "Partner Center", 2)
end

Partnercenter.__close = function(self) self:close() end
-- collected without a close: the host forgets the descriptor before the core's collector closes it
Partnercenter.__gc = util.forget_descriptor

return { new = new, is_guid = is_guid, tenant = tenant, CLOUDS = CLOUDS, RESOURCE = RESOURCE }
