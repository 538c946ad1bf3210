-- Test helper: runs a sandbox in a child process and talks to it with the curl command line,
-- never through the module under test.
--
--   local sandbox = require "spec.helpers.sandbox"
--   local sb = sandbox.start{count = 30, seed = 7, odata_page_size = 10}
--   sandbox.start{client_cert = "/abs/cert.pem"}  -- the token endpoints accept assertions too
--   sandbox.start{introspection_url = u, introspection_client_id = id, introspection_secret = s}
--                                           -- foreign bearer tokens are introspected at u
--   sb.url, sb.token_url, sb.client_id, sb.client_secret
--   sb:faults{...}  sb:log()  sb:clear_log()  sb:revoke()  sb:customers()  sb:stop()
--   sb:token(scope)                         -- a fresh access token (string)
--   sb.pc_tenant, sb.pc_token_url_v2, sb.pc_token_url_v1   -- the Entra-style token endpoints
--   sb:pc_token()                           -- an app-only Partner Center access token (string)
--   sb:refresh_token()                      -- a fresh refresh token, as a user's consent gives
--   sb:revoke_refresh_tokens()  sb:pc_organizations()  sb:pc_org_url()
--   sb:request{method, path, token, headers, body, max_time, compressed}  -- see sandbox.curl
--   sb:request_start{...} then sandbox.curl_finish(handle)                 -- in the background
--   sandbox.curl{...}                       -- one curl run: {status, headers, body, exit}

local cjson = require "cjson"

local sandbox = {}

local helpers = require "spec.helpers.util"
local ROOT, shell_quote = helpers.ROOT, helpers.shell_quote

local LUA = os.getenv("LUA") or "lua5.4"
-- Debian installs lua-http (pure Lua) under the 5.1 tree only.
local LUA51 = "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"


local function command_line(argv)
  local quoted = {}
  for i, a in ipairs(argv) do quoted[i] = shell_quote(a) end
  return table.concat(quoted, " ")
end

local function random_hex(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(n)
  f:close()
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- Decoded JSON as the project's users see it: null fields absent, integers as Lua integers
-- (the installed cjson decodes every number as a float).
local function normalize(v)
  if v == cjson.null then return nil end
  if math.type(v) == "float" then return math.tointeger(v) or v end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = normalize(x) end
  end
  return v
end

function sandbox.decode(body)
  return normalize(cjson.decode(body))
end

-- Starts curl in the background: req = {url, method, headers = {name = value}, body,
-- max_time (default 5), compressed}. Returns a handle for sandbox.curl_finish.
function sandbox.curl_start(req)
  local argv = {"curl", "-sS", "-i", "--noproxy", "*", "--max-time", tostring(req.max_time or 5),
                "-H", "Expect:"}
  if req.method then
    argv[#argv + 1] = "-X"; argv[#argv + 1] = req.method
  end
  for name, value in pairs(req.headers or {}) do
    argv[#argv + 1] = "-H"; argv[#argv + 1] = name .. ": " .. value
  end
  if req.body then
    argv[#argv + 1] = "--data-binary"; argv[#argv + 1] = req.body
  end
  if req.compressed then argv[#argv + 1] = "--compressed" end
  argv[#argv + 1] = req.url
  return assert(io.popen("env -u LD_PRELOAD " .. command_line(argv) .. " 2>/dev/null", "r"))
end

-- Waits for a curl started by curl_start. Returns {status, headers (lower-case names), body,
-- exit (curl's exit code)}; status is nil when no answer came (curl exit 52: empty reply,
-- 28: timeout, 7: connection refused...).
function sandbox.curl_finish(pipe)
  local out = pipe:read("a")
  local _, _, code = pipe:close()
  local res = {exit = code, headers = {}}
  local head, body = out:match("^(.-)\r\n\r\n(.*)$")
  if not head then return res end
  res.status = tonumber(head:match("^HTTP/[%d.]+ (%d%d%d)"))
  for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
    res.headers[name:lower()] = value
  end
  res.body = body
  return res
end

-- Runs curl once (see curl_start and curl_finish).
function sandbox.curl(req)
  return sandbox.curl_finish(sandbox.curl_start(req))
end

local Sandbox = {}
Sandbox.__index = Sandbox

-- The command that starts the sandbox: the real CLI when it is there.
local function launcher(args)
  local cli = io.open(ROOT .. "/bin/partnercustomers")
  if cli then
    cli:close()
    return {LUA, "bin/partnercustomers", "sandbox", table.unpack(args)}
  end
  local lits = {}
  for i, a in ipairs(args) do lits[i] = string.format("%q", a) end
  return {LUA, "-e", 'os.exit(require("partnercustomers.sandbox").main({' .. table.concat(lits, ",") .. "}))"}
end

-- Starts a child sandbox. env: extra environment variables. Returns the popen handle, the
-- child's pid and the first line it printed (nil if it died first).
function sandbox.spawn(args, env)
  local lua_path = os.getenv("LUA_PATH")
  lua_path = "./lua/?.lua;./lua/?/init.lua;" .. (lua_path and lua_path .. ";" or ";") .. LUA51
  -- `make asan` preloads the sanitizer runtime for the module under test, not for its peers
  local script = {"cd " .. shell_quote(ROOT), "unset LD_PRELOAD", "export LUA_PATH=" .. shell_quote(lua_path)}
  for name, value in pairs(env or {}) do
    script[#script + 1] = "export " .. name .. "=" .. shell_quote(value)
  end
  -- the shell's pid is the sandbox's once it execs
  script[#script + 1] = "echo $$"
  script[#script + 1] = "exec " .. command_line(launcher(args))
  local pipe = assert(io.popen(table.concat(script, "; "), "r"))
  local pid = tonumber(pipe:read("l"))
  return pipe, pid, pipe:read("l")
end

local option_flags = {
  count = "--count", seed = "--seed", token_ttl = "--token-ttl", odata_page_size = "--odata-page-size",
  v3_status = "--v3-status", idle_timeout = "--idle-timeout", client_id = "--client-id",
  pc_tenant = "--pc-tenant", client_cert = "--client-cert",
  introspection_url = "--introspection-url", introspection_client_id = "--introspection-client-id",
}

local DEFAULT_PC_TENANT = "sandbox-partner.onmicrosoft.com"
local PC_SCOPE_V2 = "https://api.partnercenter.microsoft.com/.default"

-- opts: count, seed, token_ttl, odata_page_size, v3_status, idle_timeout (default 60),
-- client_id, pc_tenant, client_cert (an absolute path: a PEM certificate whose key may sign client
-- assertions), introspection_url, introspection_client_id and introspection_secret (the resource
-- server's credentials at an RFC 7662 endpoint; the secret goes through the environment, never the
-- command line), verbose (request log on stderr).
function sandbox.start(opts)
  opts = opts or {}
  local args = {"--port", "0"}
  if not opts.verbose then args[#args + 1] = "--quiet" end
  if opts.idle_timeout == nil then
    args[#args + 1] = "--idle-timeout"; args[#args + 1] = "60"
  end
  for key, value in pairs(opts) do
    local flag = option_flags[key]
    if flag then
      args[#args + 1] = flag; args[#args + 1] = tostring(value)
    elseif key ~= "verbose" and key ~= "introspection_secret" then
      error("sandbox helper: unknown option '" .. tostring(key) .. "'", 2)
    end
  end
  local secret = random_hex(16)
  local pipe, pid, line = sandbox.spawn(args, {PARTNERCUSTOMERS_SANDBOX_SECRET = secret,
    PARTNERCUSTOMERS_SANDBOX_INTROSPECTION_SECRET = opts.introspection_secret})
  local url = line and line:match("^partnercustomers sandbox listening on (http://127%.0%.0%.1:%d+)$")
  if not url then
    pipe:close()
    error("sandbox helper: the sandbox did not start (first line: " .. tostring(line) .. ")", 2)
  end
  local pc_tenant = opts.pc_tenant or DEFAULT_PC_TENANT
  return setmetatable({
    url = url, token_url = url .. "/connect/token", port = tonumber(url:match(":(%d+)$")),
    client_id = opts.client_id or "sandbox-client", client_secret = secret,
    pc_tenant = pc_tenant,
    pc_token_url_v2 = url .. "/" .. pc_tenant .. "/oauth2/v2.0/token",
    pc_token_url_v1 = url .. "/" .. pc_tenant .. "/oauth2/token",
    pid = pid, pipe = pipe,
  }, Sandbox)
end

-- A curl request against this sandbox: req.path (or req.url); req.token adds the bearer header.
function Sandbox:curl_request(req)
  local copy = {}
  for k, v in pairs(req) do copy[k] = v end
  copy.url = req.url or (self.url .. req.path)
  if req.token then
    copy.headers = {}
    for k, v in pairs(req.headers or {}) do copy.headers[k] = v end
    copy.headers.authorization = "Bearer " .. req.token
  end
  return copy
end

function Sandbox:request(req)
  return sandbox.curl(self:curl_request(req))
end

-- The same in the background; finish with sandbox.curl_finish(handle).
function Sandbox:request_start(req)
  return sandbox.curl_start(self:curl_request(req))
end

function Sandbox:admin(method, path, body)
  local res = self:request{method = method, path = path, body = body,
                           headers = body and {["content-type"] = "application/json"}}
  if res.status ~= 200 then
    error(string.format("sandbox helper: %s %s answered %s (curl exit %s): %s",
      method, path, tostring(res.status), tostring(res.exit), tostring(res.body)), 3)
  end
  return sandbox.decode(res.body)
end

function Sandbox:faults(rules)
  return self:admin("PUT", "/_sandbox/faults", cjson.encode(rules))
end

function Sandbox:log() return self:admin("GET", "/_sandbox/log") end
function Sandbox:clear_log() return self:admin("DELETE", "/_sandbox/log") end
function Sandbox:revoke() return self:admin("POST", "/_sandbox/revoke") end
function Sandbox:customers() return self:admin("GET", "/_sandbox/customers") end

-- A fresh access token for `scope` (errors when the sandbox refuses).
function Sandbox:token(scope)
  local res = self:request{method = "POST", path = "/connect/token",
    headers = {["content-type"] = "application/x-www-form-urlencoded"},
    body = "grant_type=client_credentials&client_id=" .. self.client_id ..
           "&client_secret=" .. self.client_secret .. "&scope=" .. scope}
  if res.status ~= 200 then
    error("sandbox helper: token request answered " .. tostring(res.status), 2)
  end
  return sandbox.decode(res.body).access_token
end

local function form_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- An app-only Partner Center access token from the v2 endpoint (errors when the sandbox refuses).
function Sandbox:pc_token()
  local res = self:request{url = self.pc_token_url_v2, method = "POST",
    headers = {["content-type"] = "application/x-www-form-urlencoded"},
    body = "grant_type=client_credentials&client_id=" .. form_encode(self.client_id) ..
           "&client_secret=" .. form_encode(self.client_secret) .. "&scope=" .. form_encode(PC_SCOPE_V2)}
  if res.status ~= 200 then
    error("sandbox helper: Partner Center token request answered " .. tostring(res.status), 2)
  end
  return sandbox.decode(res.body).access_token
end

-- A fresh refresh token (POST /_sandbox/refresh-token), valid for one redemption.
function Sandbox:refresh_token() return self:admin("POST", "/_sandbox/refresh-token").refresh_token end
function Sandbox:revoke_refresh_tokens() return self:admin("POST", "/_sandbox/revoke-refresh-tokens") end
-- {[tenant_id] = {status = 200|403, organization = {...}}} (null mails read as absent here)
function Sandbox:pc_organizations() return self:admin("GET", "/_sandbox/pc/organizations") end

-- The URL of an organization the sandbox serves (status 200); raises when it serves none.
function Sandbox:pc_org_url()
  for id, o in pairs(self:pc_organizations()) do
    if o.status == 200 then return self.url .. "/v1/customers/" .. id .. "/organization" end
  end
  error("the sandbox has no organization to read")
end

-- Waits for the child to exit on its own (idle timeout); returns its exit code.
function Sandbox:wait()
  if self.stopped then return nil end
  self.stopped = true
  self.pipe:read("a")
  local _, _, code = self.pipe:close()
  return code
end

-- Asks the sandbox to shut down (kills it by pid if it does not answer) and reaps it.
function Sandbox:stop()
  if self.stopped then return end
  local res = sandbox.curl{method = "POST", url = self.url .. "/_sandbox/shutdown", max_time = 5}
  if res.status ~= 200 and self.pid then
    os.execute("kill " .. math.tointeger(self.pid) .. " 2>/dev/null")
  end
  self:wait()
end

-- A forgotten sandbox is stopped rather than left to its idle timeout (closing the popen
-- handle alone would wait for the child to exit).
Sandbox.__gc = function(self) pcall(Sandbox.stop, self) end
Sandbox.__close = Sandbox.__gc

return sandbox
