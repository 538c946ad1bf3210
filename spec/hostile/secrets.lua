-- Peers that echo secrets back: the client secret and the refresh token from a token endpoint,
-- the issued access token from an API, in bodies and in headers. The runner checks every case
-- for every secret; these make sure that there is one to find.
local R = require "spec.helpers.rawpeer"
local C = require "spec.hostile.common"

local S, T, F = C.SECRET, C.TOKEN, C.FIXED
local FORM = ("grant_type=client_credentials&client_id=%s&client_secret=%s&scope=things.read"):format(C.CLIENT_ID, S)

local function answer(status, headers, body) return { R.send(R.response(status, headers, body)) } end
local function json(status, body, headers) return { R.json(status, body, headers) } end

-- err.body holds no piece of `secret` of 12 characters or more (a token cut at the 2 KiB limit).
local function no_piece(secret)
  return function(_, _, err)
    local body = err and err.body or ""
    for i = 1, #secret - 11 do
      if body:find(secret:sub(i, i + 11), 1, true) then
        C.fail("err.body holds a piece of a secret: %q", secret:sub(i, i + 11))
      end
    end
  end
end

local TOKEN_SIDE = {
  { "error_description quoting the secret",
    json(401, ('{"error":"invalid_client","error_description":"secret %s is wrong"}'):format(S)),
    { kind = "auth", status = 401, code = "invalid_client" } },
  { "error that is the secret", json(400, ('{"error":"%s"}'):format(S)), { kind = "auth", status = 400 } },
  { "request-id header holding the secret", answer(401, { "request-id: " .. S }, ""), { kind = "auth", status = 401 } },
  { "every id header holding the secret", answer(401, { "x-ms-request-id: " .. S, "client-request-id: " .. S,
      "ms-correlationid: " .. S, "ms-cv: " .. S, "x-request-id: " .. S }, ""), { kind = "auth", status = 401 } },
  { "error_description echoing the form", json(400, ('{"error":"invalid_request","error_description":"bad form: %s"}'):format(FORM)),
    { kind = "auth", status = 400, code = "invalid_request" } },
  { "trace_id and correlation_id holding the secret", json(400, ('{"error":"invalid_client","trace_id":"%s","correlation_id":"%s"}')
      :format(S, S)), { kind = "auth", status = 400 } },
  { "WWW-Authenticate quoting the secret", answer(401, { ('WWW-Authenticate: Basic error_description="%s"'):format(S) }, ""),
    { kind = "auth", status = 401 } },
  { "500 page echoing the form", answer(500, { "Content-Type: text/html" }, "<pre>" .. FORM .. "</pre>"),
    { kinds = { "auth", "http" }, status = 500 } },
  { "302 with the secret in its Location", answer(302, { "Location: /elsewhere?client_secret=" .. S }, ""),
    { kinds = { "auth", "http" }, status = 302 } },
  { "429 message quoting the secret", json(429, ('{"statusCode":429,"message":"%s"}'):format(S), { "Retry-After: 3000000000" }),
    { kinds = { "auth", "throttled" }, status = 429 } },
}

local cases = {}
for i, t in ipairs(TOKEN_SIDE) do
  local other = ({ "ave_customers", "pc_org", "ave_page", "pc_customers", "ave_each" })[(i - 1) % 5 + 1]
  for _, call in ipairs { "core", other } do
    cases[#cases + 1] = { name = "token endpoint echoes: " .. t[1], call = call, token = t[2], expect = t[3] }
  end
end

local function straddling(token) -- the token across the 2 KiB cut of err.body: 16 bytes in
  local pad = ("x"):rep(2048 - 16 - #'{"message":" ')
  return ('{"message":"%s %s"}'):format(pad, token) .. ("y"):rep(4096)
end

local more = {
  { "invalid_grant quoting the refresh token", "pc_refresh",
    nil, json(400, ('{"error":"invalid_grant","error_description":"AADSTS70008: %s has expired"}'):format(C.REFRESH)),
    { kind = "auth", status = 400, code = "invalid_grant" } },
  { "correlation id header holding the refresh token", "pc_refresh",
    nil, answer(400, { "ms-correlationid: " .. C.REFRESH, "request-id: " .. C.REFRESH }, ""), { kind = "auth", status = 400 } },
  { "API 401 quoting the bearer token, every time", "core", json(401, ('{"error":"invalid_token","message":"Bearer %s"}'):format(T)),
    nil, { kind = "auth", status = 401 } },
  { "API 401 WWW-Authenticate quoting the bearer token", "core",
    answer(401, { ('WWW-Authenticate: Bearer error="invalid_token", error_description="%s"'):format(T) }, ""),
    nil, { kind = "auth", status = 401 } },
  { "API 400 message quoting the token", "core", json(400, ('{"code":"bad","message":"token %s rejected"}'):format(T)),
    nil, { kind = "http", status = 400, code = "bad" } },
  { "API 403 description quoting the fixed token", "core_fixed", json(403, ('{"code":403,"description":"%s"}'):format(F)),
    nil, { kind = "auth", status = 403 } },
  { "API 500 page and headers holding the token", "core", answer(500, { "request-id: " .. T, "ms-cv: " .. T }, "<p>" .. T .. "</p>"),
    nil, { kind = "http", status = 500 } },
  { "API OData error quoting the token", "ave_customers", json(400, ('{"error":{"code":"x","message":"%s"}}'):format(T)),
    nil, { kind = "http", status = 400 } },
  { "API error code that is the token", "ave_page", json(404, ('{"code":"%s","description":"no"}'):format(T)),
    nil, { kind = "http", status = 404 } },
  { "Partner Center 403 quoting the token in body and ids", "pc_org",
    json(403, ('{"code":900,"description":"%s","data":[],"source":"PartnerFD"}'):format(T),
         { "MS-CorrelationId: " .. T, "MS-RequestId: " .. T }),
    nil, { kind = "auth", status = 403 } },
  { "Partner Center throttling quoting the token", "pc_customers",
    json(429, ('{"statusCode":429,"message":"%s"}'):format(T), { "Retry-After: 3000000000" }), nil,
    { kind = "throttled", status = 429 } },
  { "API error body with the token across the 2 KiB cut", "core", json(400, straddling(T)), nil,
    { kind = "http", status = 400 }, no_piece(T) },
}
for _, m in ipairs(more) do
  cases[#cases + 1] = { name = m[1], call = m[2], api = m[3], token = m[4], expect = m[5], check = m[6] }
end
return cases
