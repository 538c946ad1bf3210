-- What the hostile cases share: the credentials (every one of them a secret that must never come
-- out), the good answers of each call, and small checks. A case (see spec/hostile_spec.lua):
--   { name, call, token = answers, api = answers, expect = {...}, timeout, check = fn(ctx, res, err) }
-- `token` and `api` may be functions of the peer ({url, port}) returning the answers.
local R = require "spec.helpers.rawpeer"

local C = {}

C.CLIENT_ID = "hostile-client"
C.SECRET = "s3cr3t-Hq7Vw2Lx9Pz4Rk"     -- the client secret
C.TOKEN = "tok-Issued-7Fq2Zr8Kd1Mw"    -- the access token the peer issues by default
C.FIXED = "tok-Fixed-3Jd8Wq5Xn0Bv"     -- the fixed access_token of the core_fixed calls
C.REFRESH = "rt-Old-6Yb1Nc4Vm2Ls"      -- the refresh token a Partner Center client starts with
C.NEW_REFRESH = "rt-New-9Tg3Hs5Ke7Qa"  -- the one the peer rotates it to
C.SECRETS = { C.SECRET, C.TOKEN, C.FIXED, C.REFRESH, C.NEW_REFRESH }
C.TENANT = "8a4f1a52-4b8f-4c3e-9d2e-0c4a5e3f6b7d"
C.NOW = 1700000000 -- the injected clock's start (it moves only when the client sleeps)

function C.token_json(token, expires_in)
  return ('{"access_token":%s,"token_type":"Bearer","expires_in":%s,"refresh_token":"%s"}')
    :format(token, expires_in or "3600", C.NEW_REFRESH)
end
C.TOKEN_OK = R.json(200, C.token_json('"' .. C.TOKEN .. '"'))

-- A good answer of each call (the API side).
C.GOOD = {
  core = '{"ok":true}',
  customers = '{"value":[{"id":"c1","organization":"Contoso"}]}',
  v3 = '{"data":[{"id":"c1","organization":"Contoso","tenants":[]}],"metadata":{"totalCount":1}}',
  pc_org = '[{"displayName":"Contoso","city":"Oslo","technicalNotificationMails":["a@contoso.example"]}]',
  pc_customers = '{"totalCount":1,"items":[{"id":"t1","companyProfile":{"tenantId":"t1"}}],"links":{}}',
}
-- The kind of good answer each call wants.
C.SHAPE = {
  core = "core", core_fixed = "core", core_twice = "core", core_cc_twice = "core",
  ave_customers = "customers", ave_all = "v3", ave_each = "v3", ave_page = "v3",
  pc_org = "pc_org", pc_refresh = "pc_org", pc_customers = "pc_customers",
}

function C.good(call) return R.json(200, C.GOOD[C.SHAPE[call]]) end

-- Requests of a role ("token" or "api") in a peer log.
function C.requests(log, role)
  local out = {}
  for _, r in ipairs(log) do
    if r.role == role then out[#out + 1] = r end
  end
  return out
end

function C.fail(fmt, ...) error(fmt:format(...), 0) end

-- Checks for `check` fields.
function C.at_most(role, n)
  return function(ctx)
    local got = #C.requests(ctx.log, role)
    if got > n then C.fail("%d %s requests, expected at most %d", got, role, n) end
  end
end

function C.no_api_request(ctx)
  local got = #C.requests(ctx.log, "api")
  if got > 0 then C.fail("%d API requests were sent with an unusable token", got) end
end

-- The last API request came on the connection of the one before it (a reused keep-alive one).
function C.reused(ctx)
  local api = C.requests(ctx.log, "api")
  local a, b = api[#api - 1], api[#api]
  if not (a and b and a.conn == b.conn) then
    C.fail("spec: the last API request did not reuse the previous connection")
  end
end

function C.both(f, g)
  return function(...) f(...); g(...) end
end

return C
