-- The error object (printing it) and the redaction of the client's secrets from errors, against a
-- scripted HTTP server whose answers a case chooses byte for byte: status, headers and body.
local core = require "partnercustomers.core"
local util = require "spec.helpers.util"
local answer_server = require "spec.helpers.answer_server"

local function form_encode(s)
  return (s:gsub("[^%w%-%._~]", function(ch) return ("%%%02X"):format(ch:byte()) end))
end

-- No value of err (one level of nesting included), nor tostring(err), contains secret.
local function assert_clean(err, secret)
  assert.is_true(core.is_error(err), tostring(err))
  local function check(t, where)
    for k, v in pairs(t) do
      if type(v) == "table" then
        check(v, where .. tostring(k) .. ".")
      else
        assert.falsy(tostring(v):find(secret, 1, true), "the secret is in err." .. where .. tostring(k))
      end
    end
  end
  check(err, "")
  assert.falsy(tostring(err):find(secret, 1, true), "the secret is in tostring(err)")
end

describe("error objects", function()
  it("print number fields, converted, as the strings they stand for", function()
    local e = core.error { kind = "http", message = 42 }
    assert.equal("partnercustomers: http error: 42", tostring(e))
    e.code = 404
    assert.equal("partnercustomers: http error (code 404): 42", tostring(e))
    e.status, e.method, e.url, e.attempts = 503, "GET", "https://x.test/a", 3
    e.message = 0.5
    assert.equal("partnercustomers: http error 503 (code 404): 0.5 [GET https://x.test/a after 3 attempts]",
      tostring(e))
  end)

  it("keep every converted field referenced while the line is built", function()
    -- reading `url` runs a collection and reuses freed memory: a converted `method` that is
    -- no longer referenced by then would print as something else
    local e = core.error { kind = "network", message = "m" }
    e.method = 987654321
    setmetatable(e, {
      __tostring = core.Error.__tostring,
      __index = function(_, k)
        if k ~= "url" then return nil end
        collectgarbage()
        collectgarbage()
        local junk = {}
        for i = 1, 256 do junk[i] = ("%09d"):format(100000000 + i) end
        return "https://x.test/b"
      end,
    })
    for _ = 1, 3 do
      assert.equal("partnercustomers: network error: m [987654321 https://x.test/b]", tostring(e))
    end
  end)

  it("print on one line, NUL bytes and all", function()
    local e = core.error { kind = "protocol", message = "a\nb\r\nc\0d", code = "x\ny" }
    assert.equal("partnercustomers: protocol error (code x y): a b  c\0d", tostring(e))
  end)
end)

describe("redaction of the client's secrets", function()
  local srv
  setup(function() srv = answer_server.start() end)
  teardown(function() srv:stop() end)

  local TOKEN = "tok-" .. ("Zq9"):rep(12)
  local SECRET = "s3cr+t/with=chars&more"
  local ID = "app id/1"

  local function token_client(extra)
    local cc = { token_url = srv.url .. "/token", client_id = ID, client_secret = SECRET }
    for k, v in pairs(extra or {}) do cc[k] = v end
    return core.new { client_credentials = cc, max_retries = 0 }
  end

  it("keeps a secret echoed in the OAuth error field out of code and tostring", function()
    srv:answer { ["/token"] = { 400, { "Content-Type: application/json" },
                                ('{"error":"%s","error_description":"bad client"}'):format(SECRET) } }
    local c <close> = token_client()
    local res, err = c:request { url = srv.url .. "/api", scope = "s" }
    assert.is_nil(res)
    assert.equal("auth", err.kind)
    assert.equal("[redacted]", err.code)
    assert_clean(err, SECRET)
  end)

  it("redacts a token in the response's id headers and in the body's ids", function()
    local body = ('{"error":{"code":"%s","message":"no"},"trace_id":"%s","correlation_id":"%s"}'):format(
      TOKEN, TOKEN, TOKEN)
    srv:answer { ["*"] = { 404, { "Content-Type: application/json", "request-id: " .. TOKEN, "ms-cv: x" .. TOKEN },
                           body } }
    local c <close> = core.new { access_token = TOKEN }
    local res, err = c:request { url = srv.url .. "/api", scope = "s" }
    assert.is_nil(res)
    assert.equal("http", err.kind)
    assert.equal("[redacted]", err.request_id)
    assert.equal("x[redacted]", err.cv)
    assert.equal("[redacted]", err.code)
    assert.equal("[redacted]", err.trace_id)
    assert_clean(err, TOKEN)
  end)

  it("redacts a cached token the server echoes", function()
    local fetched = "fetched-" .. ("Kx7"):rep(10)
    srv:answer {
      ["/token"] = { 200, { "Content-Type: application/json" },
                     ('{"access_token":"%s","expires_in":3600}'):format(fetched) },
      ["/api"] = { 404, { "Content-Type: application/json", "x-ms-correlation-id: " .. fetched },
                   ('{"code":"c","description":"you sent %s"}'):format(fetched) },
    }
    local c <close> = token_client()
    local _, err = c:request { url = srv.url .. "/api", scope = "s" }
    assert.equal("you sent [redacted]", err.message)
    assert.equal("[redacted]", err.correlation_id)
    assert_clean(err, fetched)
  end)

  it("finds a secret after a NUL byte", function()
    srv:answer { ["*"] = { 404, { "Content-Type: application/json" },
                           ('{"error":{"code":"c","message":"a\\u0000%s"}}'):format(TOKEN) } }
    local c <close> = core.new { access_token = TOKEN }
    local _, err = c:request { url = srv.url .. "/api", scope = "s" }
    assert.equal("a\0[redacted]", err.message)
    assert_clean(err, TOKEN)
  end)

  it("redacts a secret in the form-encoded form it was sent in", function()
    local encoded = form_encode(SECRET)
    assert.not_equal(SECRET, encoded)
    srv:answer { ["/token"] = { 400, { "Content-Type: application/json" },
                                ('{"error":"invalid_client","error_description":"got client_secret=%s"}'):format(encoded) } }
    local c <close> = token_client()
    local _, err = c:request { url = srv.url .. "/api", scope = "s" }
    assert.equal("got client_secret=[redacted]", err.message)
    assert_clean(err, encoded)
  end)

  it("redacts the whole HTTP Basic credential", function()
    local basic = util.base64(form_encode(ID) .. ":" .. form_encode(SECRET))
    srv:answer { ["/token"] = { 401, { "Content-Type: application/json", "x-ms-request-id: Basic " .. basic },
                                ('{"error":"invalid_client","error_description":"Authorization: Basic %s"}'):format(basic) } }
    local c <close> = token_client { client_auth = "basic" }
    local _, err = c:request { url = srv.url .. "/api", scope = "s" }
    assert.equal("Authorization: Basic [redacted]", err.message)
    assert.equal("Basic [redacted]", err.request_id)
    assert_clean(err, basic)
  end)

  it("redacts err.body before cutting it at 2 KiB, so no prefix of a token straddling the cut leaks", function()
    local body = ("x"):rep(2040) .. TOKEN .. ("y"):rep(100)
    srv:answer { ["*"] = { 500, { "Content-Type: text/plain" }, body } }
    local c <close> = core.new { access_token = TOKEN, max_retries = 0 }
    local _, err = c:request { url = srv.url .. "/api", scope = "s" }
    assert.equal(2048, #err.body)
    assert.equal(("x"):rep(2040), err.body:sub(1, 2040))
    assert.equal(("[redacted]"):sub(1, 8), err.body:sub(2041))
    assert_clean(err, TOKEN:sub(1, 8))
  end)

  it("cuts a body without secrets at 2 KiB and keeps a short one whole", function()
    srv:answer { ["*"] = { 404, { "Content-Type: text/plain" }, ("z"):rep(5000) } }
    local c <close> = core.new { access_token = TOKEN }
    local _, err = c:request { url = srv.url .. "/api", scope = "s" }
    assert.is_true(err.body == ("z"):rep(2048), "cut at 2048 bytes: " .. #err.body)
    srv:answer { ["*"] = { 404, { "Content-Type: text/plain" }, "short " .. TOKEN .. " end" } }
    _, err = c:request { url = srv.url .. "/api", scope = "s" }
    assert.equal("short [redacted] end", err.body)
  end)
end)
