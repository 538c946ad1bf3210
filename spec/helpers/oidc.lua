-- Test helper: a real OAuth 2.0 authorization server (oidc-provider, spec/oidc/server.js) in a child
-- node process on 127.0.0.1, and a curl view of its test endpoints (never the module under test).
--
--   local oidc = require "spec.helpers.oidc"
--   local server = oidc.start{clients = {{client_id = "app", client_secret = "…",
--                                         token_endpoint_auth_method = "client_secret_post"}, …},
--                             lifetime = 60, ttl = 300, clock_tolerance = 0}
--   server.issuer, server.token_url, server.introspection_url
--   server:token_requests()   -- what the token endpoint received (see spec/oidc/server.js)
--   server:revoke()           -- every token issued so far becomes invalid
--   server.device_url         -- the device authorization endpoint (RFC 8628)
--   server:device_user(user_code, "approve" | "abort")  -- a user at oidc-provider's device pages
--   server:stop()             -- idempotent; also on garbage collection and <close>
--
-- Clients are oidc-provider client metadata, plus `certificates = {"cert.pem"}` (a JWKS made from
-- them, kid = upper-case hex SHA-1 thumbprint) and `introspection = true` (a resource server, such
-- as a sandbox started with introspection_url = server.introspection_url).
-- The server needs `npm ci --prefix spec/oidc` once.
local cjson = require "cjson"

local oidc = {}

local helpers = require "spec.helpers.util"
local ROOT, shell_quote = helpers.ROOT, helpers.shell_quote

local NODE = os.getenv("NODE") or "node"


-- Decoded JSON as the specs see it: null absent, integral numbers as integers.
local function normalize(v)
  if v == cjson.null then return nil end
  if math.type(v) == "float" then return math.tointeger(v) or v end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = normalize(x) end
  end
  return v
end

-- One curl run against the server: {status, body}. The sanitizer preload of `make asan` is for the
-- module under test, not for its peers.
local function curl(method, url)
  local cmd = "env -u LD_PRELOAD curl -sS --noproxy '*' --max-time 5 -o - -w '\\n%{http_code}' -X " ..
              method .. " " .. shell_quote(url) .. " 2>&1"
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  local body, status = out:match("^(.*)\n(%d+)$")
  return {status = tonumber(status), body = body or out}
end

local Server = {}
Server.__index = Server

local function admin(self, method, path)
  local res = curl(method, self.issuer .. path)
  if res.status ~= 200 then
    error(("oidc helper: %s %s answered %s: %s"):format(method, path, tostring(res.status), res.body), 3)
  end
  return normalize(cjson.decode(res.body))
end

-- What the token endpoint received so far, oldest first.
function Server:token_requests() return admin(self, "GET", "/_test/token-requests") end

-- Every client credentials token issued so far becomes invalid; returns how many.
function Server:revoke() return admin(self, "POST", "/_test/revoke").revoked end

-- Runs curl with a cookie jar (a browser session) and form data; follows redirects. Returns
-- {status, body} of the last answer.
local function browse(jar, url, form)
  local argv = {"env -u LD_PRELOAD curl -sS --noproxy '*' --max-time 5 -L -b", shell_quote(jar), "-c", shell_quote(jar),
                "-o - -w '\\n%{http_code}'"}
  for _, kv in ipairs(form or {}) do
    argv[#argv + 1] = "--data-urlencode " .. shell_quote(kv[1] .. "=" .. kv[2])
  end
  argv[#argv + 1] = shell_quote(url) .. " 2>&1"
  local p = assert(io.popen(table.concat(argv, " "), "r"))
  local out = p:read("a")
  p:close()
  local body, status = out:match("^(.*)\n(%d+)$")
  return {status = tonumber(status), body = body or out}
end

local function xsrf_of(page)
  local xsrf = page.body:match('name="xsrf" value="([^"]+)"')
  if not xsrf then error("oidc helper: no xsrf field in the device page: " .. page.body, 3) end
  return xsrf
end

-- What a user does at the device pages: opens ISSUER/device?user_code=CODE (a form that posts the
-- code), submits it, and on the confirmation page either confirms (the interaction page then signs
-- the user in and consents) or aborts. Returns the last page {status, body}.
function Server:device_user(user_code, action)
  local jar = self.dir .. "/cookies-" .. user_code:gsub("%W", "")
  local start = browse(jar, self.issuer .. "/device?user_code=" .. user_code)
  local confirm = browse(jar, self.issuer .. "/device", {{"xsrf", xsrf_of(start)}, {"user_code", user_code}})
  if not confirm.body:find("Confirm Device", 1, true) then
    error("oidc helper: no confirmation page: " .. confirm.body, 2)
  end
  local last = {{"xsrf", xsrf_of(confirm)}, {"user_code", user_code}}
  last[#last + 1] = {"confirm", "yes"}
  if action == "abort" then last[#last + 1] = {"abort", "yes"} end -- the Abort button of the same form
  return browse(jar, self.issuer .. "/device", last)
end

-- Stops the server (its stdin closes and it gets SIGTERM) and reaps it.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  if self.stdin then self.stdin:close() end
  -- the child is not reaped before pipe:close(), so its pid cannot have been reused
  if self.pid then os.execute("kill " .. math.tointeger(self.pid) .. " 2>/dev/null") end
  self.pipe:read("a")
  self.pipe:close()
  if not self.keep_dir then os.execute("rm -rf " .. shell_quote(self.dir)) end
end

Server.__gc = function(self) pcall(Server.stop, self) end
Server.__close = Server.__gc

-- opts: clients (array of client metadata), lifetime (seconds, default 60), ttl (access token
-- lifetime, default 300), clock_tolerance (default 0).
function oidc.start(opts)
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "clients" and k ~= "lifetime" and k ~= "ttl" and k ~= "clock_tolerance" then
      error("oidc helper: unknown option '" .. tostring(k) .. "'", 2)
    end
  end
  if not helpers.read(ROOT .. "/spec/oidc/node_modules/oidc-provider/package.json", true) then
    error("oidc helper: spec/oidc/node_modules is missing: run `npm ci --prefix spec/oidc` " ..
          "in the repository root first (it installs oidc-provider from spec/oidc/package-lock.json)", 2)
  end

  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -m 700 " .. shell_quote(dir)), "oidc helper: cannot make a temporary directory")
  local clients_file, fifo, log = dir .. "/clients.json", dir .. "/stdin", dir .. "/server.log"
  local f = assert(io.open(clients_file, "w"))
  local clients = opts.clients or {}
  f:write(#clients == 0 and "[]" or cjson.encode(clients)) -- cjson writes {} for an empty table
  f:close()
  assert(os.execute("mkfifo " .. shell_quote(fifo)), "oidc helper: mkfifo failed")

  local argv = {"spec/oidc/server.js", "--clients", clients_file,
                "--lifetime", tostring(opts.lifetime or 60), "--ttl", tostring(opts.ttl or 300),
                "--clock-tolerance", tostring(opts.clock_tolerance or 0)}
  for i, a in ipairs(argv) do argv[i] = shell_quote(a) end
  -- The server's stdin is a FIFO that this process holds open for writing: when the test run ends,
  -- however it ends, the server reads end-of-file and stops. The shell opens the FIFO first (it
  -- blocks until io.open below opens the other end), prints its pid and becomes node.
  local script = table.concat({
    "exec 0<" .. shell_quote(fifo),
    "cd " .. shell_quote(ROOT),
    "echo $$",
    "exec env -u LD_PRELOAD " .. shell_quote(NODE) .. " " .. table.concat(argv, " ") .. " 2>" .. shell_quote(log),
  }, "; ")
  local pipe = assert(io.popen(script, "r"))
  local stdin = assert(io.open(fifo, "w"))
  local pid = tonumber(pipe:read("l"))
  local line = pipe:read("l")
  local self = setmetatable({pipe = pipe, pid = pid, stdin = stdin, dir = dir}, Server)
  local issuer = line and line:match("^oidc%-provider listening on (http://127%.0%.0%.1:%d+)$")
  if not issuer then
    self.keep_dir = true
    self:stop() -- reads the rest of its output: the log is complete only once it has exited
    local why = helpers.read(log, true) or ""
    os.execute("rm -rf " .. shell_quote(dir))
    error(("oidc helper: the server did not start (first line: %s)\n%s"):format(tostring(line), why), 2)
  end
  self.issuer = issuer
  self.url = issuer
  self.port = tonumber(issuer:match(":(%d+)$"))
  self.token_url = issuer .. "/token"
  self.introspection_url = issuer .. "/token/introspection"
  self.device_url = issuer .. "/device/auth"
  self.log_file = log
  return self
end

return oidc
