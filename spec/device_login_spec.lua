-- pc.device_login (the device authorization grant, RFC 8628) and the `login` command against the
-- sandbox's Entra-style device endpoints, with hostile answers from the raw peer. The user's
-- answer is played through the sandbox's admin calls from inside the injected sleep; time is
-- injected, so no wait is real.
local pc = require "partnercustomers"
local login_cmd = require "partnercustomers.login_cmd"
local sandbox = require "spec.helpers.sandbox"
local rawpeer = require "spec.helpers.rawpeer"
local helpers = require "spec.helpers.util"
local cjson = require "cjson"
local fake_time, assert_error, shell_quote = helpers.fake_time, helpers.assert_error, helpers.shell_quote

local USER_SCOPE = "https://api.partnercenter.microsoft.com/user_impersonation"

local form_of = helpers.form_of

-- Asserts that f raises a partnercustomers misuse message blamed on this file, with every needle.
local function raises(f, ...)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected an error")
  assert.matches("device_login_spec%.lua:%d+: partnercustomers: ", err)
  for _, needle in ipairs { ... } do
    assert.truthy(err:find(needle, 1, true), ("%q not in %q"):format(needle, err))
  end
end

local function mkdtemp()
  local p = assert(io.popen("mktemp -d"))
  local dir = p:read("l")
  p:close()
  return dir
end

local function listing(dir)
  local p = assert(io.popen("ls -A " .. shell_quote(dir)))
  local names = {}
  for name in p:lines() do names[#names + 1] = name end
  p:close()
  return names
end

local function mode_of(path)
  local p = assert(io.popen("stat -c %a " .. shell_quote(path)))
  local mode = p:read("l")
  p:close()
  return mode
end

describe("pc.device_login against the sandbox", function()
  local sb

  setup(function() sb = sandbox.start { count = 4 } end)
  teardown(function() sb:stop() end)

  -- The codes the sandbox handed out, newest last (device codes included, for the secret checks).
  local function codes() return sb:admin("GET", "/_sandbox/device") end
  local function act(action, extra)
    local body = { action = action }
    for k, v in pairs(extra or {}) do body[k] = v end
    return sb:admin("POST", "/_sandbox/device", cjson.encode(body))
  end

  -- Options for the sandbox, time injected; `script[n]` runs during the n-th wait.
  local function options(t, script, extra)
    local o = {
      client_id = sb.client_id,
      token_url = sb.pc_token_url_v2,
      clock = t.clock,
      sleep = function(s)
        t.sleep(s)
        local step = script and script[#t.sleeps]
        if step then step() end
      end,
      on_code = function(info) t.info = info end,
      on_event = function(ev) t.events[#t.events + 1] = ev end,
    }
    t.events = {}
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  -- Nothing the client was given or got as a secret appears in err or in an event.
  local function assert_no_secrets(t, err, secrets)
    local text = cjson.encode(t.events)
    for _, s in ipairs(secrets) do
      assert.falsy(text:find(s, 1, true), "a secret in an event")
      if err then
        for k, v in pairs(err) do
          assert.falsy(tostring(v):find(s, 1, true), "a secret in err." .. tostring(k))
        end
      end
    end
  end

  it("shows the code, polls every interval while pending, and returns tokens the Partner Center client can use", function()
    local t = fake_time()
    local tokens, err = pc.device_login(options(t, { [3] = function() act("approve") end }))
    assert.is_nil(err)
    -- what the user is shown
    local code = codes()[#codes()]
    assert.equal(code.user_code, t.info.user_code)
    assert.equal(sb.url .. "/devicelogin", t.info.verification_uri)
    assert.equal(900, t.info.expires_in)
    assert.equal(5, t.info.interval)
    assert.truthy(t.info.message:find(code.user_code, 1, true))
    local page = sb:request { path = "/devicelogin" }
    assert.equal(200, page.status)
    assert.truthy(page.body:find(sb.url .. "/_sandbox/device", 1, true), page.body)
    assert.equal("To sign in, open " .. sb.url .. "/devicelogin in a web browser and enter the code "
                 .. code.user_code .. " (it expires in 15 minutes).",
                 require("partnercustomers.device_login").instructions(t.info))
    -- two pending polls, the third one approved, each after the interval
    assert.same({ 5, 5, 5 }, t.sleeps)
    assert.equal(3, code.polls)
    assert.equal("redeemed", code.state)
    assert.equal(USER_SCOPE .. " offline_access", code.scope)
    assert.equal("string", type(tokens.access_token))
    assert.equal("string", type(tokens.refresh_token))
    assert.equal(USER_SCOPE, tokens.scope)
    assert.equal(3600, tokens.expires_in)
    -- the poll events: why each wait
    assert.same({ { type = "poll", wait = 5, reason = "start" },
                  { type = "poll", wait = 5, reason = "authorization_pending" },
                  { type = "poll", wait = 5, reason = "authorization_pending" } },
                (function()
                  local out = {}
                  for _, ev in ipairs(t.events) do if ev.type == "poll" then out[#out + 1] = ev end end
                  return out
                end)())
    assert_no_secrets(t, nil, { tokens.refresh_token, tokens.access_token, code.device_code })
    -- what the sandbox received: the v2 forms, no client secret (a public client)
    local log = {}
    for _, e in ipairs(sb:log()) do
      if e.path:find("/oauth2/", 1, true) then log[#log + 1] = e end
    end
    local asked = form_of(log[#log - 3].body)
    assert.same({ client_id = sb.client_id, scope = USER_SCOPE .. " offline_access" }, asked)
    assert.matches("/oauth2/v2%.0/devicecode$", log[#log - 3].path)
    local polled = form_of(log[#log].body)
    assert.equal("urn:ietf:params:oauth:grant-type:device_code", polled.grant_type)
    assert.equal("[redacted]", polled.device_code) -- the sandbox's log hides it too
    -- the refresh token works with pc.partnercenter (and is rotated by it)
    local rotated
    local mpc = pc.partnercenter { client_id = sb.client_id, token_url = sb.pc_token_url_v2, base_url = sb.url,
                                   refresh_token = tokens.refresh_token,
                                   on_refresh_token = function(new) rotated = new end }
    local org, oerr = mpc:organization(sb:pc_org_url():match("/customers/([^/]+)/"))
    mpc:close()
    assert.is_nil(oerr)
    assert.equal("string", type(org.displayName))
    assert.equal("string", type(rotated))
  end)

  it("adds 5 seconds to the interval at each slow_down, for every later poll", function()
    local t = fake_time()
    local tokens, err = pc.device_login(options(t, {
      [1] = function() act("slow_down") end,
      [3] = function() act("slow_down") end,
      [5] = function() act("approve") end,
    }))
    assert.is_nil(err)
    assert.equal("string", type(tokens.refresh_token))
    assert.same({ 5, 10, 10, 15, 15 }, t.sleeps)
    local reasons = {}
    for _, ev in ipairs(t.events) do
      if ev.type == "poll" then reasons[#reasons + 1] = ev.reason end
    end
    assert.same({ "start", "slow_down", "authorization_pending", "slow_down", "authorization_pending" }, reasons)
  end)

  it("gives an auth error when the server says the code expired", function()
    local t = fake_time()
    local tokens, err = pc.device_login(options(t, { [2] = function() act("expire") end }))
    assert.is_nil(tokens)
    assert_error(err, "auth", { sb.client_secret })
    assert.equal("expired_token", err.code)
    assert.equal(400, err.status)
    assert.equal(2, codes()[#codes()].polls)
    assert_no_secrets(t, err, { codes()[#codes()].device_code })
  end)

  it("stops polling once the code's lifetime (expires_in) has passed, without a request past it", function()
    local t = fake_time()
    local o = options(t)
    local sleep = o.sleep
    o.sleep = function(s) sleep(s); t.now = t.now + 400 end -- a slow machine: each wait lasts longer
    local tokens, err = pc.device_login(o)
    assert.is_nil(tokens)
    assert_error(err, "auth")
    assert.equal("expired_token", err.code)
    assert.is_nil(err.status)
    -- waits end at 405, 810, then 1215: past 900, so no third poll
    assert.same({ 5, 5, 5 }, t.sleeps)
    assert.equal(2, err.attempts)
    assert.equal(2, codes()[#codes()].polls)
    assert.equal("pending", codes()[#codes()].state)
  end)

  it("gives an auth error when the user declines (Entra's authorization_declined, RFC 8628's access_denied)", function()
    for _, code in ipairs { "authorization_declined", "access_denied" } do
      local t = fake_time()
      local tokens, err = pc.device_login(options(t, { [1] = function() act("deny", { error = code }) end }))
      assert.is_nil(tokens)
      assert_error(err, "auth")
      assert.equal(code, err.code)
      assert.equal(400, err.status)
      assert.same({ 5 }, t.sleeps)
      assert_no_secrets(t, err, { codes()[#codes()].device_code })
    end
  end)

  it("ends with a timeout error at its own deadline, before the code expires", function()
    local t = fake_time()
    local tokens, err = pc.device_login(options(t, nil, { deadline = 12 }))
    assert.is_nil(tokens)
    assert_error(err, "timeout")
    assert.equal(0, err.attempts)
    assert.same({ 5, 5 }, t.sleeps)
  end)

  it("sends a confidential client's secret and never shows it; a wrong one is an auth error", function()
    local t = fake_time()
    local tokens, err = pc.device_login(options(t, { [1] = function() act("approve") end },
                                                { client_secret = sb.client_secret }))
    assert.is_nil(err)
    assert.equal("string", type(tokens.refresh_token))
    t = fake_time()
    tokens, err = pc.device_login(options(t, nil, { client_secret = "wrong-" .. sb.client_secret }))
    assert.is_nil(tokens)
    assert_error(err, "auth", { sb.client_secret, "wrong-" .. sb.client_secret })
    assert.equal("invalid_client", err.code)
    assert.equal(401, err.status)
    assert.equal("string", type(err.trace_id))
    assert.same({}, t.sleeps)
    assert.is_nil(t.info)
  end)

  it("turns the device code endpoint's refusals into auth errors (scope, tenant, client)", function()
    local cases = {
      { { scope = "https://graph.microsoft.com/.default" }, "invalid_scope" },
      { { token_url = sb.url .. "/other.example/oauth2/v2.0/token" }, "invalid_request" },
      { { client_id = "someone-else" }, "unauthorized_client" },
    }
    for _, case in ipairs(cases) do
      local t = fake_time()
      local tokens, err = pc.device_login(options(t, nil, case[1]))
      assert.is_nil(tokens)
      assert_error(err, "auth")
      assert.equal(case[2], err.code)
      assert.equal(400, err.status)
      assert.same({}, t.sleeps)
    end
  end)

  it("the sandbox's device admin call refuses what it cannot do", function()
    local function post(body)
      return sb:request { method = "POST", path = "/_sandbox/device", body = body,
                          headers = { ["content-type"] = "application/json" } }
    end
    assert.equal(400, post('{"action":"explode"}').status)
    assert.equal(400, post('{"action":"deny","error":"server_error"}').status)
    assert.equal(400, post("not json").status)
    assert.equal(404, post('{"action":"approve","user_code":"NOSUCHCODE"}').status)
    local redeemed
    for _, c in ipairs(codes()) do if c.state == "redeemed" then redeemed = c.user_code end end
    assert.equal(409, post(cjson.encode { action = "deny", user_code = redeemed }).status)
  end)

  it("writes the refresh token with the login command: mode 600, atomically, no temporary file left", function()
    local dir = mkdtemp()
    local file = dir .. "/refresh-token"
    local f = assert(io.open(file, "w")) -- an old file, readable by all: replaced, not rewritten
    f:write("old\n")
    f:close()
    os.execute("chmod 644 " .. shell_quote(file))
    local t = fake_time()
    local err = helpers.sink()
    local events = {}
    local rc = login_cmd.run({
      PARTNERCUSTOMERS_PC_CLIENT_ID = sb.client_id,
      PARTNERCUSTOMERS_PC_TOKEN_URL = sb.pc_token_url_v2,
      PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE = file,
    }, helpers.sink(), err, {
      clock = t.clock,
      sleep = function(s) t.sleep(s); if #t.sleeps == 2 then act("approve") end end,
      on_event = function(ev) events[#events + 1] = ev end,
    })
    local text = err:text()
    assert.equal(0, rc, text)
    local token = helpers.read(file):match("^(%S+)\n$")
    assert.truthy(token)
    assert.equal("600", mode_of(file))
    assert.same({ "refresh-token" }, listing(dir))
    local code = codes()[#codes()]
    assert.truthy(text:find("enter the code " .. code.user_code, 1, true))
    assert.truthy(text:find("Signed in. The refresh token is in " .. file, 1, true))
    assert.falsy(text:find(token, 1, true))
    assert.falsy(cjson.encode(events):find(token, 1, true))
    -- the CLI's app+user client reads it: redeemable once
    local mpc = pc.partnercenter { client_id = sb.client_id, token_url = sb.pc_token_url_v2, base_url = sb.url,
                                   refresh_token = token,
                                   on_refresh_token = function() end }
    local org, oerr = mpc:organization(sb:pc_org_url():match("/customers/([^/]+)/"))
    mpc:close()
    assert.is_nil(oerr)
    assert.truthy(org)
    os.execute("rm -rf " .. shell_quote(dir))
  end)

  it("the login command: exit 1 on a refusal or an unwritable file (no token shown), 2 on a missing setting", function()
    local dir = mkdtemp()
    local env = {
      PARTNERCUSTOMERS_PC_CLIENT_ID = sb.client_id,
      PARTNERCUSTOMERS_PC_TOKEN_URL = sb.pc_token_url_v2,
      PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE = dir .. "/rt",
    }
    local t = fake_time()
    local err = helpers.sink()
    local rc = login_cmd.run(env, helpers.sink(), err, {
      clock = t.clock, sleep = function(s) t.sleep(s); act("deny") end, on_code = function() end })
    assert.equal(1, rc)
    assert.matches("^partnercustomers: login: sign%-in failed: .*authorization_declined", err:text())
    assert.same({}, listing(dir))

    env.PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE = dir .. "/missing/rt"
    t, err = fake_time(), helpers.sink()
    rc = login_cmd.run(env, helpers.sink(), err, {
      clock = t.clock, sleep = function(s) t.sleep(s); act("approve") end, on_code = function() end })
    assert.equal(1, rc)
    assert.matches("signed in, but cannot save the refresh token: .*/missing/rt: No such file or directory",
                   err:text())
    assert.equal(1, select(2, err:text():gsub("\n", "")))
    assert.same({}, listing(dir))

    for var, needle in pairs {
      PARTNERCUSTOMERS_PC_CLIENT_ID = "PARTNERCUSTOMERS_PC_CLIENT_ID is not set",
      PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE = "PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE is not set",
      PARTNERCUSTOMERS_PC_TOKEN_URL = "PARTNERCUSTOMERS_PC_TENANT is not set",
    } do
      local copy = {}
      for k, v in pairs(env) do copy[k] = v end
      copy[var] = nil
      err = helpers.sink()
      assert.equal(2, login_cmd.run(copy, helpers.sink(), err, {}))
      assert.truthy(err:text():find(needle, 1, true), err:text())
    end
    -- a bad value names the variable
    local copy = { PARTNERCUSTOMERS_PC_CLIENT_ID = "x", PARTNERCUSTOMERS_PC_TENANT = "bad tenant!",
                   PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE = dir .. "/rt" }
    err = helpers.sink()
    assert.equal(2, login_cmd.run(copy, helpers.sink(), err, {}))
    assert.matches("^partnercustomers: login: pc%.device_login: PARTNERCUSTOMERS_PC_TENANT must be", err:text())
    os.execute("rm -rf " .. shell_quote(dir))
  end)
end)

describe("pc.device_login with hostile answers", function()
  local peer

  setup(function() peer = rawpeer.start() end)
  teardown(function() peer:stop() end)

  local DEVICE = '{"device_code":"DEVICE-SECRET-1","user_code":"ABCD-EFGH","verification_uri":"%s",'
                 .. '"expires_in":600%s}'

  local function run(device_answer, token_answers, extra)
    peer:script { api = { device_answer }, token = token_answers or { rawpeer.json(500, "{}") } }
    local t = fake_time()
    local o = { client_id = "app", devicecode_url = peer.url .. "/devicecode", token_url = peer.url .. "/token",
                clock = t.clock, sleep = t.sleep, on_code = function(info) t.info = info end, max_retries = 0 }
    for k, v in pairs(extra or {}) do o[k] = v end
    local tokens, err = pc.device_login(o)
    return tokens, err, t
  end

  it("refuses a verification URL that is not https (or loopback http), and a device code answer without its fields", function()
    for _, body in ipairs {
      DEVICE:format("http://evil.example/login", ""),
      DEVICE:format("javascript:alert(1)", ""),
      '{"user_code":"ABCD","verification_uri":"https://microsoft.com/devicelogin","expires_in":600}',
      '{"device_code":"D","verification_uri":"https://microsoft.com/devicelogin","expires_in":600}',
      '{"device_code":"D","user_code":"AB\\u001b[2JCD","verification_uri":"https://microsoft.com/devicelogin","expires_in":600}',
      '{"device_code":"D","user_code":"ABCD","verification_uri":"https://microsoft.com/devicelogin"}',
      '["not", "an", "object"]',
    } do
      local tokens, err, t = run(rawpeer.json(200, body))
      assert.is_nil(tokens)
      assert_error(err, "protocol", { "DEVICE-SECRET-1" })
      assert.is_nil(t.info, body)
      assert.same({}, t.sleeps)
    end
  end)

  it("defaults the interval to 5 s, takes Entra's older verification_url, and numbers as strings", function()
    local body = '{"device_code":"DEVICE-SECRET-1","user_code":"ABCD","verification_url":"https://microsoft.com/devicelogin",'
                 .. '"expires_in":"600"}'
    local ok = '{"access_token":"AT","refresh_token":"RT-SECRET","expires_in":"3600","token_type":"Bearer"}'
    local tokens, err, t = run(rawpeer.json(200, body),
      { rawpeer.json(400, '{"error":"authorization_pending"}'), rawpeer.json(200, ok) })
    assert.is_nil(err)
    assert.equal("RT-SECRET", tokens.refresh_token)
    assert.equal(3600, tokens.expires_in)
    assert.equal("https://microsoft.com/devicelogin", t.info.verification_uri)
    assert.equal(600, t.info.expires_in)
    assert.same({ 5, 5 }, t.sleeps)
    local polls = peer:log()
    local form = form_of(polls[#polls].body)
    assert.equal("DEVICE-SECRET-1", form.device_code)
    assert.equal("app", form.client_id)
  end)

  it("is a protocol error when the answer holds no refresh token, and never echoes what it got", function()
    local tokens, err = run(rawpeer.json(200, DEVICE:format("https://microsoft.com/devicelogin", "")),
      { rawpeer.json(200, '{"access_token":"AT-SECRET","token_type":"Bearer"}') })
    assert.is_nil(tokens)
    assert_error(err, "protocol", { "AT-SECRET", "DEVICE-SECRET-1" })
    assert.matches("offline_access", err.message)
  end)

  it("keeps the device code and the client secret out of an error even when the server echoes them", function()
    local tokens, err = run(rawpeer.json(200, DEVICE:format("https://microsoft.com/devicelogin", "")),
      { rawpeer.json(400, '{"error":"invalid_grant","error_description":"bad DEVICE-SECRET-1 for S3CR%2BT and S3CR+T"}') },
      { client_secret = "S3CR+T" })
    assert.is_nil(tokens)
    assert_error(err, "auth", { "DEVICE-SECRET-1", "S3CR+T", "S3CR%2BT" })
    assert.equal("invalid_grant", err.code)
    assert.equal("bad [redacted] for [redacted] and [redacted]", err.message)
  end)

  it("network failures while polling are errors of their own kind, not a denial", function()
    local tokens, err = run(rawpeer.json(200, DEVICE:format("https://microsoft.com/devicelogin", "")),
      { rawpeer.RESET })
    assert.is_nil(tokens)
    assert_error(err, "network", { "DEVICE-SECRET-1" })
  end)
end)

describe("pc.device_login misuse", function()
  it("raises at the caller's line, before any request", function()
    raises(function() pc.device_login { tenant = "contoso.onmicrosoft.com" } end, "option 'client_id' is required")
    raises(function() pc.device_login { client_id = "x" } end, "option 'tenant' is required")
    raises(function() pc.device_login { client_id = "x", token_url = "https://login.example/t/oauth2/token" } end,
           "does not end in /oauth2/v2.0/token", "'devicecode_url'")
    raises(function() pc.device_login { client_id = "x", devicecode_url = "https://login.example/d" } end,
           "option 'devicecode_url' needs option 'token_url'")
    raises(function() pc.device_login { client_id = "x", tenant = "t", scope = "" } end, "option 'scope' must be")
    raises(function() pc.device_login { client_id = "x", tenant = "t", refresh_token_file = "f" } end,
           "unknown option 'refresh_token_file'")
    raises(function() pc.device_login { client_id = "x", tenant = "t", token_url = "http://example.com/t/oauth2/v2.0/token" } end,
           "option 'token_url' must be")
    raises(function() pc.device_login "x" end, "expects an option table")
  end)
end)
