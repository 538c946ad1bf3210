-- Client assertions (RFC 7523, `private_key_jwt`): the checks the sandbox's token endpoints run on a
-- `client_assertion`, against the one certificate "uploaded" with --client-cert.
--
--   local assertion = require "partnercustomers.sandbox.assertion"
--   local v = assertion.new{certificate = "cert.pem", client_id = "sandbox-client"}
--   local claims, failure = v:check{type = form.client_assertion_type,
--     assertion = form.client_assertion, client_id = form.client_id,
--     audience = "http://127.0.0.1:PORT/connect/token"}
--   -- failure = {check = "signature", description = "client assertion: …"}
--
-- RS256 is verified in process with luaossl. luaossl (20220711) verifies PKCS#1 v1.5 signatures
-- only (`pkey:verify` has no padding option), so PS256 is verified by the `openssl` command line,
-- started in the background; the request's coroutine polls for its exit status with cqueues.sleep,
-- so other connections are served meanwhile. No description ever quotes the assertion.

local x509 = require "openssl.x509"
local digest = require "openssl.digest"
local cjson = require "cjson"

local assertion = {}

assertion.TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
assertion.SKEW = 60          -- seconds of clock skew allowed on exp, nbf and iat
assertion.MAX_LIFETIME = 600 -- seconds: exp - iat at most
local OPENSSL_TIMEOUT = 10   -- seconds to wait for `openssl dgst -verify`
local POLL = 0.005           -- seconds between looks at its exit status

local Verifier = {}
Verifier.__index = Verifier

---------------------------------------------------------------------------------------------
-- Encodings

local B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local B64URL_VALUE = {}
for i = 1, #B64URL do B64URL_VALUE[B64URL:sub(i, i)] = i - 1 end

local function b64url_encode(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local chars = b and (c and 4 or 3) or 2
    for k = 0, chars - 1 do
      local v = (n >> (18 - 6 * k)) & 63
      out[#out + 1] = B64URL:sub(v + 1, v + 1)
    end
  end
  return table.concat(out)
end

-- Strict base64url without padding (as JWS wants it); nil when anything else is there.
local function b64url_decode(s)
  if #s % 4 == 1 or not s:match("^[%w%-_]*$") then return nil end
  local out = {}
  for i = 1, #s, 4 do
    local chunk = s:sub(i, i + 3)
    local n = 0
    for k = 1, 4 do
      n = (n << 6) | (B64URL_VALUE[chunk:sub(k, k)] or 0)
    end
    local bytes = string.char((n >> 16) & 255, (n >> 8) & 255, n & 255)
    out[#out + 1] = bytes:sub(1, #chunk - 1)
  end
  return table.concat(out)
end

assertion.b64url_encode = b64url_encode
assertion.b64url_decode = b64url_decode

local function to_hex(s)
  return (s:gsub(".", function(c) return string.format("%02X", c:byte()) end))
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, content)
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

---------------------------------------------------------------------------------------------
-- The certificate

-- Reads a PEM certificate with an RSA key. Returns {pub, pub_pem, modulus_bytes, kid, x5t, x5t_s256},
-- or nil and a message.
function assertion.load_certificate(path)
  local pem, err = read_file(path)
  if not pem then return nil, "cannot read " .. tostring(err) end
  local ok, crt = pcall(x509.new, pem, "PEM")
  if not ok or not crt then return nil, "'" .. path .. "' is not a PEM certificate" end
  local pub = crt:getPublicKey()
  local key_type = pub:type()
  if key_type ~= "rsaEncryption" and key_type ~= "RSA" then
    return nil, "the certificate's key is " .. tostring(key_type) .. ", not RSA (RS256 and PS256 need RSA)"
  end
  local sha1, sha256 = crt:digest("sha1", "s"), crt:digest("sha256", "s")
  return {
    pub = pub, pub_pem = pub:toPEM("public"), modulus_bytes = #pub:getParameters().n:toBinary(),
    kid = to_hex(sha1), x5t = b64url_encode(sha1), x5t_s256 = b64url_encode(sha256),
  }
end

---------------------------------------------------------------------------------------------
-- Signatures

local function verify_rs256(cert, input, sig)
  local md = digest.new("sha256")
  md:update(input)
  local ok, good = pcall(cert.pub.verify, cert.pub, sig, md)
  return ok and good == true
end

-- PS256 (PSS padding, MGF1 with SHA-256, 32-byte salt) through `openssl dgst`, run in the
-- background: returns true, false, or nil and a message when openssl gave no answer.
function Verifier:verify_ps256(input, sig)
  local files = {}
  local function temp(content)
    local name = os.tmpname()
    files[#files + 1] = name
    write_file(name, content)
    return name
  end
  local pub, data, signature = temp(self.cert.pub_pem), temp(input), temp(sig)
  local status_file = data .. ".status"
  files[#files + 1] = status_file
  files[#files + 1] = status_file .. ".tmp"
  local verify = table.concat({"openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32",
    "-sigopt rsa_mgf1_md:sha256 -verify", shell_quote(pub), "-signature", shell_quote(signature),
    shell_quote(data)}, " ")
  -- the status appears under its final name only once complete
  local script = string.format("(%s >/dev/null 2>&1; echo $? > %s; mv %s %s) </dev/null >/dev/null 2>&1 &",
    verify, shell_quote(status_file .. ".tmp"), shell_quote(status_file .. ".tmp"), shell_quote(status_file))
  os.execute(script)
  local status
  local waited = 0
  while waited < OPENSSL_TIMEOUT do
    self.sleep(POLL)
    waited = waited + POLL
    local text = read_file(status_file)
    if text then
      status = tonumber(text:match("%d+"))
      break
    end
  end
  for _, name in ipairs(files) do os.remove(name) end
  if status == nil then return nil, "openssl gave no answer" end
  return status == 0
end

---------------------------------------------------------------------------------------------
-- The checks

local function fail(check, text)
  return nil, {check = check, description = "client assertion: " .. text}
end

local function decode_json_object(segment)
  local raw = b64url_decode(segment)
  if not raw then return nil end
  local ok, value = pcall(cjson.decode, raw)
  if not ok or type(value) ~= "table" or not raw:match("^%s*{") then return nil end
  return value
end

local function is_number(v)
  return type(v) == "number" and v == v and v > -math.huge and v < math.huge
end

local function audience_matches(aud, expected)
  if aud == expected then return true end
  if type(aud) == "table" then
    for _, a in ipairs(aud) do
      if a == expected then return true end
    end
  end
  return false
end

-- Forgets the assertion ids whose assertions can no longer be accepted anyway.
function Verifier:forget_old_ids(now)
  for jti, until_time in pairs(self.seen) do
    if until_time < now then self.seen[jti] = nil end
  end
end

-- req = {type, assertion, client_id (form parameter, may be nil), audience (the token URL as addressed)}.
-- Returns the claims, or nil and {check, description}. Checked in this order: type, form (three
-- base64url parts, JSON header and claims), typ, alg, a signature present, key id (kid / x5t /
-- x5t#S256), signature, iss and sub, client_id, aud, exp, nbf and iat, lifetime, jti, replay. The
-- jti is remembered (until exp + skew) only when every check passed.
function Verifier:check(req)
  if req.type ~= assertion.TYPE then
    return fail("type", "client_assertion_type must be " .. assertion.TYPE)
  end
  local token = req.assertion
  if type(token) ~= "string" or token == "" then
    return fail("malformed", "client_assertion is missing or empty")
  end
  local h64, c64, s64 = token:match("^([^.]*)%.([^.]*)%.([^.]*)$")
  if not h64 then
    return fail("malformed", "not a JWS in compact form (three base64url parts separated by '.')")
  end
  local header, claims = decode_json_object(h64), decode_json_object(c64)
  if not header then return fail("malformed", "the header is not a base64url-encoded JSON object") end
  if not claims then return fail("malformed", "the claims are not a base64url-encoded JSON object") end
  local sig = b64url_decode(s64)
  if not sig then return fail("malformed", "the signature is not base64url") end

  if type(header.typ) ~= "string" or header.typ:upper() ~= "JWT" then
    return fail("typ", "the header's typ must be JWT")
  end
  local alg = header.alg
  if alg ~= "RS256" and alg ~= "PS256" then
    local shown = type(alg) == "string" and alg:match("^[%w]+$") and #alg <= 16 and ("alg " .. alg) or "this alg"
    return fail("alg", shown .. " is not accepted: sign with RS256 or PS256")
  end
  if sig == "" then return fail("malformed", "the signature is missing") end
  local cert = self.cert
  if header.kid == nil and header.x5t == nil then
    return fail("key", "the header names no key: send kid (hex SHA-1 thumbprint) or x5t")
  end
  if header.kid ~= nil and header.kid ~= cert.kid then
    return fail("key", "kid is not the SHA-1 thumbprint (upper-case hex) of the sandbox's client certificate")
  end
  if header.x5t ~= nil and header.x5t ~= cert.x5t then
    return fail("key", "x5t is not the SHA-1 thumbprint (base64url) of the sandbox's client certificate")
  end
  if header["x5t#S256"] ~= nil and header["x5t#S256"] ~= cert.x5t_s256 then
    return fail("key", "x5t#S256 is not the SHA-256 thumbprint of the sandbox's client certificate")
  end
  if #sig ~= cert.modulus_bytes then
    return fail("signature", "the signature has the wrong length for the certificate's key")
  end
  local input = h64 .. "." .. c64
  local good, why
  if alg == "RS256" then
    good = verify_rs256(cert, input, sig)
  else
    good, why = self:verify_ps256(input, sig)
  end
  if good == nil then
    return fail("signature", "the sandbox could not verify the " .. alg .. " signature (" .. why .. ")")
  elseif not good then
    return fail("signature", "the " .. alg .. " signature does not verify with the sandbox's client certificate")
  end

  local client_id = self.client_id
  if claims.iss ~= client_id then return fail("issuer", "iss must be the client id " .. client_id) end
  if claims.sub ~= client_id then return fail("issuer", "sub must be the client id " .. client_id) end
  if req.client_id ~= nil and req.client_id ~= claims.iss then
    return fail("client_id", "the client_id parameter differs from the assertion's iss and sub")
  end
  if not audience_matches(claims.aud, req.audience) then
    return fail("audience", "aud must be this token endpoint's URL, " .. req.audience)
  end
  local now, skew = self.now(), self.skew
  if not is_number(claims.exp) then return fail("expired", "exp is missing or not a number") end
  if claims.exp + skew <= now then
    return fail("expired", "the assertion has expired (exp is past, " .. skew .. " s of skew allowed)")
  end
  if claims.nbf ~= nil and not is_number(claims.nbf) then return fail("not_yet_valid", "nbf is not a number") end
  if claims.nbf ~= nil and claims.nbf > now + skew then
    return fail("not_yet_valid", "the assertion is not valid yet (nbf is in the future)")
  end
  if not is_number(claims.iat) then return fail("lifetime", "iat is missing or not a number") end
  if claims.iat > now + skew then
    return fail("not_yet_valid", "iat is in the future")
  end
  if claims.exp - claims.iat > self.max_lifetime then
    return fail("lifetime", "the assertion lives too long (exp - iat over " .. self.max_lifetime .. " s)")
  end
  if type(claims.jti) ~= "string" or claims.jti == "" then
    return fail("jti", "jti is missing: every assertion needs a fresh unique id")
  end
  self:forget_old_ids(now)
  if self.seen[claims.jti] then
    return fail("replay", "this jti was used before: mint a new assertion for every token request")
  end
  self.seen[claims.jti] = claims.exp + skew
  return claims
end

-- opts: certificate (a file name, or what load_certificate returned), client_id, and optionally
-- now (function -> Unix seconds, default os.time), sleep (function(seconds), default cqueues.sleep),
-- skew, max_lifetime. Raises when the certificate cannot be loaded.
function assertion.new(opts)
  local cert = opts.certificate
  if type(cert) == "string" then
    local err
    cert, err = assertion.load_certificate(cert)
    if not cert then error("partnercustomers.sandbox: client certificate: " .. err, 2) end
  end
  return setmetatable({
    cert = cert, client_id = opts.client_id,
    now = opts.now or os.time, sleep = opts.sleep or require("cqueues").sleep,
    skew = opts.skew or assertion.SKEW, max_lifetime = opts.max_lifetime or assertion.MAX_LIFETIME,
    seen = {},
  }, Verifier)
end

return assertion
