-- The sandbox as a resource server: bearer tokens it did not issue are checked at an RFC 7662
-- introspection endpoint, here oidc-provider's (spec/oidc/server.js), with the sandbox's own
-- client credentials there. Spoken to with the curl command line only, never the module.
-- Needs `npm ci --prefix spec/oidc` once.
local sandbox = require "spec.helpers.sandbox"
local oidc = require "spec.helpers.oidc"
local cjson = require "cjson"
local monotime = require("cqueues").monotime

local V3_SCOPE = "elements.customers.read.all"
local ODATA_SCOPE = "partner.customers.read.all"
local V3 = "/partner/external/v3/general/customers"
local V3_PAGE = V3 .. "?pageIndex=1&pageSize=4"
local COUNT = 9

local decode = sandbox.decode

local function random_hex(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(n)
  f:close()
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function form(s) return (s:gsub("[^%w]", function(ch) return ("%%%02X"):format(ch:byte()) end)) end

describe("sandbox token introspection", function()
  local APP_SECRET, RS_SECRET = random_hex(12), "rs " .. random_hex(12) .. " :/&+=%"
  local server, sb

  setup(function()
    server = oidc.start {
      clients = {
        { client_id = "app", client_secret = APP_SECRET, token_endpoint_auth_method = "client_secret_post" },
        -- the sandbox at the authorization server: may introspect, gets no tokens
        { client_id = "rs", client_secret = RS_SECRET, token_endpoint_auth_method = "client_secret_basic",
          introspection = true },
      },
      ttl = 300,
    }
    sb = sandbox.start { count = COUNT, seed = 5, introspection_url = server.introspection_url,
                         introspection_client_id = "rs", introspection_secret = RS_SECRET }
  end)

  teardown(function()
    if sb then sb:stop() end
    if server then server:stop() end
  end)

  -- A client credentials token of `scope` from oidc-provider (the server `s`, default the main one).
  local function oidc_token(scope, s)
    local res = sandbox.curl { method = "POST", url = (s or server).token_url,
      headers = { ["content-type"] = "application/x-www-form-urlencoded" },
      body = ("grant_type=client_credentials&client_id=app&client_secret=%s&scope=%s"):format(form(APP_SECRET),
        form(scope)) }
    assert.equal(200, res.status, res.body)
    return decode(res.body).access_token
  end

  local function v3(token, target) return (target or sb):request { path = V3_PAGE, token = token } end

  -- The sandbox's log entries from `from` on (its length before).
  local function log_since(from, target)
    return { table.unpack((target or sb):log(), from + 1) }
  end

  local function outcomes(entries)
    local list = {}
    for i, e in ipairs(entries) do
      list[i] = ("%s %s %s"):format(e.token or "-", e.introspection or "-", tostring(e.status))
    end
    return list
  end

  local function assert_unauthorized(res)
    assert.equal(401, res.status)
    assert.equal('{"error":"invalid_token"}', res.body)
    assert.equal('Bearer error="invalid_token"', res.headers["www-authenticate"])
  end

  describe("with oidc-provider", function()
    it("accepts an active token that holds the endpoint's scope, and asks once", function()
      local token = oidc_token(V3_SCOPE)
      local from = #sb:log()
      local res = v3(token)
      assert.equal(200, res.status)
      local body = decode(res.body)
      assert.equal(4, #body.data)
      assert.same({ pageIndex = 1, pageSize = 4, totalCount = COUNT }, body.metadata)
      assert.equal(200, v3(token).status)
      local batch = sb:request { method = "POST", path = V3 .. "/batch?pageIndex=3&pageSize=4", token = token }
      assert.equal(200, batch.status)
      assert.equal(1, #decode(batch.body).data)

      local entries = log_since(from)
      assert.same({ "introspected active 200", "introspected cached 200", "introspected cached 200" }, outcomes(entries))
      assert.equal("Bearer [introspected]", entries[1].headers.authorization)
      -- neither the token nor the sandbox's introspection secret in the log
      local text = cjson.encode(sb:log())
      assert.is_nil(text:find(token, 1, true))
      assert.is_nil(text:find(RS_SECRET, 1, true))
    end)

    it("reads the scope as a space-separated list", function()
      local token = oidc_token(ODATA_SCOPE .. " " .. V3_SCOPE)
      assert.equal(200, v3(token).status)
      local res = sb:request { path = "/partner/customers", token = token }
      assert.equal(200, res.status)
      assert.equal(COUNT, #decode(res.body).value)
    end)

    it("answers 403 insufficient_scope for an active token without the scope", function()
      local from = #sb:log()
      for _, scope in ipairs { ODATA_SCOPE, "api.read" } do
        local token = oidc_token(scope)
        for _ = 1, 2 do
          local res = v3(token)
          assert.equal(403, res.status)
          assert.equal("insufficient_scope", decode(res.body).error)
          assert.equal('Bearer error="insufficient_scope", scope="' .. V3_SCOPE .. '"', res.headers["www-authenticate"])
        end
      end
      local odata = sb:request { path = "/partner/customers", token = oidc_token(V3_SCOPE) }
      assert.equal(403, odata.status)
      assert.same({ "introspected active 403", "introspected cached 403", "introspected active 403",
                    "introspected cached 403", "introspected active 403" }, outcomes(log_since(from)))
    end)

    it("answers 401 for a token that is not active, and asks again next time", function()
      local revoked = oidc_token(V3_SCOPE)
      server:revoke() -- before the sandbox ever saw it
      local from = #sb:log()
      assert_unauthorized(v3("made-up-" .. random_hex(8)))
      assert_unauthorized(v3(revoked))
      assert_unauthorized(v3(revoked))
      assert.same({ "introspected inactive 401", "introspected inactive 401", "introspected inactive 401" },
        outcomes(log_since(from)))
    end)

    it("remembers a positive answer (until exp, POST /_sandbox/revoke or expire_token)", function()
      local token, other = oidc_token(V3_SCOPE), oidc_token(V3_SCOPE)
      assert.equal(200, v3(token).status)
      assert.equal(200, v3(other).status)
      server:revoke()
      local from = #sb:log()
      assert.equal(200, v3(token).status) -- not asked again
      assert.is_true(sb:revoke().revoked >= 2)
      assert_unauthorized(v3(token))
      local fresh = oidc_token(V3_SCOPE)
      sb:faults { { type = "expire_token", path = "^/partner/external/" } }
      assert_unauthorized(v3(fresh))
      assert_unauthorized(v3(fresh)) -- it stays refused, whatever the endpoint says
      assert.same({ "introspected cached 200", "introspected cached 401", "introspected - 401",
                    "introspected cached 401" }, outcomes(log_since(from)))
      assert.equal("expire_token", log_since(from)[3].fault)
    end)

    it("forgets a positive answer at the token's exp", function()
      local short <close> = oidc.start { clients = {
        { client_id = "app", client_secret = APP_SECRET, token_endpoint_auth_method = "client_secret_post" },
        { client_id = "rs", client_secret = RS_SECRET, token_endpoint_auth_method = "client_secret_basic",
          introspection = true },
      }, ttl = 2 }
      local s2 <close> = sandbox.start { count = 3, introspection_url = short.introspection_url,
                                         introspection_client_id = "rs", introspection_secret = RS_SECRET }
      local token = oidc_token(V3_SCOPE, short)
      local exp = os.time() + 2
      assert.equal(200, v3(token, s2).status)
      assert.equal(200, v3(token, s2).status)
      while os.time() <= exp do os.execute("sleep 0.2") end
      assert_unauthorized(v3(token, s2))
      assert_unauthorized(v3(token, s2))
      assert.same({ "introspected active 200", "introspected cached 200", "introspected cached 401",
                    "introspected inactive 401" }, outcomes(log_since(0, s2)))
    end)

    it("checks its own tokens itself, and Partner Center tokens stay refused", function()
      local from = #sb:log()
      assert.equal(200, v3(sb:token(V3_SCOPE)).status)
      assert_unauthorized(v3(sb:pc_token()))
      local calls = {}
      for _, e in ipairs(log_since(from)) do
        if e.path == V3 then calls[#calls + 1] = e end
      end
      assert.equal(2, #calls)
      assert.matches("^t%d+ %- 200$", outcomes(calls)[1])
      assert.matches("^t%d+ %- 401$", outcomes(calls)[2])
    end)

    it("never shows the introspection secret on the command line", function()
      local f = assert(io.open("/proc/" .. math.tointeger(sb.pid) .. "/cmdline", "rb"))
      local cmdline = f:read("a")
      f:close()
      assert.truthy(cmdline:find("--introspection-url", 1, true))
      assert.is_nil(cmdline:find(RS_SECRET, 1, true))
    end)
  end)

  describe("when introspection fails: 503 introspection_failed, nothing remembered", function()
    local function assert_unavailable(res, why)
      assert.equal(503, res.status)
      local body = decode(res.body)
      assert.equal("introspection_failed", body.error)
      assert.matches(why, body.error_description, 1, true)
      assert.is_nil(res.body:find(RS_SECRET, 1, true))
    end

    it("with the wrong introspection secret (oidc-provider answers 401)", function()
      local s2 <close> = sandbox.start { count = 3, introspection_url = server.introspection_url,
                                         introspection_client_id = "rs", introspection_secret = RS_SECRET .. "x" }
      assert_unavailable(v3(oidc_token(V3_SCOPE), s2), "HTTP 401")
    end)

    it("for a resource server the authorization server does not let introspect: not active, 401", function()
      local s2 <close> = sandbox.start { count = 3, introspection_url = server.introspection_url,
                                         introspection_client_id = "app", introspection_secret = APP_SECRET }
      assert_unauthorized(v3(oidc_token(V3_SCOPE), s2))
      assert.same({ "introspected inactive 401" }, outcomes(s2:log()))
    end)

    it("when nothing listens there", function()
      -- a port that was just freed: the stopped sandbox's
      local gone = sandbox.start { count = 1 }
      local url = gone.url .. "/token/introspection"
      gone:stop()
      local s2 <close> = sandbox.start { count = 3, introspection_url = url, introspection_client_id = "rs",
                                         introspection_secret = RS_SECRET }
      local token = oidc_token(V3_SCOPE)
      assert_unavailable(v3(token, s2), "token introspection failed")
      assert_unavailable(v3(token, s2), "token introspection failed")
      assert.same({ "introspected failed 503", "introspected failed 503" }, outcomes(s2:log()))
    end)

    -- A second sandbox plays the introspection endpoint with fault rules: what it received, an
    -- answer that is no introspection answer, an endpoint that never answers.
    it("on a bad answer or none; meanwhile other requests are served", function()
      local fake <close> = sandbox.start { count = 1 }
      local s2 <close> = sandbox.start { count = 3, introspection_url = fake.url .. "/introspect",
                                         introspection_client_id = "rs id", introspection_secret = RS_SECRET }
      local token = "tok+/" .. random_hex(8)

      fake:faults { { type = "status", status = 200, body = '{"scope":"' .. V3_SCOPE .. '"}' } }
      assert_unavailable(v3(token, s2), "no boolean 'active'")
      local asked = fake:log()[1]
      assert.equal("POST", asked.method)
      assert.equal("/introspect", asked.path)
      assert.equal("token=" .. form(token), asked.body)
      assert.equal("application/x-www-form-urlencoded", asked.headers["content-type"])
      assert.equal("Basic [redacted]", asked.headers.authorization)

      fake:faults { { type = "status", status = 200, body = cjson.encode { active = true, scope = V3_SCOPE,
                                                                          exp = os.time() + 60 } } }
      assert.equal(200, v3(token, s2).status) -- a well-formed answer is taken
      assert.equal(2, #fake:log())

      fake:faults { { type = "hang", max = 2 } }
      local t0 = monotime()
      local pending = s2:request_start { path = V3_PAGE, token = "another-" .. random_hex(4) }
      os.execute("sleep 0.2")
      local own = v3(s2:token(V3_SCOPE), s2) -- the sandbox's own token, while introspection hangs
      assert.equal(200, own.status)
      assert.is_true(monotime() - t0 < 1.5, "blocked for " .. (monotime() - t0) .. " s")
      assert_unavailable(sandbox.curl_finish(pending), "token introspection failed")
    end)
  end)

  describe("options", function()
    local mod = require "partnercustomers.sandbox"

    it("takes an http://127.0.0.1 URL with the client id and the secret", function()
      local cfg = mod.config { introspection_url = "http://127.0.0.1:8080/token/introspection",
                               introspection_client_id = "rs", introspection_secret = "s" }
      assert.equal("http://127.0.0.1:8080/token/introspection", cfg.introspection_url)
      assert.equal("s", cfg.introspection_secret)
      for _, url in ipairs { "https://127.0.0.1:8080/i", "http://localhost:8080/i", "http://127.0.0.2:80/i",
                             "http://127.0.0.1:0/i", "http://127.0.0.1:99999/i", "http://u@127.0.0.1:80/i",
                             "http://127.0.0.1.example:80/i", "http://127.0.0.1:80/i#f", "ftp://127.0.0.1/" } do
        local ok, err = pcall(mod.config, { introspection_url = url, introspection_client_id = "rs",
                                            introspection_secret = "s" })
        assert.is_false(ok, url)
        assert.matches("option 'introspection_url' must be an http://127.0.0.1[:PORT]/path URL", err, 1, true)
      end
    end)

    it("refuses an incomplete configuration", function()
      -- the secret may come from the environment: these runs must not see one
      if os.getenv("PARTNERCUSTOMERS_SANDBOX_INTROSPECTION_SECRET") then return end
      assert.has_error(function() mod.config { introspection_url = "http://127.0.0.1:1/i", introspection_secret = "s" } end)
      assert.has_error(function() mod.config { introspection_url = "http://127.0.0.1:1/i", introspection_client_id = "rs" } end)
      assert.has_error(function() mod.config { introspection_client_id = "rs" } end)
      assert.has_error(function() mod.config { introspection_secret = "s" } end)
    end)

    it("main: the secret has no flag", function()
      local written = {}
      local capture = { write = function(self, ...) for _, s in ipairs { ... } do written[#written + 1] = s end return self end }
      local real_out, real_err = io.stdout, io.stderr
      io.stdout, io.stderr = capture, capture
      local codes = { mod.main { "--introspection-secret", "s" }, mod.main { "--introspection-url", "http://10.0.0.1/i" },
                      mod.main { "--help" } }
      io.stdout, io.stderr = real_out, real_err
      assert.same({ 2, 2, 0 }, codes)
      local text = table.concat(written)
      assert.truthy(text:find("unknown argument: --introspection-secret", 1, true))
      assert.truthy(text:find("--introspection-client-id ID", 1, true))
      assert.truthy(text:find("PARTNERCUSTOMERS_SANDBOX_INTROSPECTION_SECRET", 1, true))
    end)
  end)
end)
