-- The sandbox's token endpoints with certificate credentials (client assertions, RFC 7523) and HTTP
-- Basic client authentication. Assertions are made here, independently of the module under test:
-- JSON with cjson, base64url in Lua, signatures with the openssl command line; requests with curl.
-- One test at the end goes through the module itself.

local sandbox = require "spec.helpers.sandbox"
local cjson = require "cjson"

local ODATA_SCOPE = "partner.customers.read.all"
local V3_SCOPE = "elements.customers.read.all"
local V3 = "/partner/external/v3/general/customers"
local PC_SCOPE_V2 = "https://api.partnercenter.microsoft.com/.default"
local PC_RESOURCE = "https://api.partnercenter.microsoft.com"
local JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
local FORM = {["content-type"] = "application/x-www-form-urlencoded"}
local decode = sandbox.decode
local helpers = require "spec.helpers.util"
local sh, capture, read, write = helpers.sh, helpers.capture, helpers.read, helpers.write
local b64url, base64 = helpers.b64url, helpers.base64

---------------------------------------------------------------------------------------------
-- Shell, files, encodings


local function form_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- fields: an array of {name, value}, in that order
local function form(fields)
  local parts = {}
  for _, f in ipairs(fields) do parts[#parts + 1] = form_encode(f[1]) .. "=" .. form_encode(f[2]) end
  return table.concat(parts, "&")
end

---------------------------------------------------------------------------------------------
-- A tiny JWT signer

local dir
local function p(name) return dir .. "/" .. name end

-- The certificate's thumbprints, from `openssl x509 -fingerprint` (upper-case hex, colons).
local function thumbprints(cert)
  local line = capture("openssl x509 -in " .. cert .. " -noout -fingerprint -sha1")
  local hex = assert(line:match("=([%x:]+)")):gsub(":", "")
  local raw = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  return {kid = hex:upper(), x5t = b64url(raw)}
end

local signed = 0
-- Signs `input` with openssl: RS256 and PS256 with an RSA key file, HS256 with a shared secret.
local function signature(alg, input, key)
  signed = signed + 1
  local data, sig = p("in" .. signed), p("sig" .. signed)
  write(data, input)
  if alg == "RS256" then
    sh(("openssl dgst -sha256 -sign %s -out %s %s"):format(key, sig, data))
  elseif alg == "PS256" then
    sh(("openssl dgst -sha256 -sign %s -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -out %s %s")
      :format(key, sig, data))
  elseif alg == "HS256" then
    sh(("openssl dgst -sha256 -hmac %s -binary -out %s %s"):format(key, sig, data))
  else
    return ""
  end
  local s = read(sig)
  os.remove(data)
  os.remove(sig)
  return s
end

local jti_serial = 0
local function fresh_jti()
  jti_serial = jti_serial + 1
  return string.format("spec-%d-%d-%d", os.time(), math.random(1 << 30), jti_serial)
end

-- A client assertion. o: aud (required), alg (default RS256), key (file; default the uploaded
-- certificate's key), sign_alg (how to really sign, when it differs from the header's alg),
-- header / claims: fields to replace (false: drop).
local function jwt(sb, thumbs, o)
  local alg = o.alg or "RS256"
  local now = os.time()
  local header = {alg = alg, typ = "JWT", kid = thumbs.kid, x5t = thumbs.x5t}
  local claims = {iss = sb.client_id, sub = sb.client_id, aud = o.aud, jti = fresh_jti(),
                  iat = now, nbf = now, exp = now + 300}
  for k, v in pairs(o.header or {}) do header[k] = v or nil end
  for k, v in pairs(o.claims or {}) do claims[k] = v or nil end
  local input = b64url(cjson.encode(header)) .. "." .. b64url(cjson.encode(claims))
  return input .. "." .. b64url(signature(o.sign_alg or alg, input, o.key or p("key.pem")))
end

---------------------------------------------------------------------------------------------

describe("sandbox: client assertions", function()
  local sb, thumbs, other_thumbs

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    sh("mkdir -p " .. dir)
    local subj = "-subj /CN=partnercustomers-sandbox-test -days 2"
    local req = "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s %s"
    sh(req:format(p("key.pem"), p("cert.pem"), subj))
    sh(req:format(p("other-key.pem"), p("other.pem"), subj))
    thumbs, other_thumbs = thumbprints(p("cert.pem")), thumbprints(p("other.pem"))
    sb = sandbox.start{count = 12, seed = 3, client_cert = p("cert.pem")}
  end)

  teardown(function()
    if sb then sb:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  before_each(function()
    sb:clear_log()
  end)

  -- The token endpoints: AvePoint, Entra v2, Entra v1.
  local function endpoints()
    return {
      {name = "AvePoint", url = sb.token_url, status = 400, audience = {"scope", ODATA_SCOPE}},
      {name = "Entra v2", url = sb.pc_token_url_v2, status = 401, audience = {"scope", PC_SCOPE_V2}},
      {name = "Entra v1", url = sb.pc_token_url_v1, status = 401, audience = {"resource", PC_RESOURCE}},
    }
  end

  -- POSTs an assertion to endpoint `ep`. extra: more form fields; headers: more headers.
  local function post(ep, assertion, extra, headers)
    local fields = {{"grant_type", "client_credentials"}, ep.audience,
                    {"client_assertion_type", JWT_BEARER}, {"client_assertion", assertion}}
    for _, f in ipairs(extra or {}) do fields[#fields + 1] = f end
    local h = {["content-type"] = FORM["content-type"]}
    for k, v in pairs(headers or {}) do h[k] = v end
    return sb:request{method = "POST", url = ep.url, headers = h, body = form(fields)}
  end

  local function good(ep, o)
    o = o or {}
    o.aud = o.aud or ep.url
    return jwt(sb, thumbs, o)
  end

  -- A refusal: the endpoint's status, invalid_client, a description naming the failed check,
  -- and no part of the assertion in the answer.
  local function assert_refused(ep, res, assertion, pattern)
    assert.equals(ep.status, res.status, ep.name .. ": " .. tostring(res.body))
    local body = decode(res.body)
    assert.equals("invalid_client", body.error, ep.name)
    assert.matches(pattern, body.error_description, nil, false, ep.name)
    for part in assertion:gmatch("[^.]+") do
      assert.is_nil(res.body:find(part, 1, true), ep.name .. ": the answer quotes the assertion")
    end
    if ep.status == 401 then
      assert.is_table(body.error_codes)
      assert.matches("^AADSTS%d+: client assertion: ", body.error_description)
    end
    return body
  end

  local function assert_token_works(ep, res)
    assert.equals(200, res.status, ep.name .. ": " .. tostring(res.body))
    local token = decode(res.body).access_token
    if ep.name == "AvePoint" then
      assert.equals(200, sb:request{path = "/partner/customers", token = token}.status)
    else
      assert.equals(200, sb:request{path = "/v1/customers?size=2", token = token}.status)
    end
  end

  describe("accepted", function()
    it("a good RS256 and a good PS256 assertion, on every token endpoint; the token works", function()
      for _, ep in ipairs(endpoints()) do
        for _, alg in ipairs{"RS256", "PS256"} do
          assert_token_works(ep, post(ep, good(ep, {alg = alg})))
        end
      end
    end)

    it("with the client_id too, and with only kid or only x5t (plus x5t#S256 when right)", function()
      local ep = endpoints()[1]
      assert_token_works(ep, post(ep, good(ep), {{"client_id", sb.client_id}}))
      assert_token_works(ep, post(ep, good(ep, {header = {x5t = false}})))
      assert_token_works(ep, post(ep, good(ep, {alg = "PS256", header = {kid = false}})))
      local der = capture("openssl x509 -in " .. p("cert.pem") .. " -outform DER | openssl dgst -sha256 -binary")
      assert_token_works(ep, post(ep, good(ep, {header = {["x5t#S256"] = b64url(der)}})))
      ep = endpoints()[2]
      assert_token_works(ep, post(ep, good(ep, {alg = "PS256", header = {kid = false}}), {{"client_id", sb.client_id}}))
    end)

    it("for the v3 scope, and with aud the URL as the client addressed it (Host header)", function()
      local ep = endpoints()[1]
      ep.audience = {"scope", V3_SCOPE}
      local res = post(ep, good(ep))
      assert.equals(200, res.status, res.body)
      assert.equals(200, sb:request{path = V3, token = decode(res.body).access_token}.status)
      local host = "sandbox.example.test:" .. sb.port
      local aud = "http://" .. host .. "/connect/token"
      assert.equals(200, post(ep, good(ep, {aud = aud}), nil, {host = host}).status)
      -- the same assertion sent to the sandbox under its own address is for another audience
      assert_refused(ep, post(ep, good(ep, {aud = aud})), "x.y", "aud must be")
      -- aud as an array holding the token URL
      assert.equals(200, post(ep, good(ep, {aud = {"https://other.example", ep.url}})).status)
    end)

    it("within the 60 s clock skew", function()
      local ep = endpoints()[1]
      local now = os.time()
      assert.equals(200, post(ep, good(ep, {claims = {iat = now - 320, nbf = now - 320, exp = now - 20}})).status)
      assert.equals(200, post(ep, good(ep, {claims = {iat = now + 20, nbf = now + 20, exp = now + 320}})).status)
    end)
  end)

  describe("refused with invalid_client (AvePoint 400, Entra 401), naming the check", function()
    it("a wrong signature: another key, or a header alg the signature was not made with", function()
      for _, ep in ipairs(endpoints()) do
        for _, alg in ipairs{"RS256", "PS256"} do
          local a = good(ep, {alg = alg, key = p("other-key.pem")})
          assert_refused(ep, post(ep, a), a, "signature does not verify")
        end
        local a = good(ep, {alg = "PS256", sign_alg = "RS256"})
        assert_refused(ep, post(ep, a), a, "PS256 signature does not verify")
        a = good(ep, {alg = "RS256", sign_alg = "PS256"})
        local body = assert_refused(ep, post(ep, a), a, "RS256 signature does not verify")
        if ep.status == 401 then assert.same({700027}, body.error_codes) end
        -- a signature of the right key but with one byte changed
        a = good(ep)
        local tampered = a:sub(1, -3) .. (a:sub(-2, -2) == "A" and "B" or "A") .. a:sub(-1)
        assert_refused(ep, post(ep, tampered), tampered, "signature")
      end
    end)

    it("an unknown kid or x5t, or none", function()
      for _, ep in ipairs(endpoints()) do
        local a = good(ep, {header = {kid = other_thumbs.kid}})
        assert_refused(ep, post(ep, a), a, "kid is not the SHA%-1 thumbprint")
        a = good(ep, {header = {kid = false, x5t = other_thumbs.x5t}})
        assert_refused(ep, post(ep, a), a, "x5t is not the SHA%-1 thumbprint")
        a = good(ep, {header = {kid = false, x5t = false}})
        assert_refused(ep, post(ep, a), a, "names no key")
        -- the key of the other certificate, named as such: still not the uploaded one
        a = good(ep, {key = p("other-key.pem"), header = {kid = other_thumbs.kid, x5t = other_thumbs.x5t}})
        assert_refused(ep, post(ep, a), a, "kid is not")
      end
    end)

    it("a wrong iss or sub", function()
      for _, ep in ipairs(endpoints()) do
        local a = good(ep, {claims = {iss = "someone-else"}})
        assert_refused(ep, post(ep, a), a, "iss must be the client id")
        a = good(ep, {claims = {sub = "someone-else"}})
        assert_refused(ep, post(ep, a), a, "sub must be the client id")
        a = good(ep, {claims = {iss = false}})
        assert_refused(ep, post(ep, a), a, "iss must be")
        -- both naming another client, and the client_id parameter agreeing with them
        a = good(ep, {claims = {iss = "someone-else", sub = "someone-else"}})
        assert_refused(ep, post(ep, a, {{"client_id", "someone-else"}}), a, "iss must be")
      end
    end)

    it("a client_id parameter other than the assertion's iss", function()
      for _, ep in ipairs(endpoints()) do
        local a = good(ep)
        local body = assert_refused(ep, post(ep, a, {{"client_id", "someone-else"}}), a,
          "client_id parameter differs")
        if ep.status == 401 then assert.same({700021}, body.error_codes) end
      end
    end)

    it("a wrong aud: another service, another endpoint of the sandbox, another port, none", function()
      for _, ep in ipairs(endpoints()) do
        for _, aud in ipairs{"https://identity.avepointonlineservices.com/connect/token",
                             ep.url == sb.token_url and sb.pc_token_url_v2 or sb.token_url,
                             sb.url:gsub(":%d+$", ":1") .. ep.url:sub(#sb.url + 1),
                             ep.url .. "/", sb.url} do
          local a = good(ep, {aud = aud})
          assert_refused(ep, post(ep, a), a, "aud must be this token endpoint's URL, " .. ep.url:gsub("%p", "%%%0"))
        end
        local a = good(ep, {claims = {aud = false}})
        local body = assert_refused(ep, post(ep, a), a, "aud must be")
        if ep.status == 401 then assert.same({700023}, body.error_codes) end
      end
    end)

    it("expired, not yet valid, issued in the future, too long-lived", function()
      for _, ep in ipairs(endpoints()) do
        local now = os.time()
        local a = good(ep, {claims = {iat = now - 500, nbf = now - 500, exp = now - 100}})
        local body = assert_refused(ep, post(ep, a), a, "has expired")
        if ep.status == 401 then assert.same({700024}, body.error_codes) end
        a = good(ep, {claims = {exp = false}})
        assert_refused(ep, post(ep, a), a, "exp is missing")
        a = good(ep, {claims = {iat = now, nbf = now + 200, exp = now + 500}})
        assert_refused(ep, post(ep, a), a, "not valid yet")
        a = good(ep, {claims = {iat = now + 200, nbf = false, exp = now + 500}})
        assert_refused(ep, post(ep, a), a, "iat is in the future")
        a = good(ep, {claims = {iat = now, nbf = now, exp = now + 3600}})
        assert_refused(ep, post(ep, a), a, "lives too long")
        a = good(ep, {claims = {iat = now, exp = now + 601}})
        assert_refused(ep, post(ep, a), a, "lives too long")
        a = good(ep, {claims = {iat = false}})
        assert_refused(ep, post(ep, a), a, "iat is missing")
      end
    end)

    it("a missing jti, and a jti used before (on any endpoint)", function()
      local used = fresh_jti()
      for i, ep in ipairs(endpoints()) do
        local a = good(ep, {claims = {jti = false}})
        assert_refused(ep, post(ep, a), a, "jti is missing")
        a = good(ep, {claims = {jti = ""}})
        assert_refused(ep, post(ep, a), a, "jti is missing")
        if i == 1 then
          assert.equals(200, post(ep, good(ep, {claims = {jti = used}})).status)
        end
        -- the same assertion again, and a new assertion with the same jti
        a = good(ep, {claims = {jti = used}})
        assert_refused(ep, post(ep, a), a, "jti was used before")
        local again = good(ep)
        assert.equals(200, post(ep, again).status)
        assert_refused(ep, post(ep, again), again, "jti was used before")
      end
    end)

    it("alg none, HS256 and other algorithms; a typ other than JWT", function()
      for _, ep in ipairs(endpoints()) do
        local a = good(ep, {alg = "none"})
        assert_refused(ep, post(ep, a), a, "alg none is not accepted")
        a = good(ep, {alg = "none", sign_alg = "RS256"})
        assert_refused(ep, post(ep, a), a, "alg none is not accepted")
        a = good(ep, {alg = "HS256", key = "sandbox-client-secret"})
        assert_refused(ep, post(ep, a), a, "alg HS256 is not accepted")
        a = good(ep, {alg = "RS512", sign_alg = "RS256"})
        assert_refused(ep, post(ep, a), a, "alg RS512 is not accepted")
        a = good(ep, {header = {alg = false}})
        assert_refused(ep, post(ep, a), a, "this alg is not accepted")
        a = good(ep, {header = {typ = "JOSE+JSON"}})
        assert_refused(ep, post(ep, a), a, "typ must be JWT")
        a = good(ep, {header = {typ = false}})
        assert_refused(ep, post(ep, a), a, "typ must be JWT")
      end
    end)

    it("a malformed JWT, an empty one, a wrong client_assertion_type", function()
      for _, ep in ipairs(endpoints()) do
        local a = good(ep)
        local h, c, s = a:match("^([^.]+)%.([^.]+)%.([^.]+)$")
        local cases = {
          {"not-a-jwt", "compact form"},
          {h .. "." .. c, "compact form"},
          {a .. ".extra", "compact form"},
          {b64url("not json") .. "." .. c .. "." .. s, "header is not"},
          {b64url("[1,2]") .. "." .. c .. "." .. s, "header is not"},
          {h .. "." .. b64url('"a string"') .. "." .. s, "claims are not"},
          {h .. "." .. c .. "." .. s .. "+/", "signature is not base64url"},
          {h .. "=." .. c .. "." .. s, "header is not"},
          {h .. "." .. c .. ".", "signature is missing"},
          {h .. "." .. c .. "." .. s:sub(1, 20), "wrong length"},
        }
        for _, case in ipairs(cases) do
          assert_refused(ep, post(ep, case[1]), case[1], case[2])
        end
        local res = sb:request{method = "POST", url = ep.url, headers = FORM, body = form{
          {"grant_type", "client_credentials"}, ep.audience, {"client_assertion_type", JWT_BEARER},
          {"client_assertion", ""}}}
        assert_refused(ep, res, "x", "missing or empty")
        a = good(ep)
        res = sb:request{method = "POST", url = ep.url, headers = FORM, body = form{
          {"grant_type", "client_credentials"}, ep.audience, {"client_assertion_type", "urn:x:jwt"},
          {"client_assertion", a}}}
        assert_refused(ep, res, a, "client_assertion_type must be")
        res = sb:request{method = "POST", url = ep.url, headers = FORM, body = form{
          {"grant_type", "client_credentials"}, ep.audience, {"client_assertion", a}}}
        assert_refused(ep, res, a, "client_assertion_type must be")
      end
    end)

    it("an assertion together with a secret (invalid_request: one method only)", function()
      for _, ep in ipairs(endpoints()) do
        local a = good(ep)
        local res = post(ep, a, {{"client_secret", sb.client_secret}})
        assert.equals(400, res.status)
        assert.equals("invalid_request", decode(res.body).error)
        res = post(ep, a, nil, {authorization = "Basic " .. base64(sb.client_id .. ":" .. sb.client_secret)})
        assert.equals(400, res.status)
        assert.equals("invalid_request", decode(res.body).error)
        assert.is_nil(res.body:find(sb.client_secret, 1, true))
      end
    end)
  end)

  it("keeps secrets working, and redacts client_assertion in the log", function()
    assert.truthy(sb:token(ODATA_SCOPE))
    assert.truthy(sb:pc_token())
    local ep = endpoints()[2]
    local a = good(ep, {alg = "PS256"})
    assert.equals(200, post(ep, a).status)
    local raw = sb:request{path = "/_sandbox/log"}.body
    for part in a:gmatch("[^.]+") do
      assert.is_nil(raw:find(part, 1, true), "the log quotes the assertion")
    end
    local entry = decode(raw)[3]
    assert.truthy(entry.body:find("client_assertion=[redacted]", 1, true))
    assert.truthy(entry.body:find("client_assertion_type=" .. form_encode(JWT_BEARER), 1, true))
  end)

  it("checks concurrent PS256 assertions independently, serving other requests meanwhile", function()
    local ep = endpoints()[1]
    local pending = {}
    for i = 1, 6 do
      local a = good(ep, {alg = "PS256", key = i == 4 and p("other-key.pem") or nil})
      pending[i] = sb:request_start{method = "POST", url = ep.url, headers = FORM, body = form{
        {"grant_type", "client_credentials"}, ep.audience, {"client_assertion_type", JWT_BEARER},
        {"client_assertion", a}}}
    end
    assert.equals(200, sb:request{path = "/_sandbox/customers"}.status)
    for i = 1, 6 do
      local res = sandbox.curl_finish(pending[i])
      assert.equals(i == 4 and 400 or 200, res.status, tostring(res.body))
    end
  end)

  it("through the module: a PS256 certificate client gets a token and lists customers", function()
    local core = require "partnercustomers.core"
    local client = core.new{client_credentials = {token_url = sb.token_url, client_id = sb.client_id,
      certificate = {key = p("key.pem"), cert = p("cert.pem"), alg = "PS256"}}}
    local res, err = client:request{method = "GET", url = sb.url .. "/partner/customers", scope = ODATA_SCOPE}
    assert.is_nil(err and tostring(err))
    assert.equals(200, res.status)
    assert.equals(12, #res.data.value)
    local log = sb:log()
    assert.equals("/connect/token", log[1].path)
    assert.equals(200, log[1].status)
    assert.truthy(log[1].body:find("client_assertion=[redacted]", 1, true))
    client:close()
  end)
end)

describe("sandbox: HTTP Basic client authentication, and no certificate", function()
  -- a client id with characters that RFC 6749 2.3.1's form-encoding changes (':' must be escaped)
  local ID = "app one:two+three"
  local sb

  setup(function()
    sb = sandbox.start{count = 6, seed = 3, client_id = ID}
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  local function basic(id, secret)
    return "Basic " .. base64(form_encode(id) .. ":" .. form_encode(secret))
  end

  local function endpoints()
    return {
      {name = "AvePoint", url = sb.token_url, status = 400, audience = {"scope", ODATA_SCOPE}},
      {name = "Entra v2", url = sb.pc_token_url_v2, status = 401, audience = {"scope", PC_SCOPE_V2}},
      {name = "Entra v1", url = sb.pc_token_url_v1, status = 401, audience = {"resource", PC_RESOURCE}},
    }
  end

  local function post(ep, authorization, extra)
    local fields = {{"grant_type", "client_credentials"}, ep.audience}
    for _, f in ipairs(extra or {}) do fields[#fields + 1] = f end
    return sb:request{method = "POST", url = ep.url, body = form(fields),
      headers = {["content-type"] = FORM["content-type"], authorization = authorization}}
  end

  it("accepts Basic with the form-encoded id and secret on every token endpoint", function()
    for _, ep in ipairs(endpoints()) do
      local res = post(ep, basic(ID, sb.client_secret))
      assert.equals(200, res.status, ep.name .. ": " .. tostring(res.body))
      local token = decode(res.body).access_token
      local path = ep.name == "AvePoint" and "/partner/customers" or "/v1/customers?size=1"
      assert.equals(200, sb:request{path = path, token = token}.status)
      -- the same id in the body too is fine
      assert.equals(200, post(ep, basic(ID, sb.client_secret), {{"client_id", ID}}).status)
    end
  end)

  it("refuses a wrong secret, an id not form-encoded, and a second method", function()
    for _, ep in ipairs(endpoints()) do
      local res = post(ep, basic(ID, "wrong-secret"))
      assert.equals(ep.status, res.status, ep.name)
      assert.equals("invalid_client", decode(res.body).error)
      assert.is_nil(res.body:find(sb.client_secret, 1, true))
      -- the raw ':' in the id splits it there: another client
      res = post(ep, "Basic " .. base64(ID .. ":" .. sb.client_secret))
      assert.equals(400, res.status, ep.name)
      assert.matches(ep.status == 400 and "invalid_client" or "unauthorized_client", decode(res.body).error)
      res = post(ep, basic(ID, sb.client_secret), {{"client_secret", sb.client_secret}})
      assert.equals(400, res.status)
      assert.equals("invalid_request", decode(res.body).error)
      res = post(ep, basic(ID, sb.client_secret), {{"client_id", "someone-else"}})
      assert.equals(400, res.status)
      assert.equals("invalid_request", decode(res.body).error)
      assert.is_nil(res.body:find(sb.client_secret, 1, true))
    end
  end)

  it("refuses any assertion when started without --client-cert", function()
    for _, ep in ipairs(endpoints()) do
      local res = post(ep, nil, {{"client_assertion_type", JWT_BEARER}, {"client_assertion", "a.b.c"}})
      assert.equals(ep.status, res.status, ep.name)
      local body = decode(res.body)
      assert.equals("invalid_client", body.error)
      assert.matches("no client certificate", body.error_description)
    end
  end)
end)
