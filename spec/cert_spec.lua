-- Certificate credentials: loading PEM, encrypted PEM and PKCS#12, and every misuse caught when the
-- client is built, before any request. Keys and certificates are made here with openssl, never committed.
local core = require "partnercustomers.core"
local pc = require "partnercustomers"
local helpers = require "spec.helpers.util"
local sh, read = helpers.sh, helpers.read

local PASSWORD = "correct horse " .. tostring(os.time())


describe("certificate credentials", function()
  local dir
  local function p(name) return dir .. "/" .. name end

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    sh("mkdir -p " .. dir)
    local subj = "-subj /CN=partnercustomers-test -days 2"
    sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s %s"):format(p("key.pem"), p("cert.pem"), subj))
    sh(("openssl pkey -in %s -out %s -aes256 -passout pass:'%s'"):format(p("key.pem"), p("key-enc.pem"), PASSWORD))
    sh(("openssl pkcs12 -export -inkey %s -in %s -out %s -passout pass:'%s'"):format(p("key.pem"), p("cert.pem"),
      p("app.pfx"), PASSWORD))
    sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s %s"):format(p("other-key.pem"), p("other.pem"), subj))
    sh(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s -out %s %s"):format(
      p("ec-key.pem"), p("ec.pem"), subj))
    sh(("openssl req -x509 -newkey rsa:1024 -nodes -keyout %s -out %s %s"):format(p("small-key.pem"), p("small.pem"), subj))
    sh(("echo 'not a key' > %s"):format(p("junk.pem")))
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  local function client(cert, extra)
    local cc = { token_url = "https://login.example.invalid/token", client_id = "app", certificate = cert }
    local o = { client_credentials = cc }
    for k, v in pairs(extra or {}) do o[k] = v end
    return core.new(o)
  end

  local function refused(cert, pattern, extra)
    local ok, err = pcall(client, cert, extra)
    assert.is_false(ok, "the client was built")
    assert.matches(pattern, err)
    -- nothing secret in the message: neither the password nor key material
    assert.not_matches(PASSWORD, err, 1, true)
    assert.not_matches("BEGIN", err, 1, true)
    return err
  end

  it("loads a PEM key and certificate, an encrypted PEM key and a PKCS#12 file", function()
    client({ key = p("key.pem"), cert = p("cert.pem") }):close()
    client({ key = p("key-enc.pem"), cert = p("cert.pem"), password = PASSWORD }):close()
    client({ pfx = p("app.pfx"), password = PASSWORD, alg = "PS256", x5t_s256 = true }):close()
  end)

  it("refuses missing and unreadable files, naming the file", function()
    refused({ key = p("nope.pem"), cert = p("cert.pem") }, "certificate%.key: cannot read '.*nope%.pem' %(No such file")
    refused({ key = p("key.pem"), cert = p("nope.pem") }, "certificate%.cert: cannot read")
    refused({ pfx = p("nope.pfx"), password = "x" }, "certificate%.pfx: cannot read")
    refused({ key = p("junk.pem"), cert = p("cert.pem") }, "not a PEM private key")
    refused({ key = p("key.pem"), cert = p("junk.pem") }, "not a PEM certificate")
    refused({ pfx = p("cert.pem"), password = "x" }, "not a PKCS#12")
  end)

  it("refuses a wrong or missing password, without quoting it", function()
    refused({ key = p("key-enc.pem"), cert = p("cert.pem") }, "encrypted: give certificate%.password")
    refused({ key = p("key-enc.pem"), cert = p("cert.pem"), password = PASSWORD .. "x" }, "wrong password")
    refused({ pfx = p("app.pfx"), password = PASSWORD .. "x" }, "wrong password")
  end)

  it("refuses a key that does not match the certificate", function()
    refused({ key = p("other-key.pem"), cert = p("cert.pem") }, "does not match the certificate")
  end)

  it("refuses an expired certificate and one not valid yet (by the client's clock)", function()
    local now = os.time()
    refused({ key = p("key.pem"), cert = p("cert.pem") }, "has expired", { clock = function() return now + 3 * 86400 end })
    refused({ key = p("key.pem"), cert = p("cert.pem") }, "not valid yet", { clock = function() return now - 86400 end })
  end)

  it("refuses keys that cannot sign RS256 or PS256", function()
    refused({ key = p("ec-key.pem"), cert = p("ec.pem") }, "a key of type EC cannot sign RS256 or PS256")
    refused({ key = p("small-key.pem"), cert = p("small.pem") }, "1024 bits is too weak")
  end)

  it("refuses malformed certificate options", function()
    refused({ key = p("key.pem") }, "either 'pfx', or 'key' and 'cert'")
    refused({ pfx = p("app.pfx"), key = p("key.pem") }, "either 'pfx', or 'key' and 'cert'")
    refused({ key = p("key.pem"), cert = p("cert.pem"), alg = "HS256" }, "'certificate.alg' must be")
    refused({ key = p("key.pem"), cert = p("cert.pem"), passphrase = "x" }, "unknown field in option 'certificate'")
    assert.error_matches(function()
      core.new { client_credentials = { token_url = "https://x.invalid/t", client_id = "a", client_secret = "s",
                                        certificate = { key = p("key.pem"), cert = p("cert.pem") } } }
    end, "exactly one of 'client_secret' and 'certificate'")
    assert.error_matches(function()
      core.new { client_credentials = { token_url = "https://x.invalid/t", client_id = "a",
                                        certificate = { key = p("key.pem"), cert = p("cert.pem") }, client_auth = "basic" } }
    end, "client_auth' applies to a client_secret only")
  end)

  it("gets tokens for both clients from a sandbox that verifies the assertions", function()
    local sandbox = require "spec.helpers.sandbox"
    local sb = sandbox.start { count = 6, seed = 2, client_cert = p("cert.pem") }
    local events = {}
    local function on_event(e) events[#events + 1] = e end
    local ave = pc.avepoint { client_id = sb.client_id, base_url = sb.url, token_url = sb.token_url,
                              certificate = { pfx = p("app.pfx"), password = PASSWORD }, on_event = on_event }
    local customers = assert(ave:all_customers())
    assert.equal(6, #customers)
    local mpc = pc.partnercenter { client_id = sb.client_id, base_url = sb.url, token_url = sb.pc_token_url_v2,
                                   certificate = { key = p("key-enc.pem"), cert = p("cert.pem"), password = PASSWORD,
                                                   alg = "PS256" }, on_event = on_event }
    assert(mpc:customers())
    -- a certificate the sandbox does not know is refused as the service would, tried once
    local stranger = pc.avepoint { client_id = sb.client_id, base_url = sb.url, token_url = sb.token_url,
                                   certificate = { key = p("other-key.pem"), cert = p("other.pem") } }
    local res, err = stranger:customer_page(1, 10)
    assert.is_nil(res)
    assert.equal("auth", err.kind)
    assert.equal("invalid_client", err.code)
    assert.equal(1, err.attempts)
    local tokens = 0
    for _, e in ipairs(events) do
      if e.type == "token" then tokens = tokens + 1 end
      for k, v in pairs(e) do assert.not_matches(PASSWORD, tostring(k) .. tostring(v), 1, true) end
    end
    assert.equal(2, tokens)
    ave:close(); mpc:close(); stranger:close()
    sb:stop()
  end)

  it("is accepted by pc.avepoint", function()
    local ave = pc.avepoint { client_id = "app", certificate = { key = p("key.pem"), cert = p("cert.pem") },
                              base_url = "http://127.0.0.1:1", token_url = "http://127.0.0.1:1/connect/token" }
    ave:close()
    assert.matches("BEGIN", read(p("key.pem"))) -- the fixture is what it claims to be
  end)
end)
