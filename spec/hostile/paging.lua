-- Pagers that never advance and next links that must not be followed. "{{N}}" in an answer is
-- the request's number, so a "fresh" skiptoken or continuation token comes with every page.
local R = require "spec.helpers.rawpeer"
local C = require "spec.hostile.common"

local PROTOCOL = { kind = "protocol" }

-- /partner/customers pages (OData): items as JSON text, nextLink as JSON text (or nil).
local function odata(items, link)
  return R.json(200, ('{"value":[%s]%s}'):format(items, link and (',"@odata.nextLink":' .. link) or ""))
end
-- v3 pages: items as JSON text, metadata as JSON text.
local function v3(items, meta)
  return R.json(200, ('{"data":[%s],"metadata":%s}'):format(items, meta or "{}"))
end
-- Partner Center pages: items as JSON text, links as JSON text.
local function pcpage(items, links)
  return R.json(200, ('{"totalCount":1,"items":[%s],"links":%s}'):format(items, links or "{}"))
end
local function next_link(uri, token)
  return ('{"next":{"uri":%s,"method":"GET","headers":[{"key":"MS-ContinuationToken","value":%s}]}}'):format(uri, token)
end

local function ids(expected)
  return function(_, res)
    local got = {}
    for i, c in ipairs(res or {}) do got[i] = tostring(c.id) end
    if table.concat(got, ",") ~= table.concat(expected, ",") then
      C.fail("expected customers %s, got %s", table.concat(expected, ","), table.concat(got, ","))
    end
  end
end

local TWO = '{"id":"a"},{"id":"b"}'
local NO_IDS = '{"organization":"x"},{"organization":"y"}'

local ODATA = {
  { "nextLink to the page itself", function(p) return { odata(TWO, ('"%s/partner/customers"'):format(p.url)) } end, PROTOCOL },
  { "fresh skiptoken, same items", { odata(TWO, '"/partner/customers?$skiptoken={{N}}"') }, PROTOCOL },
  { "fresh skiptoken, empty pages", { odata("", '"/partner/customers?$skiptoken={{N}}"') }, PROTOCOL },
  { "fresh skiptoken, items without ids", { odata(NO_IDS, '"/partner/customers?$skiptoken={{N}}"') }, PROTOCOL },
  { "nextLink with spaces", { odata(TWO, '"/partner/customers?$skiptoken=a b c"'), odata("") }, PROTOCOL },
  { "nextLink with CR/LF and a header", { odata(TWO, '"/partner/customers?x=1\\r\\nX-Injected: 1"'), odata("") }, PROTOCOL },
  { "nextLink smuggling a request", { odata(TWO, '"/partner/customers HTTP/1.1\\r\\n\\r\\nGET /smuggled"'), odata("") }, PROTOCOL },
  { "nextLink with NUL", { odata(TWO, '"/partner/customers?x=\\u0000"'), odata("") }, PROTOCOL },
  { "nextLink to another host",
    function(p) return { odata(TWO, ('"http://127.0.0.2:%d/partner/customers"'):format(p.port)) } end, PROTOCOL },
  { "nextLink scheme-relative to another host", { odata(TWO, '"//127.0.0.2/elsewhere"') }, PROTOCOL },
  { "nextLink with user:password@",
    function(p) return { odata(TWO, ('"http://u:p@127.0.0.1:%d/partner/customers?2"'):format(p.port)) } end, PROTOCOL },
  { "nextLink that is a number", { odata(TWO, "42") }, PROTOCOL },
  { "nextLink that is an object", { odata(TWO, '{"href":"/partner/customers?2"}') }, PROTOCOL },
  { "nextLink javascript:", { odata(TWO, '"javascript:alert(1)"') }, PROTOCOL },
  { "relative nextLink, then the last page", { odata(TWO, '"/partner/customers?page=2"'), odata('{"id":"c"}') },
    { ok = true }, ids { "a", "b", "c" } },
  { "nextLink 64 KiB long", { odata(TWO, '"/partner/customers?x=' .. ("q"):rep(64 * 1024) .. '"'), odata("") },
    { ok = true, kinds = { "protocol", "http", "network" } } },
}

local V3 = {
  { "each_customer", "the same full page forever", { v3(TWO) }, PROTOCOL },
  { "all_customers", "items without ids, full pages forever, totalCount 1000", { v3(NO_IDS, '{"totalCount":1000}') }, PROTOCOL },
  { "each_customer", "items without ids, full pages forever", { v3(NO_IDS) }, PROTOCOL },
  { "all_customers", "ids that are objects, full pages forever", { v3('{"id":{"x":1}},{"id":{"x":2}}') }, PROTOCOL },
  { "all_customers", "totalCount growing, same items", { v3(TWO, '{"totalCount":1{{N}}}') }, PROTOCOL },
  { "all_customers", "pages that shift (a customer moved)",
    { v3(TWO, '{"totalCount":3}'), v3('{"id":"b"},{"id":"c"}', '{"totalCount":3}'), v3("") }, { ok = true }, ids { "a", "b", "c" } },
  { "ave_page", "data that is a string", { R.json(200, '{"data":"abc"}') }, PROTOCOL },
  { "ave_page", "data that is an object", { R.json(200, '{"data":{"id":"a"}}') }, PROTOCOL },
  { "ave_page", "metadata that is an array", { v3(TWO, "[1,2]") }, PROTOCOL },
  { "ave_page", "totalCount -1", { v3(TWO, '{"totalCount":-1}') }, PROTOCOL },
  { "ave_page", "totalCount a word", { v3(TWO, '{"totalCount":"abc"}') }, PROTOCOL },
  { "ave_page", "totalCount 1e400", { v3(TWO, '{"totalCount":1e400}') }, PROTOCOL },
  { "ave_page", "totalCount 1.5", { v3(TWO, '{"totalCount":1.5}') }, PROTOCOL },
}

local PC = {
  { "the same next link again", { pcpage(TWO, next_link('"/v1/customers?size=2"', '"ct-1"')) }, PROTOCOL },
  { "fresh continuation token, same items", { pcpage(TWO, next_link('"/v1/customers?size=2"', '"ct-{{N}}"')) }, PROTOCOL },
  { "fresh continuation token, empty pages", { pcpage("", next_link('"/v1/customers?size=2"', '"ct-{{N}}"')) }, PROTOCOL },
  { "next uri with spaces", { pcpage(TWO, next_link('"/v1/customers?size=2 x"', '"ct-1"')), pcpage("") }, PROTOCOL },
  { "continuation token with CR/LF and a header",
    { pcpage(TWO, next_link('"/v1/customers"', '"ct\\r\\nX-Injected: 1"')), pcpage("") }, PROTOCOL },
  { "next uri with CR/LF and a header", { pcpage(TWO, next_link('"/v1/customers?a\\r\\nX-Injected: 1"', '"ct-1"')), pcpage("") },
    PROTOCOL },
  { "next uri to another host", { pcpage(TWO, next_link('"http://127.0.0.2/v1/customers"', '"ct-1"')) }, PROTOCOL },
  { "next headers replacing Authorization", { pcpage(TWO, '{"next":{"uri":"/v1/customers","headers":'
      .. '[{"key":"Authorization","value":"Bearer x"},{"key":"MS-ContinuationToken","value":"c"}]}}') }, PROTOCOL },
  { "links.next that is a string", { pcpage(TWO, '{"next":"/v1/customers?page=2"}') }, PROTOCOL },
  { "items that is a string", { R.json(200, '{"items":"abc","links":{}}') }, PROTOCOL },
  { "items holding a number", { pcpage("1,2") }, PROTOCOL },
}

local cases = {}
for _, o in ipairs(ODATA) do
  cases[#cases + 1] = { name = "customers(): " .. o[1], call = "ave_customers", api = o[2], expect = o[3], check = o[4] }
end
for _, v in ipairs(V3) do
  local call = v[1] == "each_customer" and "ave_each" or v[1] == "all_customers" and "ave_all" or v[1]
  cases[#cases + 1] = { name = "v3 " .. v[1] .. ": " .. v[2], call = call, api = v[3], expect = v[4], check = v[5] }
end
for _, p in ipairs(PC) do
  cases[#cases + 1] = { name = "Partner Center customers: " .. p[1], call = "pc_customers", api = p[2], expect = p[3] }
end
return cases
