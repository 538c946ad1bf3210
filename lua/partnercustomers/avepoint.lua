-- The AvePoint Graph API client: pc.avepoint{...}.
-- HTTP, retries, tokens and JSON decoding are the core's (partnercustomers.core); this layer builds
-- the requests, checks the answers' shape, normalises customers and walks the pages.

local core = require "partnercustomers.core"
local job_status = require "partnercustomers.job_status"
local pager = require "partnercustomers.pager"
local util = require "partnercustomers.util"

local misuse = util.misuse
local protocol_error, is_object = util.protocol_error, util.is_object

local ENVIRONMENTS = {
  commercial = {
    token_url = "https://identity.avepointonlineservices.com/connect/token",
    base_url = "https://graph.avepointonlineservices.com",
  },
  gov = {
    token_url = "https://identity-gov.avepointonlineservices.com/connect/token",
    base_url = "https://graph-gov.avepointonlineservices.com",
  },
  aos2 = {
    token_url = "https://identity-aos2.avepointonlineservices.com/connect/token",
    base_url = "https://graph-aos2.avepointonlineservices.com",
  },
  fedramp = {
    token_url = "https://identity.online15.net/connect/token",
    base_url = "https://graphusgovapi.online15.net",
  },
}

local SCOPE_PARTNER = "partner.customers.read.all"
local SCOPE_V3 = "elements.customers.read.all"
local PARTNER_PATH = "/partner/customers"
local V3_PATH = "/partner/external/v3/general/customers"
local MAX_PAGE_SIZE = 100

local OPTIONS = util.client_options {
  client_id = util.string,
  client_secret = util.string,
  certificate = util.table,
  -- addition: how a client_secret is sent, in the form body ("post", the vendors' way) or as HTTP Basic
  client_auth = util.one_of { "post", "basic" },
  access_token = util.header_string,
  token = util.func,
  environment = util.one_of { "commercial", "gov", "aos2", "fedramp" },
  base_url = util.url,
  token_url = util.url,
  -- addition: the default v3 call of this client's methods
  v3 = util.one_of { "get", "batch" },
}


local page_size = util.number { integer = true, min = 1, max = MAX_PAGE_SIZE }
local page_index = util.number { integer = true, min = 1, max = math.maxinteger,
                                 expected = "a positive integer" }
local V3_OPTIONS = {
  customer_ids = util.string_array,
  v3 = OPTIONS.v3,
}
local LIST_OPTIONS = {
  max_pages = pager.max_pages,
}
local PAGING_OPTIONS = {
  customer_ids = util.string_array,
  v3 = OPTIONS.v3,
  page_size = page_size,
  max_pages = pager.max_pages,
}
local ALL_OPTIONS = {
  customer_ids = util.string_array,
  v3 = OPTIONS.v3,
  page_size = page_size,
  max_pages = pager.max_pages,
  parallel = util.number { integer = true, min = 1, max = 64 },
  progress = util.func,
}

local Avepoint = { __name = "partnercustomers.avepoint" }
local methods = {}
Avepoint.__index = methods

------------------------------------------------------------------------------------------------
-- Construction

-- Which of the four ways to authenticate the options use (names for messages).
local function credential_ways(o)
  local ways = {}
  if o.certificate then
    ways[#ways + 1] = "certificate"
    if o.client_secret then ways[#ways + 1] = "client_secret" end
  elseif o.client_id or o.client_secret then
    ways[#ways + 1] = o.client_id and o.client_secret and "client_id + client_secret"
                      or o.client_id and "client_id" or "client_secret"
  end
  if o.access_token then ways[#ways + 1] = "access_token" end
  if o.token then ways[#ways + 1] = "token" end
  return ways
end

local function new(opts)
  local o = util.options(opts, OPTIONS, "pc.avepoint", 2)

  local ways = credential_ways(o)
  if #ways == 0 then
    misuse(2, "pc.avepoint needs credentials: client_id + client_secret, certificate, "
              .. "access_token or token")
  elseif #ways > 1 then
    misuse(2, "pc.avepoint takes one kind of credentials, got %s", table.concat(ways, " and "))
  elseif o.certificate and not o.client_id then
    misuse(2, "pc.avepoint: option 'certificate' needs option 'client_id'")
  elseif o.client_id and not (o.client_secret or o.certificate) then
    misuse(2, "pc.avepoint: option 'client_id' needs option 'client_secret'")
  elseif o.client_secret and not o.client_id then
    misuse(2, "pc.avepoint: option 'client_secret' needs option 'client_id'")
  end

  local env = ENVIRONMENTS[o.environment or "commercial"]
  local copts = util.core_options(o)
  if o.client_secret or o.certificate then
    -- the core reads the certificate's fields and refuses what is wrong, before any request
    local certificate
    if o.certificate then
      certificate = {}
      for k, v in pairs(o.certificate) do certificate[k] = v end
    end
    copts.client_credentials = {
      token_url = o.token_url or env.token_url,
      client_id = o.client_id,
      client_secret = o.client_secret,
      certificate = certificate,
      client_auth = o.client_auth,
    }
  else
    copts.access_token, copts.token = o.access_token, o.token
  end

  local client = util.new_core(core, copts, 2)
  local base = o.base_url or env.base_url
  return setmetatable({
    _client = client,
    _base = base,
    -- a path in base_url (a gateway in front of the service) is kept for next links
    _prefix = util.parse_url(base).path,
    _on_event = o.on_event,
    _v3 = o.v3 or "get",
    _closed = false,
    _calls = 0, -- calls running (see util.in_call)
  }, Avepoint)
end

local function check_open(self, name, level)
  if self._closed then
    misuse(level + 1, "%s: attempt to use a closed AvePoint client", name)
  end
end

local function check_self(self, name, level)
  if getmetatable(self) ~= Avepoint then
    misuse(level + 1, "%s: call it as ave:%s(...)", name, name)
  end
  check_open(self, name, level + 1)
end

------------------------------------------------------------------------------------------------
-- Answers

-- Moves t.Id (any case) to t.id when t.id is absent.
local function lower_key(t, key)
  if t[key] ~= nil then return end
  for k, v in pairs(t) do
    if type(k) == "string" and k:lower() == key then
      t[k] = nil
      t[key] = v
      return -- t[key] is new, so the traversal must stop here
    end
  end
end

-- Normalises customer c in place (see API.md); returns nil and a reason when it has the wrong shape.
local function normalise(c, v3)
  if not is_object(c) then return nil, "is not an object" end
  local code = c.jobStatus ~= nil and job_status.code(c.jobStatus)
  if code then
    c.jobStatus, c.jobStatusCode = job_status.labels[code], code
  else
    c.jobStatusCode = nil -- an unknown status keeps its raw value and has no code
  end
  c.managementMode = util.to_integer(c.managementMode) or c.managementMode

  local tenants = c.tenants
  if tenants == nil then
    if v3 then c.tenants = {} end
  elseif type(tenants) ~= "table" or not util.is_array(tenants) then
    return nil, "has tenants that are not an array"
  else
    for _, t in ipairs(tenants) do
      if not is_object(t) then return nil, "has a tenant that is not an object" end
      lower_key(t, "id")
      lower_key(t, "name")
    end
  end
  return c
end

-- Checks that body[field] is an array of customers (absent = empty) and normalises them.
local function customers_of(body, field, v3, req, resp)
  if not is_object(body) then
    return nil, protocol_error(req, resp, "expected a JSON object (%s)",
                               type(body) == "table" and "got an array" or util.got(body))
  end
  local list = body[field]
  if list == nil then return {} end
  if type(list) ~= "table" or not util.is_array(list) then
    return nil, protocol_error(req, resp, '"%s" is not an array', field)
  end
  for i, c in ipairs(list) do
    local ok, why = normalise(c, v3)
    if not ok then return nil, protocol_error(req, resp, "customer %d %s", i, why) end
  end
  return list
end

local function emit_page(self, page)
  local hook = self._on_event
  if hook then
    hook { type = "page", page_index = page.page_index, count = #page.customers,
           total_count = page.total_count }
  end
end

------------------------------------------------------------------------------------------------
-- /partner/customers

-- One page of the OData listing, for the pager.
local function odata_page(self, cursor)
  local req = { method = "GET", url = cursor.url, scope = SCOPE_PARTNER,
                headers = { Accept = "application/json" }, decode = true }
  local resp, err = self._client:request(req)
  if not resp then return nil, err end
  local list, perr = customers_of(resp.data, "value", false, req, resp)
  if not list then return nil, perr end
  local link = resp.data["@odata.nextLink"]
  return { items = list, req = req, resp = resp, link = link ~= nil and { uri = link } or nil }
end

function methods:customers(opts)
  check_self(self, "customers", 2)
  local o = util.options(opts, LIST_OPTIONS, "customers", 2)
  return util.in_call(self, pager.collect, pager.new {
    first = pager.link_cursor(self._base .. PARTNER_PATH),
    fetch = function(cursor) return odata_page(self, cursor) end,
    on_page = function(index, _, fresh)
      emit_page(self, { page_index = index, customers = fresh })
    end,
    max_pages = o.max_pages, keep_all = true, noun = "customer",
    link_name = "@odata.nextLink", prefix = self._prefix,
  })
end

------------------------------------------------------------------------------------------------
-- v3

local function v3_request(self, index, size, v3, ids)
  local query = ("?pageIndex=%d&pageSize=%d"):format(index, size)
  local headers = { Accept = "application/json" }
  if v3 == "batch" then
    -- A POST to V3_PATH itself onboards a customer: the only POST this module makes is here,
    -- always to /batch.
    headers["Content-Type"] = "application/json"
    return { method = "POST", url = self._base .. V3_PATH .. "/batch" .. query, headers = headers,
             body = ids and util.json_encode { customerIds = ids } or "{}",
             scope = SCOPE_V3, decode = true }
  end
  return { method = "GET", url = self._base .. V3_PATH .. query, headers = headers,
           scope = SCOPE_V3, decode = true }
end

-- Fetches one page. Returns the page and, for the pager, {req, resp, size = the page size in
-- effect}, or nil, err.
local function fetch_page(self, index, size, o)
  local req = v3_request(self, index, size, o.v3, o.customer_ids)
  local resp, err = self._client:request(req)
  if not resp then return nil, err end
  local list, perr = customers_of(resp.data, "data", true, req, resp)
  if not list then return nil, perr end

  local meta, total = resp.data.metadata, nil
  if meta ~= nil and not is_object(meta) then
    return nil, protocol_error(req, resp, '"metadata" is not an object')
  end
  meta = meta or {}
  if meta.totalCount ~= nil then
    total = util.to_integer(meta.totalCount)
    if not total or total < 0 then
      return nil, protocol_error(req, resp, '"metadata.totalCount" is not a count')
    end
  end
  -- A service that caps the page size below the one asked for says so in metadata.pageSize;
  -- a page of that size is then full, not short.
  local effective = util.to_integer(meta.pageSize)
  if not effective or effective < 1 or effective > size then effective = size end

  local page = { customers = list, page_index = index, page_size = size, total_count = total }
  return page, { req = req, resp = resp, size = effective }
end

-- Resolves the v3 call and checks customer_ids against it.
local function v3_options(self, opts, spec, what, level)
  local o = util.options(opts, spec, what, level + 1)
  o.v3 = o.v3 or self._v3
  if o.customer_ids and o.v3 ~= "batch" then
    misuse(level + 1, '%s: option \'customer_ids\' needs v3 = "batch" (GET cannot select customers)',
           what)
  end
  o.page_size = o.page_size or MAX_PAGE_SIZE
  return o
end

function methods:customer_page(index, size, opts)
  check_self(self, "customer_page", 2)
  local i, expected = page_index(index == nil and 1 or index)
  if not i then
    misuse(2, "customer_page: page_index must be %s (%s)", expected, util.got(index, true))
  end
  local s
  s, expected = page_size(size == nil and MAX_PAGE_SIZE or size)
  if not s then
    misuse(2, "customer_page: page_size must be %s (%s)", expected, util.got(size, true))
  end
  local o = v3_options(self, opts, V3_OPTIONS, "customer_page", 2)
  return util.in_call(self, function()
    local page, err = fetch_page(self, i, s, o)
    if not page then return nil, err end
    emit_page(self, page)
    return page
  end)
end

-- The v3 listing shared by pages, each_customer and all_customers (keep_all: every customer is
-- kept in one table anyway). walk:next() gives fresh customers, {page = the page to give, ...},
-- is_last. Paging stops at a short page, an empty one, or totalCount.
local function v3_walk(self, o, keep_all)
  return pager.new {
    first = { index = 1 },
    fetch = function(cursor)
      local page, info = fetch_page(self, cursor.index, o.page_size, o)
      if not page then return nil, info end
      local full = #page.customers >= info.size
      return { items = page.customers, req = info.req, resp = info.resp, page = page,
               total = page.total_count, size = info.size,
               next = full and { index = cursor.index + 1 } or nil }
    end,
    on_page = function(_, result, fresh)
      result.page.customers = fresh
      emit_page(self, result.page)
    end,
    max_pages = o.max_pages, keep_all = keep_all, noun = "customer",
  }
end

-- The next v3 page of walk: page, is_last; nil at the end (an empty page ends the walk and is
-- not given); or nil, err.
local function next_page(walk)
  local fresh, result, last = walk:next()
  if not fresh then return nil, result end
  if #fresh == 0 then return nil end
  return result.page, last
end

-- Raises err as the iterators do (io.lines style): the error object itself, no position.
local function raise_on_error(page, err)
  if page == nil and err ~= nil then error(err, 0) end
  return page
end

function methods:pages(opts)
  check_self(self, "pages", 2)
  local walk = v3_walk(self, v3_options(self, opts, PAGING_OPTIONS, "pages", 2), false)
  return function()
    check_open(self, "pages", 2)
    return raise_on_error(util.in_call(self, next_page, walk))
  end
end

function methods:each_customer(opts)
  check_self(self, "each_customer", 2)
  local walk = v3_walk(self, v3_options(self, opts, PAGING_OPTIONS, "each_customer", 2), false)
  local list, i = {}, 0
  return function()
    check_open(self, "each_customer", 2)
    i = i + 1
    while list[i] == nil do
      local page = raise_on_error(util.in_call(self, next_page, walk))
      if page == nil then return nil end
      list, i = page.customers, 1
    end
    return list[i]
  end
end

-- Every customer of the walk, calling progress after each page; or nil, err.
local function all_of(walk, o)
  local progress = o.progress
  local all, done, told_last = {}, 0, false
  while true do
    local page, last = next_page(walk)
    if page == nil then
      if last ~= nil then return nil, last end -- the error
      -- the walk ended on an empty page: say that it is over
      if progress and not told_last then progress(done, done) end
      return all
    end
    table.move(page.customers, 1, #page.customers, #all + 1, all)
    done = done + 1
    if progress then
      local estimate = page.total_count
        and math.max(done + 1, (page.total_count + o.page_size - 1) // o.page_size)
      progress(done, last and done or estimate)
      told_last = last
    end
  end
end

-- Pages one after another for now; `parallel` is accepted for the concurrent version.
function methods:all_customers(opts)
  check_self(self, "all_customers", 2)
  local o = v3_options(self, opts, ALL_OPTIONS, "all_customers", 2)
  return util.in_call(self, all_of, v3_walk(self, o, true), o)
end

function methods:close()
  if getmetatable(self) ~= Avepoint then misuse(2, "close: call it as ave:close()") end
  util.close(self, "AvePoint", 2)
end

Avepoint.__close = function(self) self:close() end

return { new = new }
