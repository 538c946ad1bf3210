-- The sandbox's Partner Center side, seen from outside with the curl command line: the Entra-style
-- token endpoints, refresh-token rotation, the organization and customer-list endpoints, paging
-- with the continuation header, its faults, scope separation and log redaction.

local sandbox = require "spec.helpers.sandbox"
local cjson = require "cjson"

local decode = sandbox.decode
local FORM = {["content-type"] = "application/x-www-form-urlencoded"}
local AUDIENCE = "https://api.partnercenter.microsoft.com"
local SCOPE_V2 = AUDIENCE .. "/.default"
local V3 = "/partner/external/v3/general/customers"
local GUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local UNKNOWN_ID = "00000000-1111-4222-8333-444444444444"

local function form_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- A token request body from a list of {name, value} pairs (kept in order, so a name may repeat).
local function form(pairs_list)
  local parts = {}
  for _, p in ipairs(pairs_list) do
    parts[#parts + 1] = p[1] .. "=" .. form_encode(p[2])
  end
  return table.concat(parts, "&")
end

-- The good fields of a token request for endpoint version `v` (1 or 2), `over` replacing
-- (false: dropping) fields; extra fields in `over` are appended.
local function token_fields(sb, v, over)
  over = over or {}
  local names = {"grant_type", "client_id", "client_secret", v == 2 and "scope" or "resource", "refresh_token"}
  local good = {grant_type = "client_credentials", client_id = sb.client_id, client_secret = sb.client_secret,
                scope = SCOPE_V2, resource = AUDIENCE}
  local out, seen = {}, {}
  for _, name in ipairs(names) do
    seen[name] = true
    local value = over[name]
    if value == nil then value = good[name] end
    if value then out[#out + 1] = {name, value} end
  end
  for name, value in pairs(over) do
    if not seen[name] and value then out[#out + 1] = {name, value} end
  end
  return out
end

local function token_request(sb, v, over, headers)
  local h = {["content-type"] = FORM["content-type"]}
  for k, value in pairs(headers or {}) do h[k] = value end
  return sb:request{method = "POST", url = v == 2 and sb.pc_token_url_v2 or sb.pc_token_url_v1,
                    headers = h, body = form(token_fields(sb, v, over))}
end

local function redeem(sb, v, refresh_token, over)
  over = over or {}
  over.grant_type, over.refresh_token = "refresh_token", refresh_token
  return token_request(sb, v, over)
end

-- Checks the shape every Entra error has, and returns the decoded body.
local function assert_entra_error(res, status, code, aadsts)
  assert.equals(status, res.status, res.body)
  local body = decode(res.body)
  assert.equals(code, body.error)
  assert.same({aadsts}, body.error_codes)
  assert.truthy(body.error_description:find("^AADSTS" .. aadsts .. ": "), body.error_description)
  assert.matches(GUID, body.trace_id)
  assert.matches(GUID, body.correlation_id)
  assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%dZ$", body.timestamp)
  assert.truthy(body.error_description:find("Trace ID: " .. body.trace_id, 1, true))
  assert.equals("no-store, no-cache", res.headers["cache-control"])
  return body
end

-- A Partner Center error body: {code, description, data = [], source = "PartnerFD"}.
local function assert_pc_error(res, status, code)
  assert.equals(status, res.status, res.body)
  assert.truthy(res.body:find('"data":[]', 1, true), res.body)
  local body = decode(res.body)
  assert.equals(code, body.code)
  assert.equals(math.type(code) and "number" or "string", type(body.code))
  assert.is_string(body.description)
  assert.equals("PartnerFD", body.source)
  return body
end

-- Every tenant id of the AvePoint customers, in the order Partner Center lists them.
local function tenant_ids(sb)
  local ids = {}
  for _, c in ipairs(sb:customers()) do
    for _, t in ipairs(c.tenants or {}) do ids[#ids + 1] = t.id end
  end
  return ids
end

local function org_path(id)
  return "/v1/customers/" .. id .. "/organization"
end

describe("sandbox: Partner Center", function()
  local sb, tenants

  lazy_setup(function()
    sb = sandbox.start{count = 30, seed = 7}
    tenants = tenant_ids(sb)
  end)

  lazy_teardown(function()
    if sb then sb:stop() end
  end)

  before_each(function()
    sb:faults{}
    sb:clear_log()
  end)

  describe("Entra-style token endpoints", function()
    it("v2: client_credentials with scope, numbers as numbers", function()
      local res = token_request(sb, 2)
      assert.equals(200, res.status, res.body)
      assert.equals("no-store, no-cache", res.headers["cache-control"])
      assert.truthy(res.body:find('"expires_in":3600[,}]'))
      local body = decode(res.body)
      assert.equals("Bearer", body.token_type)
      assert.equals("integer", math.type(body.expires_in))
      assert.equals(3600, body.ext_expires_in)
      assert.is_nil(body.refresh_token)
      assert.is_true(#body.access_token >= 32)
      assert.equals(200, sb:request{path = org_path(tenants[1]), token = body.access_token}.status)
    end)

    it("v1: client_credentials with resource, numbers as strings", function()
      local res = token_request(sb, 1)
      assert.equals(200, res.status, res.body)
      local body = decode(res.body)
      assert.equals("3600", body.expires_in)
      assert.equals("3600", body.ext_expires_in)
      assert.matches("^%d+$", body.expires_on)
      assert.matches("^%d+$", body.not_before)
      assert.equals(3600, tonumber(body.expires_on) - tonumber(body.not_before))
      assert.equals(AUDIENCE, body.resource)
      assert.is_nil(body.refresh_token)
      assert.equals(200, sb:request{path = org_path(tenants[1]), token = body.access_token}.status)
    end)

    it("accept the partner tenant in any case and no other tenant (AADSTS90002)", function()
      local upper = sb.url .. "/" .. sb.pc_tenant:upper() .. "/oauth2/v2.0/token"
      local res = sb:request{method = "POST", url = upper, headers = FORM, body = form(token_fields(sb, 2))}
      assert.equals(200, res.status)
      for _, tenant in ipairs{"contoso.onmicrosoft.com", "common", "00000000-0000-0000-0000-000000000000"} do
        for _, path in ipairs{"/oauth2/token", "/oauth2/v2.0/token"} do
          res = sb:request{method = "POST", url = sb.url .. "/" .. tenant .. path, headers = FORM,
                           body = form(token_fields(sb, path:find("v2") and 2 or 1))}
          assert_entra_error(res, 400, "invalid_request", 90002)
        end
      end
    end)

    it("refuse a wrong or missing secret with 401 invalid_client, never echoing it", function()
      local wrong = "not-the-secret-0815"
      for v = 1, 2 do
        local res = token_request(sb, v, {client_secret = wrong})
        assert_entra_error(res, 401, "invalid_client", 7000215)
        assert.is_nil(res.body:find(wrong, 1, true))
        assert.is_nil(res.body:find(sb.client_secret, 1, true))
        assert_entra_error(token_request(sb, v, {client_secret = false}), 401, "invalid_client", 7000218)
      end
    end)

    it("answer invalid_scope (AADSTS70011) to a wrong scope or resource", function()
      assert_entra_error(token_request(sb, 2, {scope = "https://graph.microsoft.com/.default"}), 400, "invalid_scope", 70011)
      assert_entra_error(token_request(sb, 2, {scope = false}), 400, "invalid_scope", 70011)
      assert_entra_error(token_request(sb, 2, {scope = SCOPE_V2 .. " offline_access"}), 400, "invalid_scope", 70011)
      assert_entra_error(token_request(sb, 1, {resource = "https://graph.windows.net"}), 400, "invalid_scope", 70011)
      assert_entra_error(token_request(sb, 1, {resource = false}), 400, "invalid_scope", 70011)
      -- the v2 endpoint has no resource parameter
      assert_entra_error(token_request(sb, 2, {resource = AUDIENCE}), 400, "invalid_request", 901002)
    end)

    it("answer the other request errors in Entra's shape too", function()
      assert_entra_error(token_request(sb, 2, {grant_type = "password"}), 400, "unsupported_grant_type", 70003)
      assert_entra_error(token_request(sb, 2, {grant_type = false}), 400, "invalid_request", 900144)
      assert_entra_error(token_request(sb, 2, {client_id = false}), 400, "invalid_request", 900144)
      assert_entra_error(token_request(sb, 1, {client_id = "someone-else"}), 400, "unauthorized_client", 700016)
      local twice = form(token_fields(sb, 2)) .. "&scope=" .. form_encode(SCOPE_V2)
      assert_entra_error(sb:request{method = "POST", url = sb.pc_token_url_v2, headers = FORM, body = twice},
        400, "invalid_request", 900144)
      -- a body that is not a form reads as an empty one
      assert_entra_error(sb:request{method = "POST", url = sb.pc_token_url_v2, body = "{}",
        headers = {["content-type"] = "application/json"}}, 400, "invalid_request", 900144)
      local res = sb:request{url = sb.pc_token_url_v2}
      assert.equals(405, res.status)
      assert.equals("POST", res.headers.allow)
    end)

    it("use the client-request-id sent as the error's correlation_id", function()
      local id = "5e0f6c2a-8d3b-4c1e-9f7a-2b4d6e8f0a1c"
      local res = token_request(sb, 2, {client_secret = "wrong"}, {["client-request-id"] = id})
      assert.equals(id, assert_entra_error(res, 401, "invalid_client", 7000215).correlation_id)
      assert.equals(id, res.headers["client-request-id"])
    end)
  end)

  describe("refresh tokens", function()
    it("rotate: each redemption returns a new one and the redeemed one is refused after", function()
      local first = sb:refresh_token()
      assert.is_true(#first >= 40)
      local res = redeem(sb, 2, first)
      assert.equals(200, res.status, res.body)
      local body = decode(res.body)
      assert.equals(3600, body.expires_in)
      assert.is_string(body.scope)
      local second = body.refresh_token
      assert.is_string(second)
      assert.not_equals(first, second)
      assert.equals(200, sb:request{path = org_path(tenants[1]), token = body.access_token}.status)
      -- the redeemed one is used up
      assert_entra_error(redeem(sb, 2, first), 400, "invalid_grant", 70008)
      -- the new one works once, on the v1 endpoint too (strings there)
      res = redeem(sb, 1, second)
      assert.equals(200, res.status, res.body)
      body = decode(res.body)
      assert.equals("3600", body.expires_in)
      assert.not_equals(second, body.refresh_token)
      assert_entra_error(redeem(sb, 1, second), 400, "invalid_grant", 70008)
    end)

    it("refuse an unknown or revoked one; a failed redemption does not use it up", function()
      assert_entra_error(redeem(sb, 2, "0.Amade-up"), 400, "invalid_grant", 70008)
      assert_entra_error(redeem(sb, 2, false), 400, "invalid_request", 900144)
      local rt = sb:refresh_token()
      assert_entra_error(redeem(sb, 2, rt, {scope = "https://graph.microsoft.com/.default"}), 400, "invalid_scope", 70011)
      assert_entra_error(redeem(sb, 2, rt, {client_secret = "wrong"}), 401, "invalid_client", 7000215)
      -- without a secret (a public client) it is fine; offline_access may come along on v2
      local res = redeem(sb, 2, rt, {client_secret = false, scope = SCOPE_V2 .. " offline_access"})
      assert.equals(200, res.status, res.body)
      local newest = decode(res.body).refresh_token
      -- /_sandbox/revoke kills access tokens only; revoke-refresh-tokens kills refresh tokens
      sb:revoke()
      assert.is_true(sb:revoke_refresh_tokens().revoked >= 1)
      assert_entra_error(redeem(sb, 2, newest), 400, "invalid_grant", 70008)
      assert.equals(200, redeem(sb, 2, sb:refresh_token()).status)
    end)
  end)

  describe("GET /v1/customers/{id}/organization", function()
    local token
    before_each(function() token = sb:pc_token() end)

    it("answers every tenant: an array of one organization, or 403 for every sixth", function()
      local orgs = sb:pc_organizations()
      local n, forbidden = 0, 0
      for k, id in ipairs(tenants) do
        local res = sb:request{path = org_path(id), token = token}
        n = n + 1
        if k % 6 == 0 then
          forbidden = forbidden + 1
          assert_pc_error(res, 403, 3000)
          assert.same({status = 403}, orgs[id])
        else
          assert.equals(200, res.status, res.body)
          local list = decode(res.body)
          assert.equals(1, #list)
          assert.same(orgs[id].organization, list[1])
          assert.equals(200, orgs[id].status)
          for _, field in ipairs{"street", "countryLetterCode", "postalCode", "city", "state", "displayName"} do
            assert.is_string(list[1][field], field)
          end
        end
      end
      assert.equals(28, #tenants) -- with count 30, seed 7
      assert.equals(#tenants // 6, forbidden)
      local count = 0
      for _ in pairs(orgs) do count = count + 1 end
      assert.equals(#tenants, count)
    end)

    it("has null, absent and several technicalNotificationMails, and non-ASCII names and cities", function()
      for k = 1, 5 do
        local raw = sb:request{path = org_path(tenants[k]), token = token}.body
        local org = decode(raw)[1]
        if k == 2 then
          assert.truthy(raw:find('"technicalNotificationMails":null', 1, true))
        elseif k == 4 then
          assert.is_nil(raw:find("technicalNotificationMails", 1, true))
        else
          assert.equals(k == 5 and 2 or 1, #org.technicalNotificationMails)
          assert.matches("@.+%.onmicrosoft%.com$", org.technicalNotificationMails[1])
        end
        if k == 3 then
          assert.truthy(org.displayName:find("[\128-\255]"), org.displayName)
          assert.truthy(org.city:find("[\128-\255]"), org.city)
        end
      end
    end)

    it("answers 404 for an unknown GUID and 400 for a non-GUID, in Partner Center's shape", function()
      local body = assert_pc_error(sb:request{path = org_path(UNKNOWN_ID), token = token}, 404, "600008")
      assert.truthy(body.description:find(UNKNOWN_ID, 1, true))
      for _, id in ipairs{"not-a-guid", "%7B" .. tenants[1] .. "%7D", tenants[1] .. "0"} do
        assert_pc_error(sb:request{path = org_path(id), token = token}, 400, 2001)
      end
      -- upper-case GUIDs are the same customer
      assert.equals(200, sb:request{path = org_path(tenants[1]:upper()), token = token}.status)
    end)

    it("echoes MS-RequestId and MS-CorrelationId and adds MS-CV, on errors too", function()
      local rid, cid = "74ca1db9-0000-4000-8000-a16433b0542b", "a176c585-0000-4000-8000-67a6deb45cd9"
      for _, path in ipairs{org_path(tenants[1]), org_path(tenants[6]), org_path(UNKNOWN_ID), org_path("x")} do
        local res = sb:request{path = path, token = token,
                               headers = {["MS-RequestId"] = rid, ["MS-CorrelationId"] = cid}}
        assert.equals(rid, res.headers["ms-requestid"])
        assert.equals(cid, res.headers["ms-correlationid"])
        assert.matches("^[%w+/=]+%.0$", res.headers["ms-cv"])
      end
      -- without them the sandbox makes its own
      local res = sb:request{path = org_path(tenants[1]), token = "not-a-token"}
      assert_pc_error(res, 401, "900401")
      assert.matches(GUID, res.headers["ms-requestid"])
      assert.matches(GUID, res.headers["ms-correlationid"])
      assert.is_string(res.headers["ms-cv"])
      assert.equals("GET", sb:request{method = "POST", path = org_path(tenants[1]), token = token}.headers.allow)
    end)
  end)

  describe("GET /v1/customers", function()
    local token
    before_each(function() token = sb:pc_token() end)

    -- Follows links.next as a careful client does: the uri against the host, with its headers.
    local function list_all(size, headers)
      local ids, pages = {}, {}
      local path, extra = "/v1/customers?size=" .. size, {}
      while path do
        local h = {}
        for k, v in pairs(headers or {}) do h[k] = v end
        for k, v in pairs(extra) do h[k] = v end
        local res = sb:request{path = path, token = token, headers = h}
        assert.equals(200, res.status, res.body)
        local body = decode(res.body)
        pages[#pages + 1] = body
        assert.equals(#body.items, body.totalCount)
        assert.same({objectType = "Collection"}, body.attributes)
        for _, item in ipairs(body.items) do ids[#ids + 1] = item.id end
        local nxt = body.links.next
        path, extra = nil, {}
        if nxt then
          assert.equals("/v1/customers?size=" .. size, nxt.uri) -- /v1 already in it
          assert.equals("GET", nxt.method)
          assert.equals(1, #nxt.headers)
          assert.equals("MS-ContinuationToken", nxt.headers[1].key)
          path = nxt.uri
          extra[nxt.headers[1].key] = nxt.headers[1].value
        end
      end
      return ids, pages
    end

    it("pages through every tenant with the continuation header", function()
      local ids, pages = list_all(7)
      assert.same(tenants, ids)
      assert.equals((#tenants + 6) // 7, #pages)
      for i = 1, #pages - 1 do assert.equals(7, pages[i].totalCount) end
      assert.is_nil(pages[#pages].links.next)
      local item = pages[1].items[1]
      assert.equals(item.id, item.companyProfile.tenantId)
      assert.matches("%.onmicrosoft%.com$", item.companyProfile.domain)
      assert.is_string(item.companyProfile.companyName)
      assert.equals("reseller", item.relationshipToPartner)
      -- the same with a correlation id on every page, and in one page of the default size 200
      assert.same(tenants, (list_all(10, {["MS-CorrelationId"] = "c0ffee00-0000-4000-8000-000000000001"})))
      local one = decode(sb:request{path = "/v1/customers", token = token}.body)
      assert.equals(#tenants, one.totalCount)
      assert.is_nil(one.links.next)
    end)

    it("answers 404 to a client that puts /v1 in front of the next uri again", function()
      local body = decode(sb:request{path = "/v1/customers?size=5", token = token}.body)
      local res = sb:request{path = "/v1" .. body.links.next.uri, token = token,
                             headers = {[body.links.next.headers[1].key] = body.links.next.headers[1].value}}
      assert.equals(404, res.status)
    end)

    it("starts over without a continuation token, and answers 400 to a bad one", function()
      local first = decode(sb:request{path = "/v1/customers?size=5", token = token}.body)
      local nxt = first.links.next
      -- following the next uri without its header is a first request again, as on the live service
      local again = decode(sb:request{path = nxt.uri, token = token}.body)
      assert.same(first.items, again.items)
      -- a continuation token can be sent again (a retry) and gives the same page
      local h = {[nxt.headers[1].key] = nxt.headers[1].value}
      local p2 = sb:request{path = nxt.uri, token = token, headers = h}
      assert.equals(200, p2.status)
      assert.equals(p2.body, sb:request{path = nxt.uri, token = token, headers = h}.body)
      assert.equals(tenants[6], decode(p2.body).items[1].id)
      -- made-up, stale (another sandbox's) or out-of-range tokens
      for _, bad in ipairs{"garbage", "cGMtY29udGludWF0aW9uOmRlYWRiZWVmOjU=", ("A"):rep(300)} do
        assert_pc_error(sb:request{path = nxt.uri, token = token,
                                   headers = {["MS-ContinuationToken"] = bad}}, 400, 2003)
      end
    end)

    it("answers 400 to a bad size", function()
      for _, size in ipairs{"0", "501", "abc", "1.5", ""} do
        assert_pc_error(sb:request{path = "/v1/customers?size=" .. size, token = token}, 400, 2002)
      end
      local res = sb:request{path = "/v1/customers?size=500", token = token}
      assert.equals(200, res.status)
      assert.equals(#tenants, decode(res.body).totalCount)
    end)
  end)

  describe("faults", function()
    it("pc_next: puts the given uri in links.next, keeping the header; on the last page too", function()
      local token = sb:pc_token()
      local elsewhere = "http://elsewhere.example/v1/customers?size=5"
      sb:faults{{type = "pc_next", uri = elsewhere, times = 2}}
      local body = decode(sb:request{path = "/v1/customers?size=5", token = token}.body)
      assert.equals(elsewhere, body.links.next.uri)
      assert.equals("MS-ContinuationToken", body.links.next.headers[1].key)
      -- the last page gets a next link that leads to itself
      local last = decode(sb:request{path = "/v1/customers?size=500", token = token}.body)
      assert.equals(elsewhere, last.links.next.uri)
      local h = {[last.links.next.headers[1].key] = last.links.next.headers[1].value}
      local same = decode(sb:request{path = "/v1/customers?size=500", token = token, headers = h}.body)
      assert.same(last.items, same.items)
      assert.is_nil(same.links.next) -- the rule is used up
      -- it never matches the organization endpoint
      sb:faults{{type = "pc_next", uri = elsewhere}}
      assert.equals(200, sb:request{path = org_path(tenants[1]), token = token}.status)
      assert.equals(1, #sb:admin("GET", "/_sandbox/faults"))
    end)

    it("generic faults and expire_token apply to the Partner Center paths", function()
      local token = sb:pc_token()
      sb:faults{{type = "status", status = 503, path = "^/v1/", retry_after = 2}}
      local res = sb:request{path = org_path(tenants[1]), token = token, headers = {["MS-RequestId"] = "r-1"}}
      assert.equals(503, res.status)
      assert.equals("2", res.headers["retry-after"])
      assert.equals("r-1", res.headers["ms-requestid"])
      sb:faults{{type = "status", status = 500, path = "/oauth2/"}}
      assert.equals(500, token_request(sb, 2).status)
      sb:faults{{type = "expire_token"}}
      assert_pc_error(sb:request{path = "/v1/customers", token = token}, 401, "900401")
      assert.equals(401, sb:request{path = org_path(tenants[1]), token = token}.status)
      assert.equals(200, sb:request{path = org_path(tenants[1]), token = sb:pc_token()}.status)
    end)
  end)

  describe("scope separation", function()
    it("refuses Partner Center tokens on AvePoint endpoints and AvePoint tokens on /v1 (401)", function()
      local pc = sb:pc_token()
      for _, path in ipairs{"/partner/customers", V3} do
        local res = sb:request{path = path, token = pc}
        assert.equals(401, res.status)
        assert.same({error = "invalid_token"}, decode(res.body))
      end
      local ave = sb:token("elements.customers.read.all")
      assert_pc_error(sb:request{path = "/v1/customers", token = ave}, 401, "900420")
      assert_pc_error(sb:request{path = org_path(tenants[1]), token = ave}, 401, "900420")
      -- and the AvePoint token endpoint does not issue Partner Center tokens
      local res = sb:request{method = "POST", path = "/connect/token", headers = FORM,
        body = "grant_type=client_credentials&client_id=" .. sb.client_id .. "&client_secret=" ..
               sb.client_secret .. "&scope=" .. form_encode(SCOPE_V2)}
      assert.equals(400, res.status)
      assert.equals("invalid_scope", decode(res.body).error)
    end)
  end)

  describe("request log", function()
    it("keeps the Partner Center headers and redacts secrets, refresh and access tokens", function()
      local rt = sb:refresh_token()
      local res = redeem(sb, 2, rt)
      local body = decode(res.body)
      local token, next_rt = body.access_token, body.refresh_token
      local pc_headers = {["MS-RequestId"] = "req-1", ["MS-CorrelationId"] = "corr-1",
                          ["MS-Contract-Version"] = "v1", ["X-Locale"] = "de-DE"}
      sb:request{path = org_path(tenants[1]), token = token, headers = pc_headers}
      -- a refresh token in a body that does not claim to be a form is redacted as well
      sb:request{method = "POST", url = sb.pc_token_url_v1, headers = {["content-type"] = "text/plain"},
                 body = "grant_type=refresh_token&refresh_token=" .. next_rt .. "&client_secret=" .. sb.client_secret}
      local raw = sb:request{path = "/_sandbox/log"}.body
      for _, secret in ipairs{sb.client_secret, rt, next_rt, token} do
        assert.is_nil(raw:find(secret, 1, true))
      end
      local log = decode(raw)
      assert.equals(3, #log)
      assert.truthy(log[1].body:find("client_secret=[redacted]", 1, true))
      assert.truthy(log[1].body:find("refresh_token=[redacted]", 1, true))
      assert.truthy(log[1].body:find("scope=" .. form_encode(SCOPE_V2), 1, true))
      assert.equals(200, log[1].status)
      local get = log[2]
      assert.equals("req-1", get.headers["ms-requestid"])
      assert.equals("corr-1", get.headers["ms-correlationid"])
      assert.equals("v1", get.headers["ms-contract-version"])
      assert.equals("de-DE", get.headers["x-locale"])
      assert.matches("^t%d+$", get.token)
      assert.equals("Bearer " .. get.token, get.headers.authorization)
      assert.equals("refresh_token=[redacted]", log[3].body:match("refresh_token=[^&]*"))
    end)
  end)

  describe("--pc-tenant", function()
    it("sets the tenant the token endpoints accept", function()
      local other = sandbox.start{count = 6, seed = 2, pc_tenant = "Contoso-Partner.onmicrosoft.com"}
      local ok, err = pcall(function()
        assert.equals(other.url .. "/Contoso-Partner.onmicrosoft.com/oauth2/v2.0/token", other.pc_token_url_v2)
        assert.is_string(other:pc_token())
        local res = other:request{method = "POST", url = other.url .. "/contoso-partner.onmicrosoft.com/oauth2/token",
                                  headers = FORM, body = form(token_fields(other, 1))}
        assert.equals(200, res.status)
        res = other:request{method = "POST", url = other.url .. "/sandbox-partner.onmicrosoft.com/oauth2/token",
                            headers = FORM, body = form(token_fields(other, 1))}
        assert_entra_error(res, 400, "invalid_request", 90002)
      end)
      other:stop()
      assert(ok, err)
    end)
  end)
end)
