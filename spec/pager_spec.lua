-- partnercustomers.pager, the one pager of both clients' listings: its link and header checks,
-- how it tells items apart, and the walk's guards and memory. The pager is pure Lua over a fetch
-- function; here fetch gives pages from a table (no request is made). avepoint_spec and
-- partnercenter_spec walk real listings of the sandbox through it.
local pager = require "partnercustomers.pager"
local pc = require "partnercustomers"

local HERE = "http://127.0.0.1:8080/v1/customers?size=5"

describe("pager.link", function()
  it("resolves a link against the page it came with, on the same origin", function()
    local cases = {
      { "http://127.0.0.1:8080/v1/customers?x=1", "", "http://127.0.0.1:8080/v1/customers?x=1" },
      { "HTTP://127.0.0.1:8080/v1/c", "", "HTTP://127.0.0.1:8080/v1/c" },
      { "//127.0.0.1:8080/v1/c", "", "http://127.0.0.1:8080/v1/c" },
      { "/v1/customers?t=2", "", "http://127.0.0.1:8080/v1/customers?t=2" },
      { "/v1/customers?t=2", "/pc", "http://127.0.0.1:8080/pc/v1/customers?t=2" },
      { "/pc/v1/customers", "/pc", "http://127.0.0.1:8080/pc/v1/customers" },
      { "?size=5&t=3", "", "http://127.0.0.1:8080/v1/customers?size=5&t=3" },
      { "customers?t=4", "", "http://127.0.0.1:8080/v1/customers?t=4" },
      { "/v1/é", "", "http://127.0.0.1:8080/v1/é" },
    }
    for _, case in ipairs(cases) do
      local link, prefix, want = table.unpack(case)
      assert.equal(want, pager.link(HERE, link, prefix), link)
    end
  end)

  it("refuses what may not or cannot be requested, saying why, never raising", function()
    local long = "/v1/customers?t=" .. ("a"):rep(pager.MAX_LINK_BYTES)
    local cases = {
      { "http://127.0.0.2:8080/v1/c", "points to http://127.0.0.2:8080, not to http://127.0.0.1:8080" },
      { "http://127.0.0.1:8081/v1/c", "not to" },
      { "https://127.0.0.1:8080/v1/c", "not to" },
      { "//evil.example/v1/c", "uses plain http://" },
      { "https://evil.example/v1/c", "not to" },
      { "/v1/c?t=a b", "holds spaces or control characters" },
      { "/v1/c?t=a\tb", "holds spaces or control characters" },
      { "/v1/c?t=a\0b", "holds spaces or control characters" },
      { "/v1/c?t=a\127b", "holds spaces or control characters" },
      { "http://u:p@127.0.0.1:8080/v1/c", "carries credentials" },
      { "http://127.0.0.1:99999/v1/c", "is not a valid absolute URL" },
      { "ftp://127.0.0.1:8080/v1/c", "must use https://" },
      { "javascript:alert(1)", "" },
      { long, "is longer than 65536 bytes" },
      { "", "is not a non-empty string" },
      { 42, "is not a non-empty string" },
      { { "/v1/c" }, "is not a non-empty string" },
    }
    for _, case in ipairs(cases) do
      local link, why = table.unpack(case)
      local ok, url, reason = pcall(pager.link, HERE, link, "")
      assert.is_true(ok, tostring(url))
      assert.is_nil(url, tostring(link))
      assert.is_string(reason)
      assert.truthy(reason:find(why, 1, true), ("%q not in %q"):format(why, reason))
    end
  end)

  it("applies core.url_problem to what it resolves", function()
    local url, why = pager.link("https://h.example/v1/c", "http://h.example/v1/d", "")
    assert.is_nil(url)
    assert.equal(require("partnercustomers.core").url_problem("http://h.example/v1/d"), why)
  end)
end)

describe("pager.link_headers", function()
  it("takes MS- headers in any case, integers as strings, the last of one name", function()
    assert.same({}, pager.link_headers(nil))
    assert.same({ ["MS-ContinuationToken"] = "abc", ["ms-extra"] = "7" },
                pager.link_headers { { key = "MS-ContinuationToken", value = "abc" },
                                     { key = "ms-extra", value = 7 } })
    assert.same({ ["Ms-A"] = "2" }, pager.link_headers { { key = "MS-A", value = "1" },
                                                         { key = "Ms-A", value = "2" } })
    assert.same({ ["MS-A"] = "a\tb" }, pager.link_headers { { key = "MS-A", value = "a\tb" } })
  end)

  it("refuses every other name, values that cannot be sent and wrong shapes", function()
    local bad = {
      { { key = "Authorization", value = "Bearer x" } }, { { key = "Host", value = "h" } },
      { { key = "Cookie", value = "a=b" } }, { { key = "Accept", value = "x" } },
      { { key = "X-MS-A", value = "a" } }, { { key = "MS-", value = "a" } },
      { { key = "MS-A B", value = "a" } }, { { key = "MS-A\r\nX", value = "a" } },
      { { key = "MS-A", value = "a\r\nX-B: b" } }, { { key = "MS-A", value = "a\nb" } },
      { { key = "MS-A", value = "a\0b" } }, { { key = "MS-A", value = 1.5 } },
      { { key = "MS-A", value = true } }, { { key = "MS-A" } }, { { value = "a" } },
      { { key = "MS-A", value = ("a"):rep(pager.MAX_LINK_BYTES) } },
      { "MS-A: a" }, { key = "MS-A", value = "a" }, "MS-A: a",
    }
    for i, list in ipairs(bad) do
      local headers, why = pager.link_headers(list)
      assert.is_nil(headers, i)
      assert.is_string(why)
    end
  end)
end)

describe("pager.item_key", function()
  it("is tostring(id) for string and number ids", function()
    assert.equal(pager.item_key { id = "7", name = "a" }, pager.item_key { id = 7, name = "b" })
    assert.not_equal(pager.item_key { id = "7" }, pager.item_key { id = "8" })
  end)

  it("is the item's content, stable whatever the key order, for items without a usable id", function()
    local a, b = {}, {}
    for i = 1, 20 do a["k" .. i] = i end
    for i = 20, 1, -1 do b["k" .. i] = i end
    a.nested, b.nested = { 1, "x", { y = 0.1 } }, { 1, "x", { y = 0.1 } }
    assert.equal(pager.item_key(a), pager.item_key(b))
    for _, id in ipairs { "", true, { 1 }, { x = 1 } } do
      assert.equal(pager.item_key { id = id, o = "a" }, pager.item_key { o = "a", id = id })
      assert.not_equal(pager.item_key { id = id, o = "a" }, pager.item_key { id = id, o = "b" })
    end
    assert.not_equal(pager.item_key { o = 1 }, pager.item_key { o = "1" })
    assert.not_equal(pager.item_key { id = "{}" }, pager.item_key {})
  end)
end)

describe("pager walks", function()
  -- A walk over pages[1..n] (arrays of ids, or of items), each page's cursor the next index;
  -- `meta` adds total and size to every result.
  local function walk_of(pages, o, meta)
    o = o or {}
    o.first = { index = 1 }
    o.noun = "customer"
    o.fetch = function(cursor)
      local list = pages[cursor.index]
      local items = {}
      for i, x in ipairs(list) do items[i] = type(x) == "table" and x or { id = x } end
      local result = { items = items, req = { method = "GET", url = "http://127.0.0.1:1/p" .. cursor.index },
                       resp = { status = 200, headers = {}, attempts = 1 },
                       next = pages[cursor.index + 1] and { index = cursor.index + 1 } or nil }
      for k, v in pairs(meta or {}) do result[k] = v end
      return result
    end
    return pager.new(o)
  end

  -- Every fresh id of a walk, and the error that ended it.
  local function drain(w)
    local ids = {}
    while true do
      local fresh, err = w:next()
      if not fresh then return ids, err end
      for _, item in ipairs(fresh) do ids[#ids + 1] = item.id end
    end
  end

  it("holds the keys of three pages at most, however long the listing", function()
    local pages = {}
    for p = 1, 2000 do pages[p] = { p * 10 + 1, p * 10 + 2, p * 10 + 3 } end
    local w, most = walk_of(pages), 0
    while w:next() do most = math.max(most, w:held()) end
    assert.equal(2000, w.read)
    assert.truthy(most <= 9, most)
    local all = walk_of(pages, { keep_all = true })
    assert.equal(6000, #drain(all))
    assert.equal(6000, all:held()) -- keep_all keeps every key, as it keeps every item
  end)

  it("ends a listing that comes back in a cycle, whatever its length", function()
    for _, period in ipairs { 1, 2, 3, 5, 17 } do
      for _, prefix in ipairs { 0, 1, 6, 40 } do
        local pages = {}
        for p = 1, prefix do pages[p] = { "p" .. p } end
        for p = prefix + 1, prefix + 20 * period + 100 do
          pages[p] = { "c" .. (p - prefix - 1) % period }
        end
        local w = walk_of(pages)
        local ids, err = drain(w)
        assert.truthy(pc.is_error(err), tostring(err))
        assert.equal("protocol", err.kind)
        assert.matches("brings no new customer", err.message)
        assert.truthy(w.read <= 2 * (prefix + period) + period + 2, ("%d pages"):format(w.read))
        assert.truthy(#ids >= prefix + period)
      end
    end
  end)

  it("drops repeats within a page and from the page before", function()
    local ids, err = drain(walk_of { { "a", "b", "b" }, { "b", "c" }, { "c", "d", "a" } })
    assert.is_nil(err)
    assert.same({ "a", "b", "c", "d" }, ids)
  end)

  it("takes an empty page without a next cursor as the end, with one as a protocol error", function()
    local ids, err = drain(walk_of { { "a" }, {} })
    assert.same({ "a" }, ids)
    assert.is_nil(err)
    ids, err = drain(walk_of { { "a" }, {}, { "b" } })
    assert.same({ "a" }, ids)
    assert.equal("protocol", err.kind)
    assert.equal("http://127.0.0.1:1/p2", err.url)
  end)

  it("bounds the pages by totalCount and by max_pages; both errors stay", function()
    local pages = {}
    for p = 1, 50 do pages[p] = { "a" .. p, "a" .. p + 1 } end -- one new customer a page
    local w = walk_of(pages, nil, { total = 20, size = 2 })
    local ids, err = drain(w)
    assert.equal("protocol", err.kind)
    assert.matches("totalCount 20", err.message)
    assert.equal(11, w.read) -- ceil(20 / 2) + 1
    assert.equal(12, #ids)
    assert.equal(err, select(2, w:next()))

    w = walk_of(pages, { max_pages = 3 })
    ids, err = drain(w)
    assert.equal("limit", err.kind)
    assert.equal("http://127.0.0.1:1/p3", err.url) -- the last page read
    assert.equal(4, #ids)
    assert.equal(err, select(2, w:next()))
    assert.equal(3, #drain(walk_of({ { "a" }, { "b" }, { "c" } }, { max_pages = 3 })))
  end)

  it("checks max_pages as an option: an integer >= 1", function()
    assert.equal(1, pager.max_pages(1))
    assert.equal(2, pager.max_pages(2.0))
    for _, bad in ipairs { 0, -1, 1.5, "2", 0 / 0, math.huge } do
      assert.is_nil(pager.max_pages(bad))
    end
  end)
end)
