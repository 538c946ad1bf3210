-- The one pager of every listing of both clients: ave:customers, pages, each_customer and
-- all_customers; mpc:customers and each_customer. A client fetches and checks one page for a
-- cursor (a page index, or a next link with the headers it asks for); the pager decides whether
-- and where the listing goes on, so that it always ends:
--
--   * every server-sent link is checked here (M.link): its length, no spaces or control
--     characters, core.url_problem (the one https / loopback rule) and the same origin as the
--     page it came with; a link that fails is a `protocol` error, never misuse;
--   * the headers a link asks for (M.link_headers): MS-* names only, values without CR, LF, NUL;
--   * a page that brings no new item (or an empty page that is not the last) is a `protocol`
--     error; items are told apart by tostring(id), else by a stable encoding of the item;
--   * a next link that repeats the link of one of the last two pages is a `protocol` error;
--   * with a totalCount and a page size, more than ceil(total / size) + 1 pages is a `protocol`
--     error;
--   * more pages than `max_pages` is a `limit` error.
--
--   local walk = pager.new{first = cursor, fetch = function(cursor) -> result | nil, err, ...}
--   walk:next() -> fresh_items, result, is_last | nil (the end) | nil, err
--
-- `result` (from fetch): items (array), keys (optional: keys[i] is M.item_key(items[i]) computed
-- by the core, or false to compute it here), req and resp (for error objects), and where the listing
-- goes: next (a cursor of the client's, a page index) or link ({uri = raw, headers = raw array}),
-- or neither on the last page; next_error (an error object: the listing fails after this page);
-- total and size (totalCount and the page size in effect), when known.
-- A failed fetch does not advance (calling next again retries that page); every other failure is
-- final: each later call gives it again.

local core = require "partnercustomers.core"
local util = require "partnercustomers.util"

local M = {}

M.MAX_LINK_BYTES = 64 * 1024 -- a link, or the headers of one; libcurl itself stops at 8 MB
M.SIZED = 65536 -- with keep_all, the keys the set of seen ones is sized for after page 1's totalCount

M.max_pages = util.number { integer = true, min = 1, max = math.maxinteger,
                            expected = "an integer >= 1" }

------------------------------------------------------------------------------------------------
-- Links

-- A link made absolute against the URL of the page it came with. A path is taken from the host,
-- keeping `prefix` (the path of base_url, a gateway in front of the service) unless the path
-- already starts with it; a scheme-relative link takes the page's scheme.
local function absolute(current, link, prefix)
  if link:find("^//") then return current:match("^[^:]+:") .. link end
  if link:find("^%a[%w+.%-]*:") then return link end
  if link:find("^/") then
    if prefix ~= "" and link:sub(1, #prefix + 1) ~= prefix .. "/" then link = prefix .. link end
    return current:match("^[^:]+://[^/?#]*") .. link
  end
  if link:find("^%?") then return current:match("^[^?#]*") .. link end
  return (current:match("^[^?#]*/") or current .. "/") .. link
end

-- The URL to request for the server-sent link `raw`, or nil and why not (a phrase that follows
-- the link's name in a message: "holds spaces or control characters").
function M.link(current, raw, prefix)
  if type(raw) ~= "string" or raw == "" then return nil, "is not a non-empty string" end
  if #raw > M.MAX_LINK_BYTES then
    return nil, ("is longer than %d bytes"):format(M.MAX_LINK_BYTES)
  end
  if raw:find("[%s%c]") then return nil, "holds spaces or control characters" end
  local url = absolute(current, raw, prefix or "")
  if #url > M.MAX_LINK_BYTES then
    return nil, ("is longer than %d bytes"):format(M.MAX_LINK_BYTES)
  end
  local why = core.url_problem(url)
  if why then return nil, why end
  local u, perr = util.parse_url(url)
  if not u then return nil, "is not usable: " .. perr end
  local here, there = util.origin(util.parse_url(current)), util.origin(u)
  if there ~= here then return nil, ("points to %s, not to %s"):format(there, here) end
  return url
end

local HEADER_NAME = "^[Mm][Ss]%-[%w!#$%%&'*+.^_`|~-]+$"

-- The headers a link asks for, [{key = name, value = string or integer}, ...] -> {name = value},
-- or nil and why not. Only the service's own MS-* headers (MS-ContinuationToken): a link never
-- replaces Authorization, Host, Cookie, Accept...; of two names that differ in case, the last.
function M.link_headers(list)
  if list == nil then return {} end
  if type(list) ~= "table" or not util.is_array(list) then return nil, "is not an array" end
  local headers, by_lower, size = {}, {}, 0
  for i, h in ipairs(list) do
    if not util.is_object(h) then return nil, ("[%d] is not an object"):format(i) end
    local name, value = h.key, h.value
    if type(name) ~= "string" or not name:find(HEADER_NAME) then
      return nil, ("[%d] is not an MS- header name"):format(i)
    end
    if math.type(value) == "integer" then value = ("%d"):format(value) end
    if type(value) ~= "string" or value:find("[%z\r\n]") then
      return nil, ("[%d] has a value that cannot be sent"):format(i)
    end
    size = size + #name + #value
    if size > M.MAX_LINK_BYTES then
      return nil, ("are longer than %d bytes"):format(M.MAX_LINK_BYTES)
    end
    local lower = name:lower()
    if by_lower[lower] then headers[by_lower[lower]] = nil end
    by_lower[lower], headers[name] = name, value
  end
  return headers
end

-- A cursor for a link: the URL, the headers to send, and a key that tells two cursors apart.
function M.link_cursor(url, headers)
  local lines = {}
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k:lower() .. ": " .. v end
  table.sort(lines)
  return { url = url, headers = headers, key = url .. "\n" .. table.concat(lines, "\n") }
end

------------------------------------------------------------------------------------------------
-- Items

-- A stable text of a decoded JSON value: keys sorted, numbers and strings as %q writes them
-- (locale-independent). No depth limit: the core's decoder has one.
local function encode(v, out)
  if type(v) ~= "table" then
    out[#out + 1] = ("%q"):format(v)
    return
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = { type(k), ("%q"):format(k), k } end
  table.sort(keys, function(a, b) return a[1] < b[1] or a[1] == b[1] and a[2] < b[2] end)
  out[#out + 1] = "{"
  for _, k in ipairs(keys) do
    out[#out + 1] = k[2]
    out[#out + 1] = "="
    encode(v[k[3]], out)
    out[#out + 1] = ","
  end
  out[#out + 1] = "}"
end

-- What tells an item apart: its id (a non-empty string or a number), as core.item_key gives it,
-- else "\0" .. the item's encoding (no key of an id starts with NUL); nil, so never a repeat, for
-- a value no JSON decoder gives.
local id_key = core.item_key
function M.item_key(item)
  local k = id_key(item)
  if k then return k end
  local out = { "\0" }
  if pcall(encode, item, out) then return table.concat(out) end
  return nil
end

------------------------------------------------------------------------------------------------
-- The walk

local Pager = {}
Pager.__index = Pager

-- o: first (cursor), fetch, on_page (function(index, result, fresh), optional), max_pages,
-- keep_all, noun ("customer"), link_name ('"links.next.uri"'), headers_name, prefix.
--
-- Memory: without keep_all the pager holds the item keys of the last two pages and of one
-- checkpoint page, taken at pages 1, 2, 4, 8, ... (Brent's cycle detection): adjacent repeats
-- (data that moved between two pages) and any listing that comes back in a cycle are caught,
-- with one page's keys times three at most. With keep_all (the methods that return every item
-- in one table) it keeps every key: the table it fills is as large, and then no item is ever
-- given twice.
function M.new(o)
  return setmetatable({
    o = o, cursor = o.first, read = 0, received = 0, finished = false,
    recent = {}, older = {}, checkpoint = {}, seen = o.keep_all and {} or nil,
    cursor_keys = { o.first.key },
  }, Pager)
end

function Pager:error(kind, fmt, ...)
  local last = self.last
  return util.answer_error(kind, last.req, last.resp, fmt, ...)
end

-- The checks before a page is asked for; an error, or nil.
function Pager:before_fetch()
  local o = self.o
  if o.max_pages and self.read >= o.max_pages then
    return self:error("limit", "the listing has more than max_pages = %d pages", o.max_pages)
  end
  if self.bound and self.read + 1 > self.bound then
    return self:error("protocol", "page %d would pass the %d pages that totalCount %d allows at "
                      .. "%d a page: the paging does not advance", self.read + 1, self.bound,
                      self.total, self.size)
  end
end

-- The items not in `seen` (the items table itself when all are new), each key added to it as it
-- comes: the loop of a keep_all walk (the same as take's, with fewer steps per item).
local function take_all(seen, items, keys)
  local fresh
  for i = 1, #items do
    local k = keys and keys[i] or M.item_key(items[i])
    if k == nil or not seen[k] then
      if k ~= nil then seen[k] = true end
      if fresh then fresh[#fresh + 1] = items[i] end
    elseif not fresh then
      fresh = table.move(items, 1, i - 1, 1, {})
    end
  end
  return fresh or items
end

-- The items of `result` not seen before (the items table itself when all are), or nil and a
-- protocol error when there is none.
function Pager:take(result)
  local items, keys = result.items, result.keys
  if self.seen and self.read == 0 and result.total then
    -- every key will be held: a table sized once (for up to SIZED keys) is never rehashed
    self.seen = core.table(0, math.min(math.max(result.total, #items), M.SIZED))
  end
  local seen, recent, older, checkpoint = self.seen, self.recent, self.older, self.checkpoint
  local fresh, here, n = nil, nil, #items
  if seen then
    fresh = take_all(seen, items, keys) -- a repeat within the page included
  else
    here = {}
    for i = 1, n do
      local k = keys and keys[i] or M.item_key(items[i])
      if k == nil or not (here[k] or recent[k] or older[k] or checkpoint[k]) then
        if fresh then fresh[#fresh + 1] = items[i] end
      elseif not fresh then
        fresh = table.move(items, 1, i - 1, 1, {})
      end
      if k ~= nil then here[k] = true end
    end
    fresh = fresh or items
  end
  local last = not (result.next or result.link or result.next_error)
  if #fresh == 0 and (n > 0 or not last) then
    return nil, util.answer_error("protocol", result.req, result.resp,
      "page %d brings no new %s: the paging does not advance", self.read + 1, self.o.noun)
  end
  if not seen then
    self.older, self.recent = self.recent, here
    local p = self.read + 1
    if p & (p - 1) == 0 then self.checkpoint = here end -- p is a power of two
  end
  return fresh
end

-- The next cursor of `result`: a cursor, false on the last page, or nil and an error.
function Pager:next_cursor(result)
  if result.next_error then return nil, result.next_error end
  if result.next then return result.next end
  local link = result.link
  if link == nil then return false end
  local o, req, resp = self.o, result.req, result.resp
  local url, why = M.link(req.url, link.uri, o.prefix)
  if not url then return nil, util.answer_error("protocol", req, resp, "%s %s", o.link_name, why) end
  local headers
  headers, why = M.link_headers(link.headers)
  if not headers then
    return nil, util.answer_error("protocol", req, resp, "%s %s", o.headers_name, why)
  end
  local cursor = M.link_cursor(url, headers)
  for _, k in ipairs(self.cursor_keys) do
    if k == cursor.key then
      return nil, util.answer_error("protocol", req, resp, "%s repeats a link already followed: "
                                    .. "the paging does not advance", o.link_name)
    end
  end
  return cursor
end

-- Moves past the page `result` that brought `fresh` items.
function Pager:advance(result, fresh)
  self.read = self.read + 1
  self.received = self.received + #fresh
  local resp = result.resp
  self.last = { req = result.req, resp = { status = resp.status, headers = resp.headers,
                                           attempts = resp.attempts } }
  if result.total and result.size then
    self.total, self.size = result.total, result.size
    self.bound = (result.total + result.size - 1) // result.size + 1
  end
  local cursor, err = self:next_cursor(result)
  if err then
    self.failure = err -- given after this page's items
  elseif not cursor or (result.total and self.received >= result.total) then
    self.finished = true
  else
    self.cursor = cursor
    self.cursor_keys = { self.cursor_keys[#self.cursor_keys], cursor.key }
  end
end

function Pager:next()
  if self.failure then return nil, self.failure end
  if self.finished then return nil end
  if self.read > 0 then
    local err = self:before_fetch()
    if err then
      self.failure = err
      return nil, err
    end
  end
  local result, err = self.o.fetch(self.cursor)
  if not result then return nil, err end
  local fresh, gerr = self:take(result)
  if not fresh then
    self.failure = gerr
    return nil, gerr
  end
  self:advance(result, fresh)
  if self.o.on_page then self.o.on_page(self.read, result, fresh) end
  return fresh, result, self.finished
end

-- How many item keys the walk holds (for the specs: bounded without keep_all).
function Pager:held()
  local n = 0
  for _, set in ipairs { self.seen or {}, self.recent, self.older, self.checkpoint } do
    for _ in pairs(set) do n = n + 1 end
  end
  return n
end

-- Every fresh item of the walk in one array, or nil and the error.
function M.collect(walk)
  local all = {}
  while true do
    local fresh, err = walk:next()
    if not fresh then
      if err ~= nil then return nil, err end
      return all
    end
    table.move(fresh, 1, #fresh, #all + 1, all)
  end
end

return M
