-- The core's token flows against a real, OpenID Certified authorization server: oidc-provider
-- (spec/oidc/server.js) on 127.0.0.1, port 0. Client secrets sent in the body and with HTTP Basic,
-- certificate assertions signed RS256 and PS256; refusals come back as auth errors, tried once.
-- pc.device_login against its device flow (RFC 8628), the user driven through its device pages.
-- The tokens are then used on the sandbox's AvePoint v3 endpoint: the sandbox is the resource
-- server and checks them at oidc-provider's introspection endpoint (RFC 7662).
-- Needs `npm ci --prefix spec/oidc` once. Keys and certificates are made here with openssl.
local core = require "partnercustomers.core"
local pc = require "partnercustomers"
local oidc = require "spec.helpers.oidc"
local sandbox = require "spec.helpers.sandbox"
local helpers = require "spec.helpers.util"
local sh, sh_output, b64url = helpers.sh, helpers.capture, helpers.b64url

local SCOPE = "elements.customers.read.all"
local TTL = 300 -- the server's access token lifetime
local COUNT = 12 -- the sandbox's customers
local V3_PAGE = "/partner/external/v3/general/customers?pageIndex=1&pageSize=5"


local function random_hex(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(n)
  f:close()
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function hex_to_b64url(hex)
  return b64url((hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)))
end

-- The certificate's thumbprint as openssl computes it: upper-case hex, no colons.
local function fingerprint(cert, md)
  local out = sh_output(("openssl x509 -in %s -noout -fingerprint -%s"):format(cert, md))
  return assert(out:match("Fingerprint=([%x:]+)"), out):gsub(":", ""):upper()
end

-- Every string reachable from v (an error, an event list), for the "nothing secret" checks.
local function strings(v, acc, seen)
  acc, seen = acc or {}, seen or {}
  if type(v) == "string" then
    acc[#acc + 1] = v
  elseif type(v) == "table" and not seen[v] then
    seen[v] = true
    for k, x in pairs(v) do
      strings(k, acc, seen)
      strings(x, acc, seen)
    end
  end
  return acc
end

describe("core against oidc-provider", function()
  local dir, server, sb, fp
  local S = { post = "post " .. random_hex(12) .. " :/&+=%", basic = "basic:" .. random_hex(12) .. " /&+=%?",
              rs = random_hex(16) }
  local PASSWORD = "pfx " .. random_hex(8)
  S.pfx = PASSWORD -- never in an error or an event either
  local function p(name) return dir .. "/" .. name end
  local function cert() return { key = p("key.pem"), cert = p("cert.pem") } end

  -- A self-signed certificate valid from 2 days ago for 5 days: the expired-assertion test puts the
  -- client's clock an hour back, and core.new checks the certificate by that clock. `openssl req
  -- -x509` starts validity now and 3.0 has no -not_before, so `openssl ca -selfsign -startdate`.
  local function make_cert(name, cn)
    local start = os.date("!%Y%m%d%H%M%SZ", os.time() - 2 * 86400)
    local stop = os.date("!%Y%m%d%H%M%SZ", os.time() + 3 * 86400)
    sh(("openssl req -new -newkey rsa:2048 -nodes -keyout %s -out %s -subj /CN=%s"):format(
      p(name .. "-key.pem"), p(name .. ".csr"), cn))
    sh(("cd %s && openssl ca -batch -config ca.cnf -selfsign -keyfile %s -in %s -out %s -startdate %s -enddate %s -notext")
      :format(dir, p(name .. "-key.pem"), p(name .. ".csr"), p(name .. ".pem"), start, stop))
  end

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    sh("mkdir -m 700 " .. dir .. " && touch " .. dir .. "/index.txt")
    local cnf = assert(io.open(p("ca.cnf"), "w"))
    cnf:write([[
[ca]
default_ca = ca_default
[ca_default]
database = ./index.txt
new_certs_dir = .
rand_serial = yes
default_md = sha256
policy = policy_any
unique_subject = no
[policy_any]
commonName = supplied
]])
    cnf:close()
    make_cert("app", "partnercustomers-oidc-test")
    make_cert("other", "partnercustomers-oidc-other")
    sh(("mv %s %s && mv %s %s"):format(p("app-key.pem"), p("key.pem"), p("app.pem"), p("cert.pem")))
    sh(("openssl pkcs12 -export -inkey %s -in %s -out %s -passout pass:'%s'"):format(p("key.pem"), p("cert.pem"),
      p("app.pfx"), PASSWORD))
    fp = { sha1 = fingerprint(p("cert.pem"), "sha1"), sha256 = fingerprint(p("cert.pem"), "sha256") }

    server = oidc.start {
      clients = {
        { client_id = "cc-post", client_secret = S.post, token_endpoint_auth_method = "client_secret_post" },
        { client_id = "cc-basic", client_secret = S.basic, token_endpoint_auth_method = "client_secret_basic" },
        { client_id = "cc-jwt", token_endpoint_auth_method = "private_key_jwt", certificates = { p("cert.pem") } },
        -- a client whose registered key is not the one it signs with
        { client_id = "cc-jwt-other", token_endpoint_auth_method = "private_key_jwt", certificates = { p("other.pem") } },
        -- a public client of the device flow (no secret), as Entra's device sign-in apps are
        { client_id = "device-app", token_endpoint_auth_method = "none",
          grant_types = { "urn:ietf:params:oauth:grant-type:device_code", "refresh_token" },
          scope = "openid offline_access " .. SCOPE },
        -- the resource server: may introspect, gets no tokens
        { client_id = "rs", client_secret = S.rs, token_endpoint_auth_method = "client_secret_basic", introspection = true },
      },
      ttl = TTL, clock_tolerance = 0,
    }
    sb = sandbox.start { count = COUNT, seed = 3, introspection_url = server.introspection_url,
                         introspection_client_id = "rs", introspection_secret = S.rs }
  end)

  teardown(function()
    if sb then sb:stop() end
    if server then server:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  -- A client of the core; its events land in the returned list. Any wait fails the test: nothing
  -- here may be retried.
  local function new_client(cc, extra)
    local events = {}
    local o = {
      client_credentials = { token_url = server.token_url },
      on_event = function(ev) events[#events + 1] = ev end,
      max_retries = 3,
      sleep = function(s) error("the client waited " .. s .. " s: it retried") end,
    }
    for k, v in pairs(cc) do o.client_credentials[k] = v end
    for k, v in pairs(extra or {}) do o[k] = v end
    return core.new(o), events
  end

  -- The first page of the sandbox's v3 customers, with a token of `scope` (default SCOPE).
  local function call(c, scope) return c:request { url = sb.url .. V3_PAGE, scope = scope or SCOPE } end

  -- How the sandbox checked the bearer tokens of the API calls since `from` (its log length then).
  local function introspections(from)
    local list = {}
    for i, e in ipairs(sb:log()) do
      if i > from then list[#list + 1] = (e.token or "-") .. " " .. (e.introspection or "-") .. " " .. e.status end
    end
    return list
  end

  local function token_posts(events)
    local n = 0
    for _, ev in ipairs(events) do
      if ev.type == "request" and ev.url == server.token_url then n = n + 1 end
    end
    return n
  end

  local function token_events(events)
    local list = {}
    for _, ev in ipairs(events) do
      if ev.type == "token" then list[#list + 1] = ev end
    end
    return list
  end

  -- Runs f and returns the token requests the server received meanwhile.
  local function received(f)
    local before = #server:token_requests()
    local r1, r2 = f()
    local all = server:token_requests()
    return { table.unpack(all, before + 1) }, r1, r2
  end

  -- Nothing secret in an error or in events: no client secret, no assertion (a JWT's "eyJ….eyJ").
  local function assert_nothing_secret(x)
    for _, s in ipairs(strings(x)) do
      for name, secret in pairs(S) do
        assert.is_nil(s:find(secret, 1, true), "the " .. name .. " secret leaked: " .. s)
      end
      assert.is_nil(s:find("eyJ[%w_-]+%.eyJ"), "an assertion leaked: " .. s)
    end
  end

  describe("gets a token once and calls the API with it", function()
    -- cc() is called in the test: the files exist only once setup has run
    local cases = {
      { name = "client_secret_post", id = "cc-post", auth = "post",
        cc = function() return { client_secret = S.post } end },
      { name = "client_secret_post, client_auth = 'post'", id = "cc-post", auth = "post",
        cc = function() return { client_secret = S.post, client_auth = "post" } end },
      { name = "client_secret_basic", id = "cc-basic", auth = "basic",
        cc = function() return { client_secret = S.basic, client_auth = "basic" } end },
      { name = "private_key_jwt RS256 (PEM key and certificate)", id = "cc-jwt", auth = "assertion", alg = "RS256",
        cc = function() return { certificate = cert() } end },
      { name = "private_key_jwt RS256 (PKCS#12)", id = "cc-jwt", auth = "assertion", alg = "RS256",
        cc = function() return { certificate = { pfx = p("app.pfx"), password = PASSWORD } } end },
      { name = "private_key_jwt RS256 with x5t#S256", id = "cc-jwt", auth = "assertion", alg = "RS256", s256 = true,
        cc = function() return { certificate = { key = p("key.pem"), cert = p("cert.pem"), x5t_s256 = true } } end },
      { name = "private_key_jwt PS256", id = "cc-jwt", auth = "assertion", alg = "PS256",
        cc = function() return { certificate = { key = p("key.pem"), cert = p("cert.pem"), alg = "PS256" } } end },
      { name = "private_key_jwt PS256 with x5t#S256", id = "cc-jwt", auth = "assertion", alg = "PS256", s256 = true,
        cc = function()
          return { certificate = { key = p("key.pem"), cert = p("cert.pem"), alg = "PS256", x5t_s256 = true } }
        end },
    }
    for _, case in ipairs(cases) do
      it(case.name, function()
        local cc = case.cc()
        cc.client_id = case.id
        local c <close>, events = new_client(cc)
        local from = #sb:log()
        local got, res, err = received(function()
          local r, e = call(c)
          assert(r, e and tostring(e))
          assert(call(c)) -- the cached token again
          return r, e
        end)
        assert.is_nil(err)
        assert.equal(200, res.status)
        assert.equal(5, #res.data.data)
        assert.same({ pageIndex = 1, pageSize = 5, totalCount = COUNT }, res.data.metadata)
        assert.equal(sb:customers()[1].id, res.data.data[1].id)
        -- the sandbox asked oidc-provider once, then remembered the answer
        assert.same({ "introspected active 200", "introspected cached 200" }, introspections(from))

        -- one token request, on both sides
        assert.equal(1, token_posts(events))
        local tev = token_events(events)
        assert.equal(1, #tev)
        assert.same({ type = "token", scope = SCOPE, source = "client_credentials", expires_in = TTL }, tev[1])
        assert.equal(1, #got)
        local r = got[1]
        assert.equal(200, r.status)
        assert.equal(case.id, r.client_id)
        assert.equal(case.auth, r.auth)
        assert.equal(SCOPE, r.scope)

        if case.alg then
          local a = r.assertion
          assert.equal(case.alg, a.alg)
          assert.equal("JWT", a.typ)
          assert.equal(fp.sha1, a.kid)
          assert.equal(hex_to_b64url(fp.sha1), a.x5t)
          assert.equal(case.s256 and hex_to_b64url(fp.sha256) or nil, a["x5t#S256"])
          assert.equal(server.token_url, a.aud)
          assert.equal(case.id, a.iss)
          assert.equal(case.id, a.sub)
          assert.equal(a.iat, a.nbf)
          assert.equal(a.iat + 300, a.exp)
          assert.is_true(math.abs(a.iat - os.time()) <= 5)
          assert.matches("^%x+%-%x+%-4%x+%-[89ab]%x+%-%x+$", a.jti)
        end
        assert_nothing_secret(events)
      end)
    end

    it("mints a fresh assertion for every token request", function()
      local c <close>, events = new_client { client_id = "cc-jwt", certificate = cert() }
      local got = received(function()
        assert(call(c))
        -- revoked on both sides: the sandbox remembers positive introspection answers
        assert.is_true(server:revoke() >= 1)
        assert.is_true(sb:revoke().revoked >= 1)
        assert(call(c)) -- 401 from the API: a new token, and the call is retried once
      end)
      assert.equal(2, token_posts(events))
      assert.equal(2, #token_events(events))
      assert.equal(2, #got)
      assert.equal(200, got[2].status)
      assert.are_not.equal(got[1].assertion.jti, got[2].assertion.jti)
    end)

    it("takes a new token after a 401 from the API, with a client secret", function()
      local c <close>, events = new_client { client_id = "cc-basic", client_secret = S.basic, client_auth = "basic" }
      assert(call(c))
      server:revoke()
      sb:revoke()
      local from = #sb:log()
      local res = assert(call(c))
      assert.equal(5, #res.data.data)
      assert.equal(2, token_posts(events))
      assert.same({ "introspected cached 401", "introspected active 200" }, introspections(from))
      assert_nothing_secret(events)
    end)

    it("calls /partner/customers with a partner.customers.read.all token", function()
      local c <close>, events = new_client { client_id = "cc-post", client_secret = S.post }
      local res = assert(c:request { url = sb.url .. "/partner/customers", scope = "partner.customers.read.all" })
      assert.equal(200, res.status)
      assert.equal(COUNT, #res.data.value)
      assert.equal(1, token_posts(events))
    end)
  end)

  describe("refusals are auth errors with the server's code, tried once", function()
    -- One call with client c, refused by the token endpoint with `code` and `status`: no retry, one
    -- token request (on both sides), no token, nothing secret. Returns err and the server's record.
    local function refused(c, events, code, status)
      local got, res, err = received(function() return call(c) end)
      assert.is_nil(res)
      assert.is_true(core.is_error(err))
      assert.equal("auth", err.kind)
      assert.equal(code, err.code)
      assert.equal(status, err.status)
      assert.equal(1, err.attempts)
      assert.equal(1, token_posts(events))
      assert.equal(0, #token_events(events))
      assert.equal(1, #got)
      assert.equal(status, got[1].status)
      assert.equal(code, got[1].error)
      assert_nothing_secret(err)
      assert_nothing_secret(tostring(err))
      assert_nothing_secret(events)
      assert.matches(code, tostring(err), 1, true)
      return err, got[1]
    end

    it("a wrong secret in the body", function()
      local c <close>, events = new_client { client_id = "cc-post", client_secret = S.post .. "x" }
      local _, r = refused(c, events, "invalid_client", 401)
      assert.equal("post", r.auth)
    end)

    it("a wrong secret with HTTP Basic", function()
      local c <close>, events = new_client { client_id = "cc-basic", client_secret = S.basic .. "x", client_auth = "basic" }
      local _, r = refused(c, events, "invalid_client", 401)
      assert.equal("basic", r.auth)
    end)

    it("a client id the server does not know", function()
      local c <close>, events = new_client { client_id = "cc-nobody", client_secret = S.post }
      refused(c, events, "invalid_client", 401)
    end)

    it("a certificate whose key the server does not know", function()
      local c <close>, events = new_client { client_id = "cc-jwt-other", certificate = cert() }
      local _, r = refused(c, events, "invalid_client", 401)
      assert.equal(fp.sha1, r.assertion.kid)
      assert.matches("no applicable key", r.error_detail)
    end)

    it("an expired assertion (the client's clock an hour behind)", function()
      local now = os.time()
      local c <close>, events = new_client({ client_id = "cc-jwt", certificate = cert() },
        { clock = function() return now - 3600 end })
      local _, r = refused(c, events, "invalid_client", 401)
      assert.equal(now - 3600, r.assertion.iat)
      assert.equal(now - 3300, r.assertion.exp)
      assert.matches("expired", r.error_detail)
    end)

    it("a replayed assertion id", function()
      local jti = "fixed-" .. random_hex(8)
      local first <close>, events1 = new_client({ client_id = "cc-jwt", certificate = cert() },
        { jti = function() return jti end })
      local got = received(function() assert(call(first)) end)
      assert.equal(1, token_posts(events1))
      assert.equal(jti, got[1].assertion.jti)

      -- a new client (no cached token) with the same assertion id
      local second <close>, events2 = new_client({ client_id = "cc-jwt", certificate = cert() },
        { jti = function() return jti end })
      local _, r = refused(second, events2, "invalid_client", 401)
      assert.equal(jti, r.assertion.jti)
      assert.matches("only be used once", r.error_detail)
    end)

    it("a scope the client may not have", function()
      local c <close>, events = new_client { client_id = "cc-post", client_secret = S.post }
      local got, res, err = received(function() return call(c, "openid") end)
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.equal("invalid_scope", err.code)
      assert.equal(400, err.status)
      assert.equal(1, err.attempts)
      assert.equal(1, token_posts(events))
      assert.equal(1, #got)
      assert_nothing_secret(err)
    end)

    -- A token oidc-provider issues, that the sandbox refuses for its scope: 403, not retried
    -- (no new token: a 403 is no expired token).
    for _, scope in ipairs { "partner.customers.read.all", "api.read" } do
      it("a token the sandbox refuses for its scope (" .. scope .. ")", function()
        local c <close>, events = new_client { client_id = "cc-post", client_secret = S.post }
        local from = #sb:log()
        local got, res, err = received(function() return call(c, scope) end)
        assert.is_nil(res)
        assert.equal("auth", err.kind)
        assert.equal(403, err.status)
        assert.equal("insufficient_scope", err.code)
        assert.equal(1, err.attempts)
        assert.equal(1, token_posts(events))
        assert.equal(1, #got)
        assert.equal(200, got[1].status)
        assert.same({ "introspected active 403" }, introspections(from))
        assert_nothing_secret(err)
      end)
    end
  end)

  describe("pc.device_login against the device flow", function()
    local DEVICE_SCOPE = "openid offline_access " .. SCOPE

    -- Device login with injected time; `user(info)` runs during the second wait (the user at the
    -- device pages meanwhile).
    local function device_login(user, extra)
      local t = helpers.fake_time()
      local events = {}
      local o = {
        client_id = "device-app", devicecode_url = server.device_url, token_url = server.token_url,
        scope = DEVICE_SCOPE, clock = t.clock,
        sleep = function(s)
          t.sleep(s)
          if #t.sleeps == 2 and user then t.page = user(t.info) end
        end,
        on_code = function(info) t.info = info end,
        on_event = function(ev) events[#events + 1] = ev end,
      }
      for k, v in pairs(extra or {}) do o[k] = v end
      local tokens, err = pc.device_login(o)
      return tokens, err, t, events
    end

    it("polls while pending, the user approves at the device pages, and the tokens work", function()
      local tokens, err, t, events = device_login(function(info)
        return server:device_user(info.user_code, "approve")
      end)
      assert.is_nil(err)
      assert.equal(200, t.page.status)
      assert.truthy(t.page.body:find("Sign-in Success", 1, true), t.page.body)
      assert.equal(server.issuer .. "/device", t.info.verification_uri)
      assert.equal(server.issuer .. "/device?user_code=" .. t.info.user_code, t.info.verification_uri_complete)
      assert.equal(600, t.info.expires_in)
      assert.equal(5, t.info.interval) -- oidc-provider names none: RFC 8628's default
      assert.same({ 5, 5 }, t.sleeps) -- one authorization_pending, then the tokens
      assert.equal("string", type(tokens.refresh_token))
      assert.equal("string", type(tokens.id_token))
      local shown = {}
      for _, s in ipairs(strings(events)) do shown[#shown + 1] = s end
      for _, s in ipairs(shown) do
        assert.falsy(s:find(tokens.refresh_token, 1, true))
        assert.falsy(s:find(tokens.access_token, 1, true))
      end
      -- the access token is good at the resource server (the sandbox introspects it)
      local c = core.new { access_token = tokens.access_token }
      local resp, cerr = call(c)
      assert.is_nil(cerr)
      assert.equal(200, resp.status)
      -- the refresh token is redeemed by the core's refresh grant, and rotated
      local rotated
      local rc = core.new { refresh_token = { token_url = server.token_url, client_id = "device-app",
                                              refresh_token = tokens.refresh_token,
                                              on_refresh_token = function(new) rotated = new end } }
      resp, cerr = call(rc)
      assert.is_nil(cerr)
      assert.equal(200, resp.status)
      assert.equal("string", type(rotated))
      assert.are_not.equal(tokens.refresh_token, rotated)
    end)

    it("the user aborting at the confirmation page is an auth error, access_denied", function()
      local tokens, err, t = device_login(function(info) return server:device_user(info.user_code, "abort") end)
      assert.is_nil(tokens)
      helpers.assert_error(err, "auth")
      assert.equal("access_denied", err.code)
      assert.equal(400, err.status)
      assert.same({ 5, 5 }, t.sleeps)
      assert.truthy(t.page.body:find("interrupted", 1, true), t.page.body)
    end)

    it("a scope the client may not have is refused at the device endpoint, before any wait", function()
      local tokens, err, t = device_login(nil, { scope = "api.read" })
      assert.is_nil(tokens)
      helpers.assert_error(err, "auth")
      assert.equal("invalid_scope", err.code)
      assert.equal(400, err.status)
      assert.same({}, t.sleeps)
      assert.is_nil(t.info)
    end)
  end)

  describe("the server itself", function()
    local function curl(args)
      local p = assert(io.popen("env -u LD_PRELOAD curl -sS --noproxy '*' --max-time 5 " .. args .. " 2>&1"))
      local out = p:read("a")
      p:close()
      return out
    end
    local function form(s) return (s:gsub("[^%w]", function(ch) return ("%%%02X"):format(ch:byte()) end)) end

    it("listens on 127.0.0.1 and introspects tokens for the resource server only", function()
      assert.matches("^http://127%.0%.0%.1:%d+$", server.issuer)
      local body = curl(("-d 'grant_type=client_credentials&client_id=cc-post&client_secret=%s&scope=api.read' %s")
        :format(form(S.post), server.token_url))
      local token = assert(body:match('"access_token":"([^"]+)"'), body)
      local rs = curl(("-u 'rs:%s' -d 'token=%s' %s"):format(S.rs, token, server.introspection_url))
      assert.matches('"active":true', rs, 1, true)
      assert.matches('"client_id":"cc-post"', rs, 1, true)
      assert.matches('"scope":"api.read"', rs, 1, true)
      local other = curl(("-d 'client_id=cc-post&client_secret=%s&token=%s' %s"):format(form(S.post), token,
        server.introspection_url))
      assert.not_matches('"active":true', other, 1, true)
      assert.matches('"active":false', curl(("-u 'rs:%s' -d 'token=nope' %s"):format(S.rs, server.introspection_url)),
        1, true)
    end)

    it("stops idempotently", function()
      local s = oidc.start { clients = {} }
      local url = s.issuer
      s:stop()
      s:stop()
      assert.matches("Failed to connect", curl(url .. "/.well-known/openid-configuration"), 1, true)
    end)
  end)
end)
