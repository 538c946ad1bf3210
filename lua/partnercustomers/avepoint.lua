-- The AvePoint Graph API client: pc.avepoint{...}.
-- HTTP, retries, tokens and JSON decoding are the core's (partnercustomers.core); this layer builds
-- the requests and walks the pages; the core checks the answers' shape and normalises the customers
-- while decoding them.

local core = require "partnercustomers.core"
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
  deadline = util.deadline,
}
local LIST_OPTIONS = {
  max_pages = pager.max_pages,
  deadline = util.deadline,
}
local PAGING_OPTIONS = {
  customer_ids = util.string_array,
  v3 = OPTIONS.v3,
  page_size = page_size,
  max_pages = pager.max_pages,
  prefetch = util.number { integer = true, min = 0, max = 64 },
  deadline = util.deadline,
}
local ALL_OPTIONS = {
  customer_ids = util.string_array,
  v3 = OPTIONS.v3,
  page_size = page_size,
  max_pages = pager.max_pages,
  parallel = util.parallel,
  progress = util.func,
  deadline = util.deadline,
}

local DEFAULT_PREFETCH = 2
-- all_customers asks for the pages totalCount announces in batches, each one sliding window of
-- `parallel` transfers: the first of FIRST_BATCH x parallel pages, each next one of as many pages
-- as were read before it (so the batches double), rounded up to a multiple of `parallel` (no
-- wave of answers half empty at a batch's end), MAX_BATCH_PAGES at most. A totalCount larger
-- than the listing (wrong or hostile) costs at most about as many requests as the pages that were
-- good, never a batch of millions; a page the pager refuses stops the listing after its batch.
local FIRST_BATCH = 8
local MAX_BATCH_PAGES = 1024

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
    _max_parallel = o.max_parallel or util.DEFAULT_MAX_PARALLEL,
    _clock = o.clock or core.now, -- for deadlines that span several core calls
    _wait = o.wait, _cooperative = o.cooperative, -- a host's event loop (see util.request)
    _closed = false,
    _calls = util.call_counter(), -- calls running (see util.in_call)
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

-- The customers of the answer `resp` to `req`, and their keys for the pager; or nil, err.
-- The core has checked and normalised them while decoding (the request's `decode` names the
-- listing; see README.md for what a customer holds).
local function customers_of(req, resp)
  local shaped = resp.shaped
  if not shaped then -- an empty body: nothing was decoded
    return nil, protocol_error(req, resp, "expected a JSON object (%s)", util.got(resp.data))
  end
  if shaped.problem then return nil, protocol_error(req, resp, "%s", shaped.problem) end
  return shaped.items, shaped.keys
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

-- One page of the OData listing, for the pager; `at`: when the listing must end (or nil).
local function odata_page(self, cursor, at)
  local req = { method = "GET", url = cursor.url, scope = SCOPE_PARTNER,
                headers = { Accept = "application/json" }, decode = "avepoint-odata" }
  local copts = util.call_options(self, at)
  if not copts then return nil, util.deadline_error(req, "customers") end
  local resp, err = util.request(self, req, copts)
  if not resp then return nil, err end
  local list, keys = customers_of(req, resp)
  if not list then return nil, keys end
  local link = resp.data["@odata.nextLink"]
  return { items = list, keys = keys, req = req, resp = resp,
           link = link ~= nil and { uri = link } or nil }
end

-- Pages one after another: each next link comes with the page before it.
function methods:customers(opts)
  check_self(self, "customers", 2)
  local o = util.options(opts, LIST_OPTIONS, "customers", 2)
  local at = util.deadline_at(self, o.deadline)
  return util.in_call(self, pager.collect, pager.new {
    first = pager.link_cursor(self._base .. PARTNER_PATH),
    fetch = function(cursor) return odata_page(self, cursor, at) end,
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
             scope = SCOPE_V3, decode = "avepoint-v3" }
  end
  return { method = "GET", url = self._base .. V3_PATH .. query, headers = headers,
           scope = SCOPE_V3, decode = "avepoint-v3" }
end

-- Reads the answer `resp` to `req`, page `index` of `size`. Returns the page and, for the pager,
-- {req, resp, size = the page size in effect, keys = the customers' keys}, or nil, err.
local function read_page(index, size, req, resp)
  local list, keys = customers_of(req, resp)
  if not list then return nil, keys end

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
  return page, { req = req, resp = resp, size = effective, keys = keys }
end

-- Resolves the v3 call and checks customer_ids against it; o.what names the method, o.at is when
-- it must end (nil: no deadline).
local function v3_options(self, opts, spec, what, level)
  local o = util.options(opts, spec, what, level + 1)
  o.v3 = o.v3 or self._v3
  if o.customer_ids and o.v3 ~= "batch" then
    misuse(level + 1, '%s: option \'customer_ids\' needs v3 = "batch" (GET cannot select customers)',
           what)
  end
  o.page_size = o.page_size or MAX_PAGE_SIZE
  o.what, o.at = what, util.deadline_at(self, o.deadline)
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
    local req = v3_request(self, i, s, o.v3, o.customer_ids)
    local copts = util.call_options(self, o.at)
    if not copts then return nil, util.deadline_error(req, "customer_page") end
    local resp, err = util.request(self, req, copts)
    if not resp then return nil, err end
    local page, perr = read_page(i, s, req, resp)
    if not page then return nil, perr end
    emit_page(self, page)
    return page
  end)
end

-- The v3 listing shared by pages, each_customer and all_customers (keep_all: every customer is
-- kept in one table anyway). walk:next() gives fresh customers, {page = the page to give, ...},
-- is_last. Paging stops at a short page, an empty one, or totalCount.
--
-- Pages are fetched ahead, in batches: when the pager asks for a page that is not there yet,
-- one client:batch fetches the pages from it on, `window(index, total_known)` of them (never past
-- the last page the latest totalCount allows, nor past max_pages), `parallel` at a time. The
-- pager takes them in order and keeps all its guards; pages fetched past the end of the listing
-- are dropped. A page the pager asks for again (after a failure) is fetched again.
local function v3_walk(self, o, keep_all, window, parallel)
  local ahead = {}   -- index -> {req, resp, err}: fetched, not yet given to the pager
  local last_page    -- ceil(totalCount / page size) of the latest page read, when it had one

  -- Fetches the pages from `index` on; true, or nil and an error.
  local function fill(index)
    local to = index + window(index, last_page ~= nil) - 1
    if last_page then to = math.min(to, last_page) end
    if o.max_pages then to = math.min(to, o.max_pages) end
    to = math.max(to, index)
    ahead = {} -- anything left is stale
    local reqs = {}
    for i = index, to do reqs[#reqs + 1] = v3_request(self, i, o.page_size, o.v3, o.customer_ids) end
    local copts = util.call_options(self, o.at, math.min(parallel, #reqs))
    if not copts then return nil, util.deadline_error(reqs[1], o.what) end
    local results = util.batch(self, reqs, copts)
    for j, r in ipairs(results) do ahead[index + j - 1] = { req = reqs[j], resp = r[1], err = r[2] } end
    return true
  end

  local walk = pager.new {
    first = { index = 1 },
    fetch = function(cursor)
      local index = cursor.index
      if not ahead[index] then
        local ok, err = fill(index)
        if not ok then return nil, err end
      end
      local got = ahead[index]
      ahead[index] = nil
      if not got.resp then return nil, got.err end
      local page, info = read_page(index, o.page_size, got.req, got.resp)
      if not page then return nil, info end
      last_page = page.total_count and (page.total_count + info.size - 1) // info.size or nil
      local full = #page.customers >= info.size
      return { items = page.customers, keys = info.keys, req = info.req, resp = info.resp, page = page,
               total = page.total_count, size = info.size,
               next = full and { index = index + 1 } or nil }
    end,
    on_page = function(_, result, fresh)
      result.page.customers = fresh
      emit_page(self, result.page)
    end,
    max_pages = o.max_pages, keep_all = keep_all, noun = "customer",
  }
  -- the pages fetched past the end are dropped once the listing is over
  walk.release = function() ahead = {} end
  return walk
end

-- The next v3 page of walk: page, is_last; nil at the end (an empty page ends the walk and is
-- not given); or nil, err.
local function next_page(walk)
  local fresh, result, last = walk:next()
  if not fresh then
    if result == nil then walk.release() end
    return nil, result
  end
  if last then walk.release() end
  if #fresh == 0 then return nil end
  return result.page, last
end

-- Raises err as the iterators do (io.lines style): the error object itself, no position.
local function raise_on_error(page, err)
  if page == nil and err ~= nil then error(err, 0) end
  return page
end

-- The walk of an iterator: the first page alone (it tells totalCount), then `prefetch` + 1
-- pages per batch whenever the pages fetched ahead run out; so at most prefetch + 1 pages wait
-- in memory besides the one the caller holds.
local function iterator_walk(self, o)
  local depth = (o.prefetch or DEFAULT_PREFETCH) + 1
  return v3_walk(self, o, false, function(index) return index == 1 and 1 or depth end,
                 math.min(depth, self._max_parallel))
end

function methods:pages(opts)
  check_self(self, "pages", 2)
  local walk = iterator_walk(self, v3_options(self, opts, PAGING_OPTIONS, "pages", 2))
  return function()
    check_open(self, "pages", 2)
    return raise_on_error(util.in_call(self, next_page, walk))
  end
end

function methods:each_customer(opts)
  check_self(self, "each_customer", 2)
  local walk = iterator_walk(self, v3_options(self, opts, PAGING_OPTIONS, "each_customer", 2))
  local list, i = {}, 0
  return function()
    check_open(self, "each_customer", 2)
    i = i + 1
    while list[i] == nil do
      list = {} -- the page given out is not held while the next ones are fetched
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

-- Page 1 alone; then the pages its totalCount announces in batches that double (see
-- FIRST_BATCH), each one sliding window of `parallel` transfers; or, without a usable totalCount,
-- `parallel` pages per batch until a short or empty page.
function methods:all_customers(opts)
  check_self(self, "all_customers", 2)
  local o = v3_options(self, opts, ALL_OPTIONS, "all_customers", 2)
  local parallel = util.parallel_of(self, o, "all_customers", 2)
  local function window(index, total_known)
    if index == 1 then return 1 end
    if not total_known then return parallel end
    local n = math.max(FIRST_BATCH * parallel, index - 1)
    return math.min(MAX_BATCH_PAGES, (n + parallel - 1) // parallel * parallel)
  end
  return util.in_call(self, all_of, v3_walk(self, o, true, window, parallel), o)
end

function methods:close()
  if getmetatable(self) ~= Avepoint then misuse(2, "close: call it as ave:close()") end
  util.close(self, "AvePoint", 2)
end

Avepoint.__close = function(self) self:close() end
-- collected without a close: the host forgets the descriptor before the core's collector closes it
Avepoint.__gc = util.forget_descriptor

return { new = new }
