-- Servers that stop answering: before and after the headers, on fresh connections and on reused
-- keep-alive ones (the peer answers the first request of a connection and hangs on the second).
-- Every case here runs with timeout = 0.5 s; a timeout after the connection was made is final.
local R = require "spec.helpers.rawpeer"
local C = require "spec.hostile.common"

local CT = "Content-Type: application/json"
local TIMEOUT = { kind = "timeout", attempts = 1 }
local TOKEN_TIMEOUT = { kinds = { "timeout", "auth" } } -- a token request that timed out
local OK = C.good("core_fixed")
local AFTER_HEADERS = R.then_hang(R.response(200, { CT, "Content-Length: 100" }, ""))
local MID_BODY = R.then_hang(R.response(200, { CT, "Content-Length: 100" }, '{"ok":'))
local EMPTY_401 = R.send(R.response(401, {}, ""))

local PAGE1 = {
  ave_customers = R.json(200, '{"value":[{"id":"c1"}],"@odata.nextLink":"/partner/customers?$skiptoken=2"}'),
  pc_customers = R.json(200, '{"items":[{"id":"t1"}],"links":{"next":{"uri":"/v1/customers?size=2",'
                             .. '"headers":[{"key":"MS-ContinuationToken","value":"ct-2"}]}}}'),
}

-- The token's connection served the API request too (the reuse this case is about).
local function token_conn_reused(ctx)
  local token, api = C.requests(ctx.log, "token")[1], C.requests(ctx.log, "api")[1]
  if not (token and api and token.conn == api.conn) then
    C.fail("spec: the API request did not reuse the token request's connection")
  end
end

local cases = {
  -- fresh connections
  { name = "hang before the headers, fresh connection", call = "core_fixed", api = { R.HANG }, expect = TIMEOUT },
  { name = "hang after the status line", call = "core_fixed", api = { R.then_hang("HTTP/1.1 200 OK\r\n") }, expect = TIMEOUT },
  { name = "hang after the headers, fresh connection", call = "core_fixed", api = { AFTER_HEADERS }, expect = TIMEOUT },
  { name = "hang in the middle of the body", call = "core_fixed", api = { MID_BODY }, expect = TIMEOUT },
  { name = "a body dripping slower than the timeout", call = "core_fixed",
    api = { R.drip(R.response(200, { CT }, '{"ok":true,"padding":"' .. ("p"):rep(40) .. '"}'), 0.05) }, expect = TIMEOUT },
  { name = "hang before the headers", call = "pc_org", api = { R.HANG }, expect = TIMEOUT },
  { name = "hang after the headers", call = "ave_each", api = { AFTER_HEADERS }, expect = TIMEOUT },
  -- reused keep-alive connections: the first call is answered, the second is the fault
  { name = "hang before the headers on a reused connection", call = "core_twice", api = { OK, R.HANG },
    expect = TIMEOUT, check = C.reused },
  { name = "hang after the headers on a reused connection", call = "core_twice", api = { OK, AFTER_HEADERS },
    expect = TIMEOUT, check = C.reused },
  { name = "idle connection closed by the server between two calls", call = "core_twice",
    api = { R.then_close(R.response(200, { CT }, C.GOOD.core)), OK }, expect = { ok = true } },
  { name = "second request read, then its reused connection closed unanswered", call = "core_twice",
    api = { OK, R.CLOSE, OK }, expect = { ok = true, kinds = { "network" } } },
  { name = "second request reset on its reused connection", call = "core_twice",
    api = { OK, R.RESET, OK }, expect = { ok = true, kinds = { "network" } } },
  { name = "API hangs on the token request's reused connection", call = "core", api = { R.HANG },
    expect = TIMEOUT, check = token_conn_reused },
  { name = "second page hangs on a reused connection", call = "ave_customers", api = { PAGE1.ave_customers, R.HANG },
    expect = TIMEOUT },
  { name = "second page hangs after the headers", call = "pc_customers", api = { PAGE1.pc_customers, AFTER_HEADERS },
    expect = TIMEOUT },
  -- token endpoints
  { name = "token endpoint hangs before the headers", call = "core", token = { R.HANG }, expect = TOKEN_TIMEOUT },
  { name = "token endpoint hangs after the headers", call = "ave_customers", token = { AFTER_HEADERS }, expect = TOKEN_TIMEOUT },
  { name = "token endpoint hangs", call = "pc_refresh", token = { R.HANG }, expect = TOKEN_TIMEOUT },
  { name = "token renewal after a 401 hangs", call = "core", token = { C.TOKEN_OK, R.HANG }, api = { EMPTY_401 },
    expect = TOKEN_TIMEOUT },
}
for _, c in ipairs(cases) do c.timeout = 0.5 end
return cases
