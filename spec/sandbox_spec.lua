-- The sandbox itself, seen from outside: a child process spoken to with the curl command line.

local sandbox = require "spec.helpers.sandbox"
local cjson = require "cjson"
local monotime = require("cqueues").monotime

local ODATA_SCOPE = "partner.customers.read.all"
local V3_SCOPE = "elements.customers.read.all"
local V3 = "/partner/external/v3/general/customers"
local FORM = {["content-type"] = "application/x-www-form-urlencoded"}
local JSON = {["content-type"] = "application/json"}
local LABELS = {[0] = "N/A", "Working", "Failed", "Waiting for Configuration",
                "Multiple Issues Found", "Finished with Exception", "No Backup Update"}
local GUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local decode = sandbox.decode

local function elapsed_since(t0)
  return monotime() - t0
end

-- A token request body: the good credentials, with `over` replacing (false: dropping) fields.
local function token_body(sb, over)
  over = over or {}
  local good = {grant_type = "client_credentials", client_id = sb.client_id,
                client_secret = sb.client_secret, scope = V3_SCOPE}
  local parts = {}
  for _, name in ipairs{"grant_type", "client_id", "client_secret", "scope"} do
    local value = over[name]
    if value == nil then value = good[name] end
    if value then
      parts[#parts + 1] = name .. "=" .. value:gsub("%%", "%%25"):gsub(" ", "+")
    end
  end
  return table.concat(parts, "&")
end

local function token_request(sb, over)
  return sb:request{method = "POST", path = "/connect/token", headers = FORM, body = token_body(sb, over)}
end

local function has_any(s, needles)
  for _, needle in ipairs(needles) do
    if s:find(needle, 1, true) then return true end
  end
  return false
end


-- The log without the token requests.
local function api_log(sb)
  local out = {}
  for _, entry in ipairs(sb:log()) do
    if entry.path ~= "/connect/token" then out[#out + 1] = entry end
  end
  return out
end

local ids_of = require("spec.helpers.util").ids_of
local base64 = require("spec.helpers.util").base64

-- true when a v3 jobStatus value (any accepted form) names `code`
local function names_code(value, code)
  if type(value) == "number" then return value == code end
  if value == tostring(code) then return true end
  local v = value:lower()
  return v == LABELS[code]:lower() or (code == 6 and (v == "no backup updates"))
end

describe("sandbox", function()
  local sb

  lazy_setup(function()
    sb = sandbox.start{count = 30, seed = 7, token_ttl = 3600, odata_page_size = 10, v3_status = "mixed"}
  end)

  lazy_teardown(function()
    if sb then sb:stop() end
  end)

  before_each(function()
    sb:faults{}
    sb:clear_log()
  end)

  describe("POST /connect/token", function()
    it("issues an opaque bearer token for each of the two scopes", function()
      for _, scope in ipairs{ODATA_SCOPE, V3_SCOPE} do
        local res = token_request(sb, {scope = scope})
        assert.equals(200, res.status)
        assert.equals("no-store", res.headers["cache-control"])
        local body = decode(res.body)
        assert.equals("Bearer", body.token_type)
        assert.equals(3600, body.expires_in)
        assert.is_true(#body.access_token >= 32)
      end
      assert.not_equals(sb:token(V3_SCOPE), sb:token(V3_SCOPE))
    end)

    it("accepts HTTP Basic client authentication too", function()
      local basic = base64(sb.client_id .. ":" .. sb.client_secret)
      local res = sb:request{method = "POST", path = "/connect/token",
        headers = {["content-type"] = FORM["content-type"], authorization = "Basic " .. basic},
        body = "grant_type=client_credentials&scope=" .. ODATA_SCOPE}
      assert.equals(200, res.status)
    end)

    it("refuses a wrong secret or client id with invalid_client, never echoing the secret", function()
      for _, over in ipairs{{client_secret = "not-the-secret-4711"}, {client_id = "someone-else"},
                            {client_secret = false}} do
        local res = token_request(sb, over)
        assert.equals(400, res.status)
        assert.equals("invalid_client", decode(res.body).error)
        assert.is_string(decode(res.body).error_description)
        assert.is_nil(res.body:find("not-the-secret-4711", 1, true))
        assert.is_nil(res.body:find(sb.client_secret, 1, true))
      end
    end)

    it("answers unsupported_grant_type to any other grant", function()
      for _, grant in ipairs{"password", "authorization_code", false} do
        local res = token_request(sb, {grant_type = grant})
        assert.equals(400, res.status)
        assert.equals("unsupported_grant_type", decode(res.body).error)
      end
    end)

    it("answers invalid_scope unless exactly one known scope is asked for", function()
      for _, scope in ipairs{"x.y.z", ODATA_SCOPE .. " " .. V3_SCOPE, "", false} do
        local res = token_request(sb, {scope = scope})
        assert.equals(400, res.status)
        assert.equals("invalid_scope", decode(res.body).error)
      end
    end)

    it("answers invalid_request to a body that is not a form", function()
      local res = sb:request{method = "POST", path = "/connect/token", headers = JSON, body = "{}"}
      assert.equals(400, res.status)
      assert.equals("invalid_request", decode(res.body).error)
    end)
  end)

  describe("bearer tokens", function()
    local function assert_invalid_token(res)
      assert.equals(401, res.status)
      assert.equals('Bearer error="invalid_token"', res.headers["www-authenticate"])
      assert.same({error = "invalid_token"}, decode(res.body))
    end

    it("401s a request without a token or with an unknown one", function()
      for _, path in ipairs{"/partner/customers", V3} do
        assert_invalid_token(sb:request{path = path})
        assert_invalid_token(sb:request{path = path, token = "made-up-token"})
        assert_invalid_token(sb:request{path = path, headers = {authorization = "Basic eDp5"}})
      end
    end)

    it("401s every token once POST /_sandbox/revoke was called", function()
      local token = sb:token(V3_SCOPE)
      assert.equals(200, sb:request{path = V3, token = token}.status)
      assert.is_true(sb:revoke().revoked >= 1)
      assert_invalid_token(sb:request{path = V3, token = token})
      assert.equals(200, sb:request{path = V3, token = sb:token(V3_SCOPE)}.status)
    end)

    it("403s a valid token of the other scope", function()
      local res = sb:request{path = "/partner/customers", token = sb:token(V3_SCOPE)}
      assert.equals(403, res.status)
      assert.equals("insufficient_scope", decode(res.body).error)
      res = sb:request{path = V3, token = sb:token(ODATA_SCOPE)}
      assert.equals(403, res.status)
      res = sb:request{method = "POST", path = V3 .. "/batch", token = sb:token(ODATA_SCOPE)}
      assert.equals(403, res.status)
    end)
  end)

  describe("GET " .. V3, function()
    local token
    before_each(function() token = sb:token(V3_SCOPE) end)

    local function page(query)
      local res = sb:request{path = V3 .. (query and "?" .. query or ""), token = token}
      return res, res.status == 200 and decode(res.body) or nil
    end

    it("answers page 1 of 100 by default", function()
      local _, body = page()
      assert.same({pageIndex = 1, pageSize = 100, totalCount = 30}, body.metadata)
      assert.equals(30, #body.data)
    end)

    it("pages with pageIndex and pageSize, in the service's order", function()
      local seen = {}
      for index, expected in ipairs{12, 12, 6, 0} do
        local res, body = page("pageIndex=" .. index .. "&pageSize=12")
        assert.same({pageIndex = index, pageSize = 12, totalCount = 30}, body.metadata)
        assert.equals(expected, #body.data)
        if expected == 0 then assert.truthy(res.body:find('"data":[]', 1, true)) end
        for _, c in ipairs(body.data) do seen[#seen + 1] = c.id end
      end
      assert.same(ids_of(sb:customers()), seen)
    end)

    it("answers 400 to a paging value that is not an integer in range", function()
      for _, q in ipairs{"pageIndex=0", "pageIndex=-1", "pageIndex=abc", "pageIndex=1.5", "pageIndex=",
                         "pageSize=0", "pageSize=101", "pageSize=x", "pageSize=99999999999"} do
        local res = page(q)
        assert.equals(400, res.status, q)
        assert.equals("invalid_request", decode(res.body).error)
      end
      assert.equals(200, (page("pageSize=100")).status)
    end)

    it("sends every v3 field, nulls included, and mixes the jobStatus forms", function()
      local res, body = page()
      assert.truthy(res.body:find('"ownerEmail":null', 1, true))
      assert.truthy(res.body:find('"countryOrRegion":null', 1, true))
      assert.truthy(res.body:find('"name":null', 1, true))
      assert.truthy(res.body:find('"tenants":[]', 1, true))
      local raw = sb:customers()
      local forms = {}
      for i, c in ipairs(body.data) do
        assert.equals(raw[i].id, c.id)
        assert.is_number(c.managementMode)
        assert.is_table(c.tenants)
        assert.is_true(names_code(c.jobStatus, raw[i].jobStatus), tostring(c.jobStatus))
        local v = c.jobStatus
        local form = type(v) == "number" and "int" or v:match("^%d$") and "string"
          or v == LABELS[raw[i].jobStatus] and "label" or "variant"
        forms[form] = true
      end
      assert.same({int = true, string = true, label = true, variant = true}, forms)
      assert.truthy(res.body:find('"jobStatus":%d'))
    end)
  end)

  describe("POST " .. V3 .. "/batch", function()
    local token
    before_each(function() token = sb:token(V3_SCOPE) end)

    local function batch(body, query)
      local res = sb:request{method = "POST", path = V3 .. "/batch" .. (query or ""), token = token,
                             headers = JSON, body = body}
      return res, res.status == 200 and decode(res.body) or nil
    end

    it("answers like the GET form when the body is empty or {}", function()
      local get = decode(sb:request{path = V3 .. "?pageSize=7&pageIndex=2", token = token}.body)
      for _, body in ipairs{"", "{}", '{"customerIds":[]}'} do
        local _, answer = batch(body ~= "" and body or nil, "?pageSize=7&pageIndex=2")
        assert.same(get, answer)
      end
    end)

    it("selects the customerIds given, in the service's order", function()
      local ids = ids_of(sb:customers())
      local _, body = batch(cjson.encode{customerIds = {ids[9], ids[2], "00000000-0000-4000-8000-000000000000", ids[5]:upper()}})
      assert.same({pageIndex = 1, pageSize = 100, totalCount = 3}, body.metadata)
      assert.same({ids[2], ids[5], ids[9]}, ids_of(body.data))
    end)

    it("answers 400 to a body it cannot read", function()
      assert.equals(400, (batch("{not json")).status)
      assert.equals(400, (batch('{"customerIds":"abc"}')).status)
      assert.equals(400, (batch('{"customerIds":[1,2]}')).status)
    end)

    it("refuses a POST without /batch (onboarding) and marks it in the log", function()
      batch("{}")
      local res = sb:request{method = "POST", path = V3, token = token, headers = JSON, body = "{}"}
      assert.equals(400, res.status)
      assert.same({error = "onboarding_not_supported"}, decode(res.body))
      local log = api_log(sb)
      assert.equals(2, #log)
      assert.is_false(log[1].onboard_attempt)
      assert.is_true(log[2].onboard_attempt)
    end)
  end)

  describe("GET /partner/customers", function()
    it("answers OData pages linked by an absolute @odata.nextLink", function()
      local token = sb:token(ODATA_SCOPE)
      local url = sb.url .. "/partner/customers"
      local pages, customers = 0, {}
      while url do
        local res = sb:request{url = url, token = token}
        assert.equals(200, res.status)
        local body = decode(res.body)
        assert.equals(sb.url .. "/partner/$metadata#Customers", body["@odata.context"])
        for _, c in ipairs(body.value) do customers[#customers + 1] = c end
        url = body["@odata.nextLink"]
        local prefix = sb.url .. "/partner/customers?$skiptoken="
        if url then assert.equals(prefix, url:sub(1, #prefix)) end
        pages = pages + 1
      end
      assert.equals(3, pages)
      local raw = sb:customers()
      assert.same(ids_of(raw), ids_of(customers))
      for i, c in ipairs(customers) do
        assert.equals(LABELS[raw[i].jobStatus], c.jobStatus)
        assert.is_nil(c.tenants)
        assert.is_nil(c.managementMode)
        assert.equals(raw[i].ownerEmail, c.ownerEmail)
      end
    end)

    it("puts JSON null on the wire and answers 400 to a bad $skiptoken", function()
      local token = sb:token(ODATA_SCOPE)
      local raw = {}
      for _, q in ipairs{"", "?$skiptoken=736b69703a3130", "?$skiptoken=736b69703a3230"} do
        raw[#raw + 1] = sb:request{path = "/partner/customers" .. q, token = token}.body
      end
      raw = table.concat(raw)
      assert.truthy(raw:find('"ownerEmail":null', 1, true))
      assert.truthy(raw:find('"countryOrRegion":null', 1, true))
      assert.equals(400, sb:request{path = "/partner/customers?$skiptoken=zz", token = token}.status)
    end)
  end)

  describe("data set", function()
    it("holds every case a client must handle", function()
      local customers = sb:customers()
      assert.equals(30, #customers)
      local codes, modes, ids = {}, {}, {}
      local empty, several, null_name, no_email, no_country = false, false, false, false, false
      local scripts = {}
      for _, c in ipairs(customers) do
        assert.truthy(c.id:match(GUID), c.id)
        assert.equals(c.id:lower(), c.id)
        assert.is_nil(ids[c.id]); ids[c.id] = true
        codes[c.jobStatus] = true
        modes[c.managementMode] = true
        empty = empty or #c.tenants == 0
        several = several or #c.tenants > 1
        for _, t in ipairs(c.tenants) do
          assert.truthy(t.id:match(GUID))
          null_name = null_name or t.name == nil
        end
        no_email = no_email or c.ownerEmail == nil
        no_country = no_country or c.countryOrRegion == nil
        local org = c.organization
        if has_any(org, {"ä", "ö", "ü", "ß", "Ä", "Ö", "Ü"}) then scripts.german = true end
        if has_any(org, {"é", "è", "ê", "ô", "ç", "Â"}) then scripts.french = true end
        if org:find("[\227-\233][\128-\191][\128-\191]") then scripts.japanese = true end
        if org:find("[\206\207][\128-\191]") then scripts.greek = true end
      end
      for code = 0, 6 do assert.is_true(codes[code], "jobStatus " .. code) end
      for mode = 0, 2 do assert.is_true(modes[mode], "managementMode " .. mode) end
      assert.is_true(empty and several and null_name and no_email and no_country)
      assert.same({german = true, french = true, japanese = true, greek = true}, scripts)
      assert.same(customers, sb:customers())
    end)
  end)

  describe("other sandboxes", function()
    it("give the same data for the same seed and other data for another", function()
      local same = sandbox.start{count = 30, seed = 7, v3_status = "int"}
      local other = sandbox.start{count = 30, seed = 8, v3_status = "label"}
      local ok, err = pcall(function()
        assert.same(sb:customers(), same:customers())
        assert.not_same(ids_of(sb:customers()), ids_of(other:customers()))
        local int = same:request{path = V3, token = same:token(V3_SCOPE)}.body
        assert.equals(30, select(2, int:gsub('"jobStatus":%d[,}]', "")))
        local label = other:request{path = V3, token = other:token(V3_SCOPE)}.body
        local n = 0
        for v in label:gmatch('"jobStatus":"([^"]*)"') do
          n = n + 1
          assert.truthy(({["N/A"] = 1, Working = 1, Failed = 1, ["Waiting for Configuration"] = 1,
            ["Multiple Issues Found"] = 1, ["Finished with Exception"] = 1, ["No Backup Update"] = 1})[v], v)
        end
        assert.equals(30, n)
      end)
      same:stop()
      other:stop()
      assert(ok, err)
    end)

    it("expire tokens after token_ttl and send jobStatus as numeric strings", function()
      local short = sandbox.start{count = 5, token_ttl = 1, v3_status = "string"}
      local ok, err = pcall(function()
        local token = short:token(V3_SCOPE)
        local res = short:request{path = V3, token = token}
        assert.equals(200, res.status)
        assert.equals(5, select(2, res.body:gsub('"jobStatus":"%d"', "")))
        os.execute("sleep 1.1")
        res = short:request{path = V3, token = token}
        assert.equals(401, res.status)
        assert.same({error = "invalid_token"}, decode(res.body))
      end)
      short:stop()
      assert(ok, err)
    end)

    it("stop by themselves after the idle timeout", function()
      local idle = sandbox.start{count = 1, idle_timeout = 1}
      local t0 = monotime()
      assert.equals(0, idle:wait())
      local took = elapsed_since(t0)
      assert.is_true(took > 0.8 and took < 4, "exited after " .. took .. " s")
      assert.is_nil(sandbox.curl{url = idle.url .. "/_sandbox/log"}.status)
    end)

    it("write --port-file and a generated secret to --secret-file, never printing it", function()
      local port_file, secret_file = os.tmpname(), os.tmpname()
      local pipe, _, line = sandbox.spawn({"--port", "0", "--port-file", port_file, "--secret-file",
        secret_file, "--idle-timeout", "10", "--quiet"}, {PARTNERCUSTOMERS_SANDBOX_SECRET = ""})
      local url = line:match("^partnercustomers sandbox listening on (http://127%.0%.0%.1:%d+)$")
      local f = assert(io.open(port_file)); local port = f:read("a"); f:close()
      f = assert(io.open(secret_file)); local secret = f:read("a"); f:close()
      os.remove(port_file); os.remove(secret_file)
      assert.equals(url:match(":(%d+)$") .. "\n", port)
      secret = secret:match("^(%x+)\n$")
      assert.equals(64, #secret)
      local res = sandbox.curl{method = "POST", url = url .. "/connect/token", headers = FORM,
        body = "grant_type=client_credentials&client_id=sandbox-client&client_secret=" .. secret ..
               "&scope=" .. V3_SCOPE}
      assert.equals(200, res.status)
      assert.equals(200, sandbox.curl{method = "POST", url = url .. "/_sandbox/shutdown"}.status)
      assert.equals("", pipe:read("a"))
      assert.is_true((pipe:close()))
    end)
  end)

  describe("fault rules", function()
    local token
    before_each(function() token = sb:token(V3_SCOPE) end)

    local function v3(query)
      return sb:request{path = V3 .. (query or ""), token = token}
    end

    it("status: answers the status the given number of times, with Retry-After verbatim", function()
      sb:faults{{type = "status", status = 503, times = 2, path = "^/partner/", retry_after = 7}}
      for _ = 1, 2 do
        local res = v3()
        assert.equals(503, res.status)
        assert.equals("7", res.headers["retry-after"])
        assert.is_table(decode(res.body))
      end
      assert.equals(200, v3().status)
      assert.same({}, sb:admin("GET", "/_sandbox/faults"))
      local log = api_log(sb)
      assert.equals("status", log[1].fault)
      assert.is_nil(log[3].fault)
    end)

    it("status: sends an HTTP-date Retry-After and a custom body", function()
      local date = "Wed, 21 Oct 2015 07:28:00 GMT"
      sb:faults{{type = "status", status = 429, retry_after = date, body = "slow down",
                 content_type = "text/plain"}}
      local res = v3()
      assert.equals(429, res.status)
      assert.equals(date, res.headers["retry-after"])
      assert.equals("text/plain", res.headers["content-type"])
      assert.equals("slow down", res.body)
    end)

    it("match any non-admin path by default, the token endpoint included", function()
      sb:faults{{type = "status", status = 500}}
      assert.equals(500, token_request(sb).status)
      assert.equals(200, token_request(sb).status)
    end)

    it("honour method, path, after and times = -1, and show what is left", function()
      sb:faults{{type = "status", status = 502, method = "POST", path = "/batch$", after = 1, times = -1}}
      local function post() return sb:request{method = "POST", path = V3 .. "/batch", token = token} end
      assert.equals(200, v3().status)
      assert.equals(200, post().status)
      assert.equals(502, post().status)
      assert.equals(502, post().status)
      local left = sb:admin("GET", "/_sandbox/faults")
      assert.equals(1, #left)
      assert.equals(-1, left[1].times)
      assert.equals(3, left[1].seen)
    end)

    it("refuse a malformed rule list and keep the old one", function()
      sb:faults{{type = "drop", path = "^/nowhere$"}}
      for _, bad in ipairs{'[{"type":"nope"}]', '[{"type":"slow","dela":1}]', '[{"type":"status"}]',
                           '[{"type":"drop","path":"[a"}]', '[{"type":"drop","times":0}]', '{"a":1}', "[1"} do
        local res = sb:request{method = "PUT", path = "/_sandbox/faults", headers = JSON, body = bad}
        assert.equals(400, res.status, bad)
        assert.equals("invalid_rules", decode(res.body).error)
      end
      assert.equals("drop", sb:admin("GET", "/_sandbox/faults")[1].type)
    end)

    it("slow: delays the answer without holding up other requests", function()
      sb:faults{{type = "slow", delay = 0.8, path = "^/partner/customers$"}}
      local t0 = monotime()
      local slow = sb:request_start{path = "/partner/customers", token = sb:token(ODATA_SCOPE)}
      repeat
        local log = sb:log()
      until log[#log] and log[#log].fault == "slow" or elapsed_since(t0) > 3
      local t1 = monotime()
      assert.equals(200, v3().status)
      assert.is_true(elapsed_since(t1) < 0.5)
      local res = sandbox.curl_finish(slow)
      assert.equals(200, res.status)
      assert.is_true(elapsed_since(t0) >= 0.8)
    end)

    it("hang: never answers and closes the connection after max seconds", function()
      sb:faults{{type = "hang", max = 1}}
      local t0 = monotime()
      local res = v3()
      local took = elapsed_since(t0)
      assert.is_nil(res.status)
      assert.equals(52, res.exit) -- empty reply
      assert.is_true(took >= 0.9 and took < 3, "took " .. took)
      local log = api_log(sb)
      assert.equals("hang", log[1].fault)
      assert.is_nil(log[1].status)
    end)

    it("drop: closes the connection without a response", function()
      sb:faults{{type = "drop"}}
      local res = v3()
      assert.is_nil(res.status)
      assert.equals(52, res.exit)
      assert.equals(200, v3().status)
    end)

    it("malformed: 200 with a truncated JSON body", function()
      sb:faults{{type = "malformed"}}
      local res = v3()
      assert.equals(200, res.status)
      assert.truthy(res.headers["content-type"]:find("application/json", 1, true))
      assert.is_true(#res.body > 10)
      assert.is_false((pcall(cjson.decode, res.body)))
    end)

    it("html: 200 with an HTML page", function()
      sb:faults{{type = "html"}}
      local res = v3()
      assert.equals(200, res.status)
      assert.truthy(res.headers["content-type"]:find("text/html", 1, true))
      assert.truthy(res.body:find("^<!DOCTYPE html>"))
    end)

    it("large: 200 with a JSON body of about the given size", function()
      sb:faults{{type = "large", bytes = 300000}}
      local res = v3()
      assert.equals(200, res.status)
      assert.is_true(math.abs(#res.body - 300000) < 2100, #res.body)
      assert.is_string(cjson.decode(res.body)[1])
    end)

    it("gzip_bomb: a small gzip body that inflates to the given size", function()
      sb:faults{{type = "gzip_bomb", bytes = 2000000, times = 2}}
      local res = v3()
      assert.equals(200, res.status)
      assert.equals("gzip", res.headers["content-encoding"])
      assert.is_true(#res.body < 20000)
      res = sb:request{path = V3, token = token, compressed = true}
      assert.equals(2000000, #res.body)
    end)

    it("repeat_page: answers page 1's data whatever page is asked, leaving the token call alone", function()
      sb:faults{{type = "repeat_page", times = -1}}
      local fresh = sb:token(V3_SCOPE)
      local p1 = decode(sb:request{path = V3 .. "?pageSize=10", token = fresh}.body)
      local p2 = decode(sb:request{method = "POST", path = V3 .. "/batch?pageIndex=2&pageSize=10", token = fresh}.body)
      assert.same(p1.data, p2.data)
      assert.same({pageIndex = 2, pageSize = 10, totalCount = 30}, p2.metadata)
    end)

    it("wrong_total: lies about totalCount", function()
      sb:faults{{type = "wrong_total", total = 1000}}
      local body = decode(v3("?pageSize=10").body)
      assert.equals(1000, body.metadata.totalCount)
      assert.equals(10, #body.data)
    end)

    it("next_link: sends the given @odata.nextLink", function()
      local link = "http://elsewhere.example/partner/customers?$skiptoken=abc"
      sb:faults{{type = "next_link", link = link}}
      local body = decode(sb:request{path = "/partner/customers", token = sb:token(ODATA_SCOPE)}.body)
      assert.equals(link, body["@odata.nextLink"])
    end)

    it("expire_token: 401s as if the token had expired; a new token works", function()
      sb:faults{{type = "expire_token"}}
      local res = v3()
      assert.equals(401, res.status)
      assert.same({error = "invalid_token"}, decode(res.body))
      assert.equals(401, v3().status) -- the token really is expired now
      assert.equals(200, sb:request{path = V3, token = sb:token(V3_SCOPE)}.status)
      assert.equals("expire_token", api_log(sb)[1].fault)
    end)
  end)

  describe("request log", function()
    it("records requests without secrets or bearer tokens", function()
      local token = sb:token(V3_SCOPE)
      sb:request{path = V3 .. "?pageIndex=1&pageSize=5", token = token, headers = {["x-custom"] = "Yes"}}
      sb:request{path = V3, token = "made-up-token"}
      sb:request{method = "POST", path = "/connect/token",
        headers = {["content-type"] = FORM["content-type"], authorization = "Basic c2VjcmV0OnNlY3JldA=="},
        body = "grant_type=client_credentials&scope=" .. V3_SCOPE}
      local raw = sb:request{path = "/_sandbox/log"}.body
      assert.is_nil(raw:find(sb.client_secret, 1, true))
      assert.is_nil(raw:find(token, 1, true))
      assert.is_nil(raw:find("made-up-token", 1, true))
      assert.is_nil(raw:find("c2VjcmV0OnNlY3JldA==", 1, true))
      local log = decode(raw)
      assert.equals(4, #log) -- admin calls are not logged
      local issue, get, unknown, basic = log[1], log[2], log[3], log[4]
      assert.equals("POST", issue.method)
      assert.equals("/connect/token", issue.path)
      assert.truthy(issue.body:find("client_secret=[redacted]", 1, true))
      assert.truthy(issue.body:find("client_id=" .. sb.client_id, 1, true))
      assert.equals(200, issue.status)
      assert.equals("GET", get.method)
      assert.equals("pageIndex=1&pageSize=5", get.query)
      assert.truthy(get.token:match("^t%d+$"))
      assert.equals("Bearer " .. get.token, get.headers.authorization)
      assert.equals("Yes", get.headers["x-custom"])
      assert.is_false(get.onboard_attempt)
      assert.is_nil(unknown.token)
      assert.equals("Bearer [unknown]", unknown.headers.authorization)
      assert.equals("Basic [redacted]", basic.headers.authorization)
      sb:clear_log()
      assert.same({}, sb:log())
    end)
  end)

  describe("process", function()
    it("listens on 127.0.0.1 only", function()
      assert.truthy(sb.url:match("^http://127%.0%.0%.1:%d+$"))
      for _, host in ipairs{"127.0.0.2", "[::1]"} do
        local res = sandbox.curl{url = "http://" .. host .. ":" .. sb.port .. "/_sandbox/log", max_time = 2}
        assert.is_nil(res.status)
        assert.equals(7, res.exit) -- connection refused
      end
    end)

    it("answers unknown paths with a JSON 404", function()
      local res = sb:request{path = "/partner/nothing"}
      assert.equals(404, res.status)
      assert.equals("not_found", decode(res.body).error)
    end)

    it("loads as a module without starting anything or touching globals", function()
      local before = {}
      for k in pairs(_G) do before[k] = true end
      package.loaded["partnercustomers.sandbox"] = nil
      local mod = require "partnercustomers.sandbox"
      assert.is_function(mod.run)
      assert.is_function(mod.main)
      assert.is_nil(package.loaded["partnercustomers.sandbox.server"])
      for k in pairs(_G) do assert.is_true(before[k], "new global " .. tostring(k)) end
    end)

    it("main: --help gives 0, an unknown or bad argument gives 2", function()
      local mod = require "partnercustomers.sandbox"
      local written = {}
      local capture = {write = function(self, ...) for _, s in ipairs{...} do written[#written + 1] = s end return self end}
      local real_out, real_err = io.stdout, io.stderr
      io.stdout, io.stderr = capture, capture
      local codes = {mod.main{"--help"}, mod.main{"--bogus"}, mod.main{"--port"}, mod.main{"--count", "many"},
                     mod.main{"--v3-status", "roman"}}
      io.stdout, io.stderr = real_out, real_err
      assert.same({0, 2, 2, 2, 2}, codes)
      local text = table.concat(written)
      assert.truthy(text:find("usage: partnercustomers sandbox", 1, true))
      assert.truthy(text:find("unknown argument: --bogus", 1, true))
    end)
  end)
end)
