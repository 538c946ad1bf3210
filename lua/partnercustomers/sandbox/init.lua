-- partnercustomers.sandbox: a local fake of the AvePoint partner API and its token endpoint, and of
-- the Partner Center customer endpoints and their Entra ID token endpoints.
-- Loading this module starts nothing; `run` serves, `main` is the command line.
-- See README.md beside this file.

local sandbox = {}

local STATUS_STYLES = {mixed = true, int = true, string = true, label = true}
local SECRET_ENV = "PARTNERCUSTOMERS_SANDBOX_SECRET"
local INTROSPECTION_SECRET_ENV = "PARTNERCUSTOMERS_SANDBOX_INTROSPECTION_SECRET"

local defaults = {
  port = 0, count = 250, seed = 1, idle_timeout = 600, client_id = "sandbox-client",
  token_ttl = 3600, odata_page_size = 100, v3_status = "mixed", quiet = false, approve_devices = false,
  pc_tenant = "sandbox-partner.onmicrosoft.com",
}

-- Option checks: each returns true when the value is acceptable.
local function integer_in(min, max)
  return function(v) return math.type(v) == "integer" and v >= min and v <= max end,
         string.format("an integer from %d to %d", min, max)
end

local function positive_number(v)
  return type(v) == "number" and v > 0 and v < math.huge
end

local function non_empty_string(v)
  return type(v) == "string" and v ~= ""
end

-- A tenant name as it appears in the token URL: a domain name or a GUID.
local function tenant_name(v)
  return type(v) == "string" and #v <= 253 and v:match("^[%w][%w%.%-]*$") ~= nil
end

-- The introspection endpoint: plain http on 127.0.0.1 (a port, a path), nothing else.
local function loopback_url(v)
  if type(v) ~= "string" or #v > 2048 then return false end
  local port, path = v:match("^http://127%.0%.0%.1:(%d+)(.*)$")
  if not port then
    port, path = "80", v:match("^http://127%.0%.0%.1(/.*)$")
  end
  local n = math.tointeger(tonumber(port or ""))
  return n ~= nil and n >= 1 and n <= 65535 and path ~= nil
    and (path == "" or path:match("^/[%w%-%._~!$&'()*+,;=:@/%%?]*$") ~= nil)
end

local option_checks = {
  port = {integer_in(0, 65535)},
  port_file = {non_empty_string, "a file name"},
  secret_file = {non_empty_string, "a file name"},
  count = {integer_in(0, 1000000)},
  seed = {integer_in(math.mininteger, math.maxinteger)},
  idle_timeout = {positive_number, "a positive number of seconds"},
  client_id = {non_empty_string, "a non-empty string"},
  client_secret = {non_empty_string, "a non-empty string"},
  token_ttl = {integer_in(0, 86400 * 365)},
  odata_page_size = {integer_in(1, 100000)},
  v3_status = {function(v) return STATUS_STYLES[v] ~= nil end, '"mixed", "int", "string" or "label"'},
  quiet = {function(v) return type(v) == "boolean" end, "a boolean"},
  approve_devices = {function(v) return type(v) == "boolean" end, "a boolean"},
  on_listen = {function(v) return type(v) == "function" end, "a function"},
  pc_tenant = {tenant_name, "a tenant name (letters, digits, '.' and '-')"},
  client_cert = {non_empty_string, "a file name"},
  introspection_url = {loopback_url, "an http://127.0.0.1[:PORT]/path URL"},
  introspection_client_id = {non_empty_string, "a non-empty string"},
  introspection_secret = {non_empty_string, "a non-empty string"},
}

local function random_hex(nbytes)
  local bytes = require("openssl.rand").bytes(nbytes)
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- The generated secret goes to a file readable by its owner only.
local function write_secret_file(path, secret)
  local f = assert(io.open(path, "w"))
  f:close()
  os.execute("chmod 600 " .. shell_quote(path))
  f = assert(io.open(path, "w"))
  f:write(secret, "\n")
  f:close()
end

-- Validates `opts` and fills in the defaults and the secret. Raises on misuse.
function sandbox.config(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("partnercustomers.sandbox: options must be a table", 2)
  end
  opts = opts or {}
  local cfg = {}
  for key, value in pairs(opts) do
    local check = option_checks[key]
    if not check then
      error("partnercustomers.sandbox: unknown option '" .. tostring(key) .. "'", 2)
    end
    if not check[1](value) then
      error(string.format("partnercustomers.sandbox: option '%s' must be %s", key, check[2]), 2)
    end
    cfg[key] = value
  end
  for key, value in pairs(defaults) do
    if cfg[key] == nil then cfg[key] = value end
  end
  if cfg.client_cert then
    -- read now, so that a bad file is a misuse rather than a failure at the first assertion
    local ok, err = require("partnercustomers.sandbox.assertion").load_certificate(cfg.client_cert)
    if not ok then
      error("partnercustomers.sandbox: option 'client_cert': " .. err, 2)
    end
  end
  if cfg.introspection_url then
    if cfg.introspection_secret == nil then
      local env = os.getenv(INTROSPECTION_SECRET_ENV)
      if env and env ~= "" then cfg.introspection_secret = env end
    end
    if not cfg.introspection_client_id or not cfg.introspection_secret then
      error("partnercustomers.sandbox: option 'introspection_url' needs 'introspection_client_id' and " ..
            "the secret (" .. INTROSPECTION_SECRET_ENV .. ")", 2)
    end
  elseif cfg.introspection_client_id or cfg.introspection_secret then
    error("partnercustomers.sandbox: options 'introspection_client_id' and 'introspection_secret' " ..
          "need 'introspection_url'", 2)
  end
  cfg.random_hex = random_hex
  if cfg.client_secret == nil then
    local env = os.getenv(SECRET_ENV)
    if env and env ~= "" then
      cfg.client_secret = env
    else
      cfg.client_secret = random_hex(32)
      if cfg.secret_file then write_secret_file(cfg.secret_file, cfg.client_secret) end
    end
  end
  return cfg
end

-- Serves until shutdown or the idle timeout. Raises on misuse; returns true, or nil and a
-- message when the sandbox cannot run (say, the port is taken).
-- Serves `cfg` (validated).
local function serve(cfg)
  return require("partnercustomers.sandbox.server").run(cfg)
end

function sandbox.run(opts)
  local cfg = sandbox.config(opts)
  return serve(cfg)
end

-- Serves on the caller's cqueues controller `cq` (in the caller's process and loop) until
-- stop() is called. Returns {url, token_url, pc_token_url, client_id, client_secret, service,
-- faults = function(rules), refresh_token = function(), stop = function()}, or nil and a message.
-- opts as for sandbox.run (idle_timeout and port_file do not apply).
function sandbox.serve_on(cq, opts)
  local cfg = sandbox.config(opts)
  local state, srv, svc = require("partnercustomers.sandbox.server").listen(cfg, cq)
  if not state then return nil, srv end
  local faults = require "partnercustomers.sandbox.faults"
  return {
    url = state.base_url, token_url = state.base_url .. "/connect/token",
    pc_token_url = state.base_url .. "/" .. cfg.pc_tenant .. "/oauth2/v2.0/token",
    client_id = cfg.client_id, client_secret = cfg.client_secret, service = svc,
    faults = function(rules)
      svc.rules = assert(faults.parse(require("partnercustomers.util").json_encode(rules)))
    end,
    refresh_token = function() return svc.pc:issue_refresh_token() end,
    stop = function() srv:close() end,
  }
end

sandbox.usage = [[
usage: partnercustomers sandbox [options]

A local fake of the AvePoint partner API and its token endpoint, and of the
Partner Center customer endpoints and their Entra ID token endpoints, on 127.0.0.1.

  --port N             port to listen on (default 0: any free port)
  --port-file FILE     write the port there once listening
  --secret-file FILE   write the generated client secret there (when PARTNERCUSTOMERS_SANDBOX_SECRET is unset)
  --client-id ID       the client id to accept (default sandbox-client)
  --count N            number of customers (default 250)
  --seed N             data set seed (default 1)
  --idle-timeout S     stop after S seconds without a request (default 600)
  --token-ttl S        token lifetime in seconds (default 3600)
  --odata-page-size N  page size of /partner/customers (default 100)
  --v3-status STYLE    jobStatus in v3 answers: mixed, int, string or label (default mixed)
  --pc-tenant NAME     the partner tenant of the Entra token URLs (default sandbox-partner.onmicrosoft.com)
  --client-cert FILE   a PEM certificate (RSA key): the token endpoints also accept client
                       assertions (private_key_jwt, RS256 or PS256) signed with its key
  --introspection-url URL
                       an RFC 7662 introspection endpoint (http://127.0.0.1 only): the AvePoint
                       endpoints also accept bearer tokens that it says are active with their scope
  --introspection-client-id ID
                       the sandbox's client id at that endpoint (HTTP Basic); the secret comes
                       from PARTNERCUSTOMERS_SANDBOX_INTROSPECTION_SECRET
  --quiet              no request log on stderr
  --approve-devices    device codes are approved as they are issued (no one plays the user)
  --help               this text

The client secret comes from the environment variable PARTNERCUSTOMERS_SANDBOX_SECRET;
without it a random one is generated (see --secret-file). It is never printed.
]]

local function parse_integer(s)
  return math.tointeger(tonumber(s))
end

local function parse_number(s)
  return tonumber(s)
end

local function parse_string(s)
  return s
end

-- flag -> option key and value parser (nil parser: a switch)
local flags = {
  ["--port"] = {"port", parse_integer},
  ["--port-file"] = {"port_file", parse_string},
  ["--secret-file"] = {"secret_file", parse_string},
  ["--client-id"] = {"client_id", parse_string},
  ["--count"] = {"count", parse_integer},
  ["--seed"] = {"seed", parse_integer},
  ["--idle-timeout"] = {"idle_timeout", parse_number},
  ["--token-ttl"] = {"token_ttl", parse_integer},
  ["--odata-page-size"] = {"odata_page_size", parse_integer},
  ["--v3-status"] = {"v3_status", parse_string},
  ["--pc-tenant"] = {"pc_tenant", parse_string},
  ["--client-cert"] = {"client_cert", parse_string},
  ["--introspection-url"] = {"introspection_url", parse_string},
  ["--introspection-client-id"] = {"introspection_client_id", parse_string},
  ["--quiet"] = {"quiet"},
  ["--approve-devices"] = {"approve_devices"},
}

-- Returns the options table, "help", or nil and a message.
local function parse_args(args)
  local opts = {}
  local i = 1
  while i <= #args do
    local arg = args[i]
    local flag, inline = arg:match("^(%-%-[%w%-]+)=(.*)$")
    flag = flag or arg
    if flag == "--help" or flag == "-h" then
      return "help"
    end
    local spec = flags[flag]
    if not spec then
      return nil, "unknown argument: " .. arg
    end
    local key, parse = spec[1], spec[2]
    if not parse then
      if inline then return nil, flag .. " takes no value" end
      opts[key] = true
    else
      local raw = inline
      if raw == nil then
        i = i + 1
        raw = args[i]
      end
      if raw == nil then
        return nil, flag .. " needs a value"
      end
      local value = parse(raw)
      if value == nil then
        return nil, string.format("%s: invalid value '%s'", flag, raw)
      end
      opts[key] = value
    end
    i = i + 1
  end
  return opts
end

-- The command line: `args` is an array of strings. Returns the exit code
-- (0 ok, 1 cannot run, 2 misuse).
function sandbox.main(args, extra)
  local opts, err = parse_args(args or {})
  if type(opts) == "table" then
    for k, v in pairs(extra or {}) do opts[k] = v end -- options of the caller (on_listen)
  end
  if opts == "help" then
    io.stdout:write(sandbox.usage)
    return 0
  end
  local cfg
  if opts then
    local ok, result = pcall(sandbox.config, opts)
    if ok then cfg = result else err = result end
  end
  if not cfg then
    io.stderr:write("partnercustomers sandbox: ", tostring(err), "\n",
                    "try 'partnercustomers sandbox --help'\n")
    return 2
  end
  local ok, run_err = serve(cfg)
  if not ok then
    io.stderr:write("partnercustomers sandbox: ", tostring(run_err), "\n")
    return 1
  end
  return 0
end

return sandbox
