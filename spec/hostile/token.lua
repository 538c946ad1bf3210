-- Token endpoints that refuse, answer nonsense, hand out tokens a header cannot carry, or give
-- odd lifetimes.
local R = require "spec.helpers.rawpeer"
local C = require "spec.hostile.common"

local ONCE = C.at_most("token", 1)
local function refused(status) return { kind = "auth", status = status } end
local function token_with(access_token_json, expires_json)
  return { R.json(200, C.token_json(access_token_json, expires_json)) }
end
local function answer(status, headers, body) return { R.send(R.response(status, headers, body)) } end

-- Refusals: every one is an auth error carrying the status, tried once.
local REFUSALS = {
  { "empty 401", answer(401, {}, ""), refused(401) },
  { "empty 401 with WWW-Authenticate", answer(401, { 'WWW-Authenticate: Basic realm="x"' }, ""), refused(401) },
  { "HTML 403", answer(403, { "Content-Type: text/html" }, "<html><body>Forbidden</body></html>"), refused(403) },
  { "401 with non-OAuth JSON", { R.json(401, '{"message":"Unauthorized","statusCode":401}') }, refused(401) },
  { "400 with non-OAuth JSON", { R.json(400, '{"message":"nope","status":400}') }, refused(400) },
  { "400 with a JSON array", { R.json(400, "[1,2,3]") }, refused(400) },
  { "400 with a number as error", { R.json(400, '{"error":42}') }, refused(400) },
  { "400 with an object as error", { R.json(400, '{"error":{"code":"x","message":"y"}}') }, refused(400) },
  { "400 with a null error", { R.json(400, '{"error":null,"error_description":null}') }, refused(400) },
  { "400 with truncated JSON", { R.json(400, '{"error":"invalid_cl') }, refused(400) },
  { "401 invalid_client", { R.json(401, '{"error":"invalid_client","error_description":"AADSTS7000215"}') },
    { kind = "auth", status = 401, code = "invalid_client" } },
}

-- each on the core and on one of the Lua layer's calls, in rotation
local ROTATION = { "ave_page", "ave_customers", "pc_org", "ave_all", "pc_refresh" }
local cases = {}
for i, r in ipairs(REFUSALS) do
  for _, call in ipairs { "core", ROTATION[(i - 1) % #ROTATION + 1] } do
    cases[#cases + 1] = { name = "token endpoint: " .. r[1], call = call, token = r[2], expect = r[3], check = ONCE }
  end
end

local BAD_TOKEN = { kinds = { "auth", "protocol" } } -- an answer without a usable token
local more = {
  { "500 forever", answer(500, { "Content-Type: text/html" }, "<h1>oops</h1>"), { kinds = { "auth", "http" }, status = 500 },
    C.at_most("token", 3) },
  { "429 forever", { R.json(429, '{"error":"slow_down"}') }, { kinds = { "auth", "throttled" }, status = 429 },
    C.at_most("token", 3) },
  { "302 to elsewhere", answer(302, { "Location: /elsewhere/token" }, ""), { kinds = { "auth", "http" }, status = 302 }, ONCE },
  { "reset", { R.RESET }, { kinds = { "auth", "network" } }, C.at_most("token", 3) },
  { "empty reply", { R.CLOSE }, { kinds = { "auth", "network" } }, C.at_most("token", 3) },
  { "garbage status line", { R.then_close("NOT HTTP\r\n\r\n") }, { kinds = { "auth", "network", "protocol" } } },
  { "a header line over 256 KiB", answer(200, { "Content-Type: application/json", "X-Huge: " .. ("h"):rep(300 * 1024) },
      C.token_json('"' .. C.TOKEN .. '"')), { kinds = { "auth", "limit", "protocol" } } },
  { "200 that is not JSON", answer(200, { "Content-Type: text/plain" }, "OK"), { kinds = { "auth", "decode", "protocol" } } },
  { "200 with deep nesting", { R.json(200, ("["):rep(10000) .. ("]"):rep(10000)) },
    { kinds = { "auth", "decode", "protocol", "limit" } } },
  { "200 without access_token", { R.json(200, '{"token_type":"Bearer","expires_in":3600}') }, BAD_TOKEN },
  { "200 with a JSON array", { R.json(200, '["' .. C.TOKEN .. '"]') }, BAD_TOKEN },
  { "200 with a number as access_token", token_with("12345"), BAD_TOKEN },
  { "200 with an empty access_token", token_with('""'), BAD_TOKEN },
  { "200 with an object as access_token", token_with('{"value":"x"}'), BAD_TOKEN },
  { "200 with token_type mac", { R.json(200, '{"access_token":"' .. C.TOKEN .. '","token_type":"mac"}') },
    { ok = true, kinds = { "auth", "protocol" } } },
}
for _, m in ipairs(more) do
  cases[#cases + 1] = { name = "token endpoint: " .. m[1], call = "core", token = m[2], expect = m[3], check = m[4] }
end

-- Tokens a header cannot carry: refused before use, nothing injected or smuggled at the peer.
local UNSENDABLE = {
  { "CR/LF and a header", '"abc\\r\\nX-Injected: 1"' },
  { "LF and a header", '"abc\\nX-Injected: 1"' },
  { "CR alone", '"abc\\rX-Injected: 1"' },
  { "NUL", '"abc\\u0000X-Injected: 1"' },
  { "a smuggled request", '"abc\\r\\n\\r\\nGET /smuggled HTTP/1.1\\r\\nHost: x\\r\\nX-Injected: 1\\r\\n\\r\\n"' },
}
for i, u in ipairs(UNSENDABLE) do
  for _, call in ipairs { "core", ({ "ave_customers", "pc_org", "ave_each", "pc_refresh", "ave_page" })[i] } do
    cases[#cases + 1] = { name = "access_token with " .. u[1], call = call, token = token_with(u[2]),
                          expect = { kind = "auth" }, check = C.no_api_request }
  end
end
for _, call in ipairs { "core", "ave_page" } do
  cases[#cases + 1] = { name = "access_token over 64 KiB", call = call, token = token_with('"' .. ("k"):rep(64 * 1024 + 1) .. '"'),
                        expect = { kind = "auth" }, check = C.no_api_request }
end
cases[#cases + 1] = { name = "token_type with CR/LF and a header", call = "core",
  token = { R.json(200, '{"access_token":"' .. C.TOKEN .. '","token_type":"Bearer\\r\\nX-Injected: 1"}') },
  expect = { ok = true, kinds = { "auth", "protocol" } } }

-- Lifetimes: two calls on one client. README: an expires_in that is zero, negative or not a
-- decimal number counts as 60 s, so the second call (the clock has not moved) reuses the token.
local SIXTY = { ok = true }
local LIFETIMES = {
  { "0", SIXTY, 1 }, { "-5", SIXTY, 1 }, { '"0x10"', SIXTY, 1 }, { '"abc"', SIXTY, 1 }, { "true", SIXTY, 1 },
  { '"3600"', SIXTY, 1 }, { "3.5", SIXTY, 2 }, { "null", SIXTY, 2 },
  { "1e400", { ok = true, kinds = { "auth", "decode" } }, 2 }, { "99999999999999999999999", SIXTY, 2 },
  { "9223372036854775807", SIXTY, 2 }, { "NaN", { ok = true, kinds = { "auth", "decode" } }, 2 },
}
for _, l in ipairs(LIFETIMES) do
  cases[#cases + 1] = { name = "expires_in " .. l[1], call = "core_cc_twice", token = token_with('"' .. C.TOKEN .. '"', l[1]),
                        expect = l[2], check = C.at_most("token", l[3]) }
end

-- A refresh token the server may have redeemed is never sent twice (README: retried only when it
-- cannot have reached the server, or on 429 and 503).
local REDEEM = {
  { "500", { R.json(500, '{"error":"server_error"}'), C.TOKEN_OK }, { kinds = { "auth", "http" }, status = 500 }, 1 },
  { "reset after the request", { R.RESET, C.TOKEN_OK }, { kinds = { "auth", "network" } }, 1 },
  { "empty reply", { R.CLOSE, C.TOKEN_OK }, { kinds = { "auth", "network" } }, 1 },
  { "503, then a token", { R.json(503, '{"error":"temporarily_unavailable"}'), C.TOKEN_OK }, { ok = true }, 2 },
  { "429, then a token", { R.json(429, '{"error":"slow_down"}'), C.TOKEN_OK }, { ok = true }, 2 },
}
for _, r in ipairs(REDEEM) do
  cases[#cases + 1] = { name = "refresh grant answered " .. r[1], call = "pc_refresh", token = r[2], expect = r[3],
                        check = C.at_most("token", r[4]) }
end
return cases
