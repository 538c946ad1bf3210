-- The customers the core shapes while decoding (request field decode = "avepoint-v3" or
-- "avepoint-odata"), against the real sandbox serving raw bodies: every answer is compared with a
-- model written here in Lua (the rules of API.md: nulls removed, integral numbers as integers, the
-- job status as label and code, managementMode, tenants), and the shape errors with their messages.
local pc = require "partnercustomers"
local core = require "partnercustomers.core"
local sandbox = require "spec.helpers.sandbox"
local cjson = require("cjson").new()
local helpers = require "spec.helpers.util"

------------------------------------------------------------------------------------------------
-- The model

local LABELS = { [0] = "N/A", "Working", "Failed", "Waiting for Configuration",
                 "Multiple Issues Found", "Finished with Exception", "No Backup Update" }
local SPELLINGS = { ["na"] = 0, ["n a"] = 0, ["multiple issue found"] = 4,
                    ["finished with exceptions"] = 5, ["no backup updates"] = 6 }
local function spelling(s) return (s:lower():gsub("[%s_%-]+", " "):match("^ ?(.-) ?$")) end
for code = 0, 6 do SPELLINGS[spelling(LABELS[code])] = code end

local function to_integer(x)
  if type(x) == "string" then x = tonumber(x:match("^%s*(%-?%d+)%s*$")) end
  return type(x) == "number" and math.tointeger(x) or nil
end

local function job_code(x)
  local n = to_integer(x)
  if n then return LABELS[n] and n end
  return type(x) == "string" and SPELLINGS[spelling(x)] or nil
end

-- JSON as the core promises it: no null, integral numbers as integers.
local function plain(v)
  if v == cjson.null then return nil end
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) ~= "table" then return v end
  local out, n = {}, 0
  if #v > 0 then
    for i = 1, #v do
      local x = plain(v[i])
      if x ~= nil then n = n + 1; out[n] = x end
    end
  else
    for k, x in pairs(v) do out[k] = plain(x) end
  end
  return out
end

local function is_array(t)
  local n = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > #t then return false end
    n = n + 1
  end
  return n == #t
end
local function is_object(v) return type(v) == "table" and (next(v) == nil or not is_array(v)) end

local function lower_key(t, key)
  if t[key] ~= nil then return end
  for k, v in pairs(t) do
    if type(k) == "string" and k:lower() == key then
      t[k], t[key] = nil, v
      return
    end
  end
end

local function customer(c, v3)
  if not is_object(c) then return nil, "is not an object" end
  local code = c.jobStatus ~= nil and job_code(c.jobStatus)
  if code then c.jobStatus, c.jobStatusCode = LABELS[code], code else c.jobStatusCode = nil end
  c.managementMode = to_integer(c.managementMode) or c.managementMode
  if c.tenants == nil then
    if v3 then c.tenants = {} end
  elseif type(c.tenants) ~= "table" or not is_array(c.tenants) then
    return nil, "has tenants that are not an array"
  else
    for _, t in ipairs(c.tenants) do
      if not is_object(t) then return nil, "has a tenant that is not an object" end
      lower_key(t, "id")
      lower_key(t, "name")
    end
  end
  return c
end

-- The customers of body (JSON text) under field, or nil and the protocol error's message.
local function model(body, field, v3)
  local data = plain(cjson.decode(body))
  if not is_object(data) then
    return nil, ("expected a JSON object (got %s)"):format(
      type(data) == "table" and "an array" or math.type(data) or type(data))
  end
  local list = data[field]
  if list == nil then return {} end
  if type(list) ~= "table" or not is_array(list) then return nil, ('"%s" is not an array'):format(field) end
  for i, c in ipairs(list) do
    local ok, why = customer(c, v3)
    if not ok then return nil, ("customer %d %s"):format(i, why) end
  end
  return list
end

------------------------------------------------------------------------------------------------
-- The cases: customers (JSON text) one answer each, and whole answers

local CUSTOMERS = {
  -- job statuses
  '{"id":"a","jobStatus":0}', '{"id":"a","jobStatus":6}', '{"id":"a","jobStatus":7}',
  '{"id":"a","jobStatus":-1}', '{"id":"a","jobStatus":4.0}', '{"id":"a","jobStatus":3.5}',
  '{"id":"a","jobStatus":1e300}', '{"id":"a","jobStatus":"3"}', '{"id":"a","jobStatus":" 3 "}',
  '{"id":"a","jobStatus":"03"}', '{"id":"a","jobStatus":"-0"}', '{"id":"a","jobStatus":"3.5"}',
  '{"id":"a","jobStatus":"0x3"}', '{"id":"a","jobStatus":"99999999999999999999"}',
  '{"id":"a","jobStatus":"-9223372036854775808"}', '{"id":"a","jobStatus":"N/A"}',
  '{"id":"a","jobStatus":"n/a"}', '{"id":"a","jobStatus":"NA"}', '{"id":"a","jobStatus":"n a"}',
  '{"id":"a","jobStatus":"N_A"}', '{"id":"a","jobStatus":"n-a"}', '{"id":"a","jobStatus":"N / A"}',
  '{"id":"a","jobStatus":"Waiting_For_Configuration"}',
  '{"id":"a","jobStatus":"  waiting \\t\\n for--configuration_ "}',
  '{"id":"a","jobStatus":"multiple issue found"}', '{"id":"a","jobStatus":"Finished With Exceptions"}',
  '{"id":"a","jobStatus":"no-backup-updates"}', '{"id":"a","jobStatus":"WORKING"}',
  '{"id":"a","jobStatus":"Workin"}', '{"id":"a","jobStatus":""}', '{"id":"a","jobStatus":"  "}',
  '{"id":"a","jobStatus":"working\\u0000"}', '{"id":"a","jobStatus":"W\\u00f6rking"}',
  '{"id":"a","jobStatus":"waiting for configuration and then some more words"}',
  '{"id":"a","jobStatus":true}', '{"id":"a","jobStatus":{"code":1,"x":null}}',
  '{"id":"a","jobStatus":[1,null]}', '{"id":"a","jobStatus":null}', '{"id":"a"}',
  '{"id":"a","jobStatus":"Paused","jobStatusCode":3}', '{"id":"a","jobStatus":2,"jobStatusCode":99}',
  '{"id":"a","jobStatusCode":1}', '{"id":"a","jobStatusCode":null}',
  -- managementMode
  '{"id":"a","managementMode":2.0}', '{"id":"a","managementMode":"2"}',
  '{"id":"a","managementMode":" -7 "}', '{"id":"a","managementMode":"x"}',
  '{"id":"a","managementMode":1.5}', '{"id":"a","managementMode":null}',
  '{"id":"a","managementMode":{"a":null,"b":2.0}}',
  -- tenants
  '{"id":"a","tenants":null}', '{"id":"a","tenants":[]}', '{"id":"a","tenants":{}}',
  '{"id":"a","tenants":{"x":null}}', '{"id":"a","tenants":[null]}',
  '{"id":"a","tenants":[null,{"id":"t","name":null}]}', '{"id":"a","tenants":"x"}',
  '{"id":"a","tenants":5}', '{"id":"a","tenants":true}', '{"id":"a","tenants":{"x":1}}',
  '{"id":"a","tenants":[1]}', '{"id":"a","tenants":[[1]]}', '{"id":"a","tenants":[[null]]}',
  '{"id":"a","tenants":[{"id":"t"},"x"]}',
  '{"id":"a","tenants":[{"Id":"t","NAME":"n"}]}', '{"id":"a","tenants":[{"id":"t","Id":"u"}]}',
  '{"id":"a","tenants":[{"id":"t","name":null,"Name":"N"}]}',
  '{"id":"a","tenants":[{"iD":2.0,"nAmE":{"x":null}}]}',
  '{"id":"a","tenants":[{"NAME":null,"Name":"x"}]}',
  '{"id":"a","tenants":[{"id":"t","name":"n"},{"id":"u","Name":"N"}]}',
  '{"id":"a","jobStatus":null,"jobStatus":2}', '{"id":"a","tenants":[],"tenants":null}',
  '{"id":"a","tenants":[{"id":"t","name":"n","region":null,"size":3.0,"more":[null,1.0]}]}',
  -- not objects, nulls, numbers elsewhere
  '"x"', '5', '5.5', 'true', '[1]', '[null]', '[]', '{}',
  '{"id":1.0,"extra":{"a":null,"b":[null,2.0,{"c":null}]},"organization":null,"n":-0.0}',
}

local ANSWERS = {
  '[1,2]', '[]', '[null]', 'null', '5', '5.5', '"x"', 'true', '{}', '{"x":null}',
  '{"DATA":[{"id":"a"}]}', '{"data":null}', '{"data":"x"}', '{"data":{"a":1}}', '{"data":{}}',
  '{"data":{"a":null}}', '{"data":[]}', '{"data":[null]}', '{"data":[null,5]}',
  '{"data":[null,{"id":"a","jobStatus":"1"},null,{"id":"b","tenants":[1]}]}',
  '{"data":[{"id":"a","tenants":"x"},{"id":"b","tenants":[1]}]}',
  '{"data":[{"id":"a","jobStatus":2.0,"x":null}],"metadata":{"pageIndex":1.0,"x":null}}',
}

describe("customers shaped by the core", function()
  local sb, time

  setup(function() sb = sandbox.start { count = 3, seed = 3 } end)
  teardown(function() sb:stop() end)
  before_each(function() time = helpers.fake_time() end)

  local function client()
    return pc.avepoint {
      client_id = sb.client_id, client_secret = sb.client_secret,
      base_url = sb.url, token_url = sb.token_url, timeout = 5, max_retries = 0,
      clock = time.clock, sleep = time.sleep,
    }
  end

  local function serve(body)
    sb:faults { { type = "status", status = 200, body = body, path = "^/partner/" } }
  end

  -- The customers of one answer through the module, or nil and the error's message.
  local function v3(ave, body)
    serve(body)
    local page, err = ave:customer_page(1, 100)
    if page then return page.customers end
    helpers.assert_error(err, "protocol")
    return nil, err.message
  end

  local function odata(ave, body)
    serve(body)
    local list, err = ave:customers()
    if list then return list end
    helpers.assert_error(err, "protocol")
    return nil, err.message
  end

  it("normalises every customer as the rules say (v3)", function()
    local ave <close> = client()
    for _, c in ipairs(CUSTOMERS) do
      for _, body in ipairs { '{"data":[' .. c .. ']}', '{"data":[{"id":"z"},null,' .. c .. ']}' } do
        local want, want_err = model(body, "data", true)
        local got, err = v3(ave, body)
        assert.same(want, got, body)
        assert.equal(want_err, err, body)
      end
    end
  end)

  it("normalises every customer as the rules say (OData: no tenants default)", function()
    local ave <close> = client()
    for _, c in ipairs(CUSTOMERS) do
      local body = '{"value":[' .. c .. ']}'
      local want, want_err = model(body, "value", false)
      local got, err = odata(ave, body)
      assert.same(want, got, body)
      assert.equal(want_err, err, body)
    end
  end)

  it("leaves an answer it refuses normalised too, the refused list included", function()
    local c <close> = core.new { access_token = sb:token("elements.customers.read.all") }
    for _, body in ipairs { '{"data":3,"n":2.0}', '{"data":"x","n":2.0}', '{"value":3.0,"n":2.0}' } do
      serve(body)
      local field = body:match('^{"(%a+)"')
      local shape = field == "data" and "avepoint-v3" or "avepoint-odata"
      local resp = assert(c:request { url = sb.url .. "/partner/customers", decode = shape })
      assert.is_string(resp.shaped.problem, body)
      assert.equal("integer", math.type(resp.data.n), body)
      if type(resp.data[field]) == "number" then assert.equal("integer", math.type(resp.data[field]), body) end
    end
  end)

  it("checks the answer's own shape, with the same messages", function()
    local ave <close> = client()
    for _, body in ipairs(ANSWERS) do
      local want, want_err = model(body, "data", true)
      local got, err = v3(ave, body)
      assert.same(want, got, body)
      assert.equal(want_err, err, body)
    end
    local _, err = v3(ave, "")
    assert.equal("expected a JSON object (got nil)", err)
  end)

  it("tells customers apart by id: numbers as their text, '#' and NUL ids kept apart", function()
    local ave <close> = client()
    local function ids(list)
      local out = {}
      for i, c in ipairs(list) do out[i] = tostring(c.id) .. ":" .. (math.type(c.id) or type(c.id)) end
      return out
    end
    local function all(body)
      serve(body)
      return assert(ave:all_customers())
    end
    -- 5 and "5" are one customer (tostring(id)); "#x" and "x", "\0a" and "#\0a" are not
    local list = all('{"data":[{"id":5},{"id":"5"},{"id":"#x"},{"id":"x"},{"id":"\\u0000a"},'
                     .. '{"id":"#\\u0000a"},{"id":"##"}],"metadata":{"totalCount":7}}')
    assert.same({ "5:integer", "#x:string", "x:string", "\0a:string", "#\0a:string", "##:string" },
                ids(list))
    -- without a usable id, by content: the same content once, "" as no id
    list = all('{"data":[{"name":"a"},{"name":"a"},{"id":""},{"id":"","x":null},{"id":true}],'
               .. '"metadata":{"totalCount":5}}')
    assert.equal(3, #list)
    assert.same({ name = "a", tenants = {} }, list[1])
    assert.same({ id = "", tenants = {} }, list[2])
    assert.same({ id = true, tenants = {} }, list[3])
  end)

  it("gives the pager the keys it would compute itself", function()
    for _, item in ipairs { { id = "a" }, { id = 5 }, { id = 5.5 }, { id = "#a" }, { id = "\0a" },
                            { id = "" }, { id = true }, { x = 1 }, "s", 3 } do
      local key = core.item_key(item)
      local id = type(item) == "table" and item.id
      if (type(id) == "string" and id ~= "") or type(id) == "number" then
        local text = tostring(id)
        local want = text:find("^[#%z]") and "#" .. text or text
        assert.equal(want, key)
      else
        assert.is_nil(key)
      end
    end
  end)

  it("refuses a decode that names no known shape", function()
    local c <close> = core.new { access_token = "x" }
    assert.error_matches(function()
      c:request { url = sb.url .. "/x", decode = "avepoint-v4" }
    end, "'decode' names no known answer shape")
  end)
end)
