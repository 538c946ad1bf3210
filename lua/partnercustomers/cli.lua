-- The command line: main(args, env, out, err) -> exit code.
-- `env` maps variable names to values (bin/partnercustomers passes os.getenv behind a table), so
-- specs can run the CLI in-process with a fake environment and capture out and err.

local format = require "partnercustomers.format"
local job_status = require "partnercustomers.job_status"
local report = require "partnercustomers.report"
local util = require "partnercustomers.util"
local is_guid = require("partnercustomers.partnercenter").is_guid

local M = {}

local OK, FAILURE, MISUSE = 0, 1, 2

-- Environment variable -> pc.avepoint option (credentials are handled apart).
local ENV_OPTIONS = {
  PARTNERCUSTOMERS_ENVIRONMENT = "environment",
  PARTNERCUSTOMERS_BASE_URL = "base_url",
  PARTNERCUSTOMERS_TOKEN_URL = "token_url",
  PARTNERCUSTOMERS_CA_FILE = "ca_file",
  PARTNERCUSTOMERS_PROXY = "proxy",
  PARTNERCUSTOMERS_TIMEOUT = "timeout",
  PARTNERCUSTOMERS_MAX_RETRIES = "max_retries",
}
local OPTION_ENV = {
  certificate = "PARTNERCUSTOMERS_CERT_*",
  client_id = "PARTNERCUSTOMERS_CLIENT_ID",
  client_secret = "PARTNERCUSTOMERS_CLIENT_SECRET",
  access_token = "PARTNERCUSTOMERS_ACCESS_TOKEN",
}
for var, option in pairs(ENV_OPTIONS) do OPTION_ENV[option] = var end

-- Environment variable -> pc.partnercenter option (credentials are handled apart). The transport
-- settings (CA file, proxy, timeout, retries) are shared with the AvePoint client.
local PC_ENV_OPTIONS = {
  PARTNERCUSTOMERS_PC_TENANT = "tenant",
  PARTNERCUSTOMERS_PC_CLOUD = "cloud",
  PARTNERCUSTOMERS_PC_BASE_URL = "base_url",
  PARTNERCUSTOMERS_PC_TOKEN_URL = "token_url",
  PARTNERCUSTOMERS_PC_TOKEN_ENDPOINT = "token_endpoint",
  PARTNERCUSTOMERS_PC_LOCALE = "locale",
  PARTNERCUSTOMERS_CA_FILE = "ca_file",
  PARTNERCUSTOMERS_PROXY = "proxy",
  PARTNERCUSTOMERS_TIMEOUT = "timeout",
  PARTNERCUSTOMERS_MAX_RETRIES = "max_retries",
}
local PC_OPTION_ENV = {
  certificate = "PARTNERCUSTOMERS_PC_CERT_*",
  client_id = "PARTNERCUSTOMERS_PC_CLIENT_ID",
  client_secret = "PARTNERCUSTOMERS_PC_CLIENT_SECRET",
  access_token = "PARTNERCUSTOMERS_PC_ACCESS_TOKEN",
  refresh_token = "PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE",
}
for var, option in pairs(PC_ENV_OPTIONS) do PC_OPTION_ENV[option] = var end

local HELP = [[
Usage: partnercustomers COMMAND [OPTIONS]

Commands:
  customers                   list the customers
      --source avepoint|avepoint-v3|partnercenter
                                      which endpoint (default avepoint-v3): AvePoint's
                                      /partner/customers or v3 general customers, or
                                      Partner Center's customers
      --format table|csv|json|ndjson  output format (default table)
      --status LABEL                  only customers with this job status (any case,
                                      a label or a code: "Failed", "no backup updates", 2)
      --page-size N                   page size: v3 1 to 100 (default 100),
                                      partnercenter 1 to 500 (default 500)
      --parallel N                    v3 pages fetched at once, 1 to 64 (default 8)
      --v3 get|batch                  the v3 call: GET (default) or POST .../customers/batch
      --progress                      report progress on stderr (default: only on a terminal)
  organization TENANT_ID...   the Partner Center organization of each customer tenant (GUIDs);
                              exit status 1 when any lookup failed, after printing the others
      --format table|csv|json|ndjson  output format (default table)
      --parallel N                    lookups at once, 1 to 64 (default 8)
  report                      every AvePoint v3 customer and each of its tenants, joined with the
                              tenant's Partner Center organization; a lookup that failed is
                              named in the Failure column ("auth 403", "http 404"); exit status
                              1 when a lookup failed for another reason than the tenant itself
      --format table|csv|json|ndjson  output format (default table)
      --page-size N                   v3 page size, 1 to 100 (default 100)
      --parallel N                    Partner Center lookups at once, 1 to 64 (default 8)
  sandbox [ARGS...]           run the local sandbox service (see its --help)

Options:
  --help       this text
  --version    the version

Environment (credentials never go on the command line):
 AvePoint (customers, report):
  PARTNERCUSTOMERS_CLIENT_ID        the app's client id
  PARTNERCUSTOMERS_CLIENT_SECRET    the app's client secret
  PARTNERCUSTOMERS_CERT_KEY_FILE    or, instead of the secret, certificate credentials: a PEM key
  PARTNERCUSTOMERS_CERT_FILE          and its PEM certificate,
  PARTNERCUSTOMERS_PFX_FILE           or a PKCS#12 file instead of those two;
  PARTNERCUSTOMERS_CERT_PASSWORD      the key's or the .pfx file's password;
  PARTNERCUSTOMERS_CERT_ALG           RS256 (default) or PS256
  PARTNERCUSTOMERS_ACCESS_TOKEN     or, instead of all these, a bearer token used as it is
  PARTNERCUSTOMERS_ENVIRONMENT      commercial (default), gov, aos2 or fedramp
  PARTNERCUSTOMERS_BASE_URL         API base URL (overrides the environment's)
  PARTNERCUSTOMERS_TOKEN_URL        token URL (overrides the environment's)
 Microsoft Partner Center (customers --source partnercenter, organization, report):
  PARTNERCUSTOMERS_PC_TENANT        the partner's own tenant (GUID or domain): the token authority
  PARTNERCUSTOMERS_PC_CLIENT_ID     the Entra app's client id
  PARTNERCUSTOMERS_PC_CLIENT_SECRET the app's client secret (app-only; with a refresh token file,
                                    the secret of a confidential app)
  PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE
                                    app+user: a file holding the refresh token; every new
                                    refresh token is written back to it (mode 600)
  PARTNERCUSTOMERS_PC_CERT_KEY_FILE, _PC_CERT_FILE, _PC_PFX_FILE, _PC_CERT_PASSWORD, _PC_CERT_ALG
                                    app-only certificate credentials, as for AvePoint
  PARTNERCUSTOMERS_PC_ACCESS_TOKEN  or, instead of all these, a bearer token used as it is
  PARTNERCUSTOMERS_PC_CLOUD         global (default), usgov or china
  PARTNERCUSTOMERS_PC_BASE_URL      API base URL (overrides the cloud's)
  PARTNERCUSTOMERS_PC_TOKEN_URL     token URL (overrides the one made of cloud and tenant)
  PARTNERCUSTOMERS_PC_TOKEN_ENDPOINT
                                    v2 (default: scope=…/.default) or v1 (resource=…)
  PARTNERCUSTOMERS_PC_LOCALE        X-Locale of the requests, e.g. en-US
 Both:
  PARTNERCUSTOMERS_CA_FILE          an extra CA certificate file (PEM)
  PARTNERCUSTOMERS_PROXY            proxy URL
  PARTNERCUSTOMERS_TIMEOUT          seconds per attempt (default 30)
  PARTNERCUSTOMERS_MAX_RETRIES      retries of a failed request, 0 to 10 (default 3)

Exit status: 0 ok, 1 the service or the network failed, 2 misuse.
]]

-- A misuse of the command line: raised inside main and turned into exit code 2.
local Usage = {}

local function usage(fmt, ...)
  error(setmetatable({ message = fmt:format(...) }, Usage), 0)
end

-- A failure raised where no error can be returned (in the refresh token hook): exit code 1.
local Failure = {}

local function fail(fmt, ...)
  error(setmetatable({ message = fmt:format(...) }, Failure), 0)
end

-- One line, whatever the error holds.
local function line(e)
  return (tostring(e):gsub("[\r\n]+", " "))
end

-- Flags of each command; true when the flag takes a value.
local FLAGS = {
  customers = { ["--source"] = true, ["--format"] = true, ["--status"] = true,
                ["--page-size"] = true, ["--parallel"] = true, ["--v3"] = true,
                ["--progress"] = false },
  organization = { ["--format"] = true, ["--parallel"] = true },
  report = { ["--format"] = true, ["--page-size"] = true, ["--parallel"] = true },
}

-- Parses the arguments of a command after its name: "--name value", "--name=value" and bare
-- flags. With `positional`, arguments that do not start with "-" are collected in order in o[1],
-- o[2], …
local function parse(args, command, positional)
  local flags = FLAGS[command]
  local o, i = {}, 2
  while i <= #args do
    local a = args[i]
    local name, value = a:match("^(%-%-[^=]+)=(.*)$")
    name = name or a
    local takes = flags[name]
    if takes == nil and positional and not a:find("^%-") then
      o[#o + 1] = a
    else
      if takes == nil then usage("unknown argument '%s'", a) end
      if takes and value == nil then
        i = i + 1
        value = args[i]
        if value == nil then usage("%s needs a value", name) end
      elseif not takes and value ~= nil then
        usage("%s takes no value", name)
      end
      o[name] = value or true
    end
    i = i + 1
  end
  return o
end

local function choice(o, flag, words, default)
  local v = o[flag]
  if v == nil then return default end
  for _, w in ipairs(words) do
    if v == w then return v end
  end
  usage("%s must be one of %s", flag, table.concat(words, ", "))
end

local function integer(o, flag, min, max)
  local v = o[flag]
  if v == nil then return nil end
  local n = util.to_integer(v)
  if not n or n < min or n > max then usage("%s must be an integer from %d to %d", flag, min, max) end
  return n
end

local function env_value(env, name)
  local v = env[name]
  if v == nil or v == "" then return nil end
  return v
end

-- Numeric options given as text in the environment.
local function numbers(o, option_env)
  for _, option in ipairs { "timeout", "max_retries" } do
    if o[option] then
      o[option] = tonumber(o[option]) or usage("%s must be a number", option_env[option])
    end
  end
end

-- Certificate credentials from the environment (prefix "PARTNERCUSTOMERS_" or
-- "PARTNERCUSTOMERS_PC_"), or nil when none of its files is named.
local function certificate_from(env, prefix)
  local key = env_value(env, prefix .. "CERT_KEY_FILE")
  local cert = env_value(env, prefix .. "CERT_FILE")
  local pfx = env_value(env, prefix .. "PFX_FILE")
  if not (key or cert or pfx) then return nil end
  return { key = key, cert = cert, pfx = pfx, password = env_value(env, prefix .. "CERT_PASSWORD"),
           alg = env_value(env, prefix .. "CERT_ALG") }
end

-- pc.avepoint options from the environment.
local function client_options(env)
  local o = {}
  for var, option in pairs(ENV_OPTIONS) do o[option] = env_value(env, var) end
  numbers(o, OPTION_ENV)
  local id = env_value(env, "PARTNERCUSTOMERS_CLIENT_ID")
  local secret = env_value(env, "PARTNERCUSTOMERS_CLIENT_SECRET")
  local token = env_value(env, "PARTNERCUSTOMERS_ACCESS_TOKEN")
  local cert = certificate_from(env, "PARTNERCUSTOMERS_")
  if token and (id or secret or cert) then
    usage("set either PARTNERCUSTOMERS_ACCESS_TOKEN or PARTNERCUSTOMERS_CLIENT_ID with a secret "
          .. "or a certificate, not both")
  elseif token then
    o.access_token = token
  elseif cert and secret then
    usage("set either PARTNERCUSTOMERS_CLIENT_SECRET or a certificate (PARTNERCUSTOMERS_CERT_*), not both")
  elseif cert and not id then
    usage("PARTNERCUSTOMERS_CLIENT_ID is not set")
  elseif cert then
    o.client_id, o.certificate = id, cert
  elseif id and secret then
    o.client_id, o.client_secret = id, secret
  elseif id or secret then
    usage("%s is not set", id and "PARTNERCUSTOMERS_CLIENT_SECRET" or "PARTNERCUSTOMERS_CLIENT_ID")
  else
    usage("no credentials: set PARTNERCUSTOMERS_CLIENT_ID and PARTNERCUSTOMERS_CLIENT_SECRET, "
          .. "or PARTNERCUSTOMERS_ACCESS_TOKEN")
  end
  return o
end

-- Calls a client constructor; its misuse (a bad PARTNERCUSTOMERS_* value) is told in the
-- variables' names.
local function construct(new, o, prefix, option_env)
  local ok, client = pcall(new, o)
  if ok then return client end
  local msg = type(client) == "string"
    and (client:match("^partnercustomers: (.*)$")
         or client:match("^[^\n]-:%d+: partnercustomers: (.*)$"))
  if not msg then error(client, 0) end -- not misuse: a bug, let it show
  msg = msg:gsub("^" .. prefix:gsub("%.", "%%.") .. ":? ", "")
  usage("%s", (msg:gsub("option '([%w_]+)'", option_env)))
end

-- --parallel N needs a client with at least N transfer slots (max_parallel, 8 by default).
local function with_slots(o, parallel)
  if parallel and not o.max_parallel then o.max_parallel = math.max(parallel, 8) end
  return o
end

local function open_client(pc, env, parallel)
  return construct(pc.avepoint, with_slots(client_options(env), parallel), "pc.avepoint", OPTION_ENV)
end

------------------------------------------------------------------------------------------------
-- Partner Center

local REFRESH_VAR = "PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE"

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function read_refresh_token(path)
  local f, why = io.open(path, "r")
  if not f then usage("%s: cannot read the file: %s", REFRESH_VAR, why) end
  local text = f:read("a")
  f:close()
  local token = text and text:match("^%s*(%S+)%s*$")
  if not token then usage("%s: the file does not hold one refresh token", REFRESH_VAR) end
  return token
end

-- Replaces the refresh token file atomically: a new file (mode 0600, made by mktemp) in the same
-- directory, renamed over the old one. Raises a Failure, never with the token in it.
local function save_refresh_token(path, token)
  local dir = path:match("^(.*)/[^/]*$") or "."
  local p = io.popen("mktemp " .. shell_quote(dir .. "/.partnercustomers-refresh-token.XXXXXX")
                     .. " 2>/dev/null")
  local tmp = p and p:read("l")
  if p then p:close() end
  -- mktemp prints the name only once it has made the file; its exit status is not trusted alone
  -- (a preloaded leak checker, say, can fail it after the fact)
  local made = tmp and tmp ~= "" and io.open(tmp, "r")
  if made then made:close() end
  if not made then
    fail("cannot save the new refresh token: cannot create a file in %s", dir)
  end
  local f, why = io.open(tmp, "w") -- mktemp made it with mode 0600; "w" keeps the mode
  local ok = f and f:write(token, "\n")
  if f then
    local closed, cwhy = f:close()
    ok, why = ok and closed, why or cwhy
  end
  if ok then ok, why = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    fail("cannot save the new refresh token to %s: %s (the one there may no longer be accepted)",
         path, tostring(why))
  end
end

-- pc.partnercenter options from the environment.
local function pc_client_options(env)
  local o = {}
  for var, option in pairs(PC_ENV_OPTIONS) do o[option] = env_value(env, var) end
  numbers(o, PC_OPTION_ENV)
  local id = env_value(env, "PARTNERCUSTOMERS_PC_CLIENT_ID")
  local secret = env_value(env, "PARTNERCUSTOMERS_PC_CLIENT_SECRET")
  local file = env_value(env, REFRESH_VAR)
  local token = env_value(env, "PARTNERCUSTOMERS_PC_ACCESS_TOKEN")
  local cert = certificate_from(env, "PARTNERCUSTOMERS_PC_")
  if cert and (token or secret or file) then
    usage("set a certificate (PARTNERCUSTOMERS_PC_CERT_*) alone with PARTNERCUSTOMERS_PC_CLIENT_ID, "
          .. "without a secret, refresh token file or access token")
  elseif cert and not id then
    usage("PARTNERCUSTOMERS_PC_CLIENT_ID is not set")
  elseif cert then
    o.client_id, o.certificate = id, cert
  elseif token and (id or secret or file) then
    usage("set either PARTNERCUSTOMERS_PC_ACCESS_TOKEN or PARTNERCUSTOMERS_PC_CLIENT_ID with "
          .. "PARTNERCUSTOMERS_PC_CLIENT_SECRET or %s, not both", REFRESH_VAR)
  elseif token then
    o.access_token = token
  elseif not id and (secret or file) then
    usage("PARTNERCUSTOMERS_PC_CLIENT_ID is not set")
  elseif file then
    o.client_id, o.client_secret = id, secret
    o.refresh_token = read_refresh_token(file)
    o.on_refresh_token = function(new) save_refresh_token(file, new) end
  elseif id and secret then
    o.client_id, o.client_secret = id, secret
  elseif id then
    usage("set PARTNERCUSTOMERS_PC_CLIENT_SECRET (app-only) or %s (app+user)", REFRESH_VAR)
  else
    usage("no Partner Center credentials: set PARTNERCUSTOMERS_PC_CLIENT_ID with "
          .. "PARTNERCUSTOMERS_PC_CLIENT_SECRET or %s, or PARTNERCUSTOMERS_PC_ACCESS_TOKEN",
          REFRESH_VAR)
  end
  return o
end

local function open_pc_client(pc, env, on_event, parallel)
  local o = with_slots(pc_client_options(env), parallel)
  o.on_event = on_event
  return construct(pc.partnercenter, o, "pc.partnercenter", PC_OPTION_ENV)
end

------------------------------------------------------------------------------------------------
-- Output

-- Progress on err: redrawn in place on a terminal, one line per step otherwise. Callable as
-- progress(done, total); closing it ends a line left open on the terminal.
local function progress_reporter(err, terminal)
  local open = false
  return setmetatable({}, {
    __call = function(_, done, total)
      local s = total and ("page %d of %d"):format(done, total) or ("page %d"):format(done)
      if terminal then
        err:write("\r", s, "\27[K") -- erase what a longer line left
        open = true
      else
        err:write("partnercustomers: ", s, "\n")
      end
    end,
    __close = function()
      if open then err:write("\n") end
    end,
  })
end

local function stderr_is_terminal(err)
  return err == io.stderr and os.execute("test -t 2") == true
end

-- A writer that remembers its first write error; rows added after it are dropped.
local function output(fmt, out, layout)
  local w = format.writer(fmt, out, layout)
  local o = {}
  function o.add(row)
    if o.failed then return false end
    local ok, werr = w:add(row)
    if not ok then o.failed = werr end
    return ok
  end
  function o.finish()
    if not o.failed then
      local ok, werr = w:finish()
      if not ok then o.failed = werr end
    end
    if o.failed then
      return nil, "partnercustomers: cannot write the output: " .. tostring(o.failed)
    end
    return true
  end
  return o
end

-- Calls an iterator of the library: its value, or nil and the error object it raised.
local function step(pc, it)
  local ok, v = pcall(it)
  if ok then return v end
  if pc.is_error(v) then return nil, v end
  error(v, 0) -- a bug, or a Failure from a hook: let it through
end

------------------------------------------------------------------------------------------------
-- Commands

local function pc_customers(pc, o, env, out, err, fmt)
  for _, flag in ipairs { "--status", "--parallel", "--v3" } do
    if o[flag] then usage("%s applies to the AvePoint sources only", flag) end
  end
  local page_size = integer(o, "--page-size", 1, 500)
  local terminal = stderr_is_terminal(err)
  local progress <close> = (o["--progress"] or terminal) and progress_reporter(err, terminal) or nil
  local mpc <close> = open_pc_client(pc, env, progress and function(ev)
    if ev.type == "page" then progress(ev.page_index) end
  end)
  local w = output(fmt, out, "pc_customers")
  local it = mpc:each_customer { page_size = page_size }
  while true do
    local c, e = step(pc, it)
    if e then return nil, e end
    if c == nil or not w.add(c) then break end
  end
  return w.finish()
end

local function customers(args, env, out, err)
  local o = parse(args, "customers")
  local source = choice(o, "--source", { "avepoint", "avepoint-v3", "partnercenter" }, "avepoint-v3")
  local fmt = choice(o, "--format", format.NAMES, "table")
  local pc = require "partnercustomers"
  if source == "partnercenter" then return pc_customers(pc, o, env, out, err, fmt) end
  local status
  if o["--status"] then
    status = job_status.name(o["--status"]) or usage("--status: unknown job status '%s'", o["--status"])
  end
  local page_size = integer(o, "--page-size", 1, 100)
  local parallel = integer(o, "--parallel", 1, 64)
  local v3 = choice(o, "--v3", { "get", "batch" })
  if source == "avepoint" and (page_size or parallel or v3) then
    usage("--page-size, --parallel and --v3 apply to --source avepoint-v3 only")
  end

  local ave <close> = open_client(pc, env, parallel)
  local terminal = stderr_is_terminal(err)
  local progress <close> = (o["--progress"] or terminal) and progress_reporter(err, terminal) or nil

  local w = output(fmt, out)
  local function emit(list)
    for _, c in ipairs(list) do
      if not status or c.jobStatus == status then
        if not w.add(c) then return false end
      end
    end
    return true
  end

  if source == "avepoint" then
    local list, e = ave:customers()
    if not list then return nil, e end
    emit(list)
  elseif format.STREAMING[fmt] and not parallel then
    -- page by page: a long listing starts at once and is never held whole
    local pages = ave:pages { page_size = page_size, v3 = v3 }
    local done = 0
    while true do
      local page, e = step(pc, pages)
      if e then return nil, e end
      if page == nil then break end
      if not emit(page.customers) then break end
      done = done + 1
      if progress then
        local total = page.total_count and math.max(done, -(-page.total_count // page.page_size))
        progress(done, total)
      end
    end
  else
    local list, e = ave:all_customers { page_size = page_size, parallel = parallel, v3 = v3,
                                        progress = progress and function(...) progress(...) end }
    if not list then return nil, e end
    emit(list)
  end
  return w.finish()
end

-- `partnercustomers organization TENANT_ID...`: prints every organization found, then a line on
-- stderr for every lookup that failed (exit 1).
local function organization(args, env, out, err)
  local o = parse(args, "organization", true)
  local fmt = choice(o, "--format", format.NAMES, "table")
  local parallel = integer(o, "--parallel", 1, 64)
  if #o == 0 then usage("organization needs at least one TENANT_ID") end
  local ids, seen = {}, {}
  for _, id in ipairs(o) do
    if not is_guid(id) then usage("'%s' is not a customer tenant id (a GUID)", id) end
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
  end

  local pc = require "partnercustomers"
  local mpc <close> = open_pc_client(pc, env, nil, parallel)
  local results, errors = mpc:organizations(ids, { parallel = parallel })
  if next(results) ~= nil or next(errors) == nil then -- nothing at all when every lookup failed
    local w = output(fmt, out, "organizations")
    for _, id in ipairs(ids) do
      local org = results[id]
      if org then
        local row = { tenantId = id }
        for k, v in pairs(org) do row[k] = v end
        w.add(row)
      end
    end
    local ok, werr = w.finish()
    if not ok then
      err:write(werr, "\n")
      return FAILURE
    end
  end
  local failed = false
  for _, id in ipairs(ids) do
    if errors[id] then
      failed = true
      err:write("partnercustomers: tenant ", id, ": ",
                line(errors[id]):gsub("^partnercustomers: ", ""), "\n")
    end
  end
  return failed and FAILURE or OK
end

-- `partnercustomers report`: the rows of report.lua. Lookups that failed for the tenant itself
-- (403, 404) are only named in their rows; any other failed lookup also makes the exit status 1.
local function report_command(args, env, out, err)
  local o = parse(args, "report")
  local fmt = choice(o, "--format", format.NAMES, "table")
  local page_size = integer(o, "--page-size", 1, 100)
  local parallel = integer(o, "--parallel", 1, 64)

  local pc = require "partnercustomers"
  local ave <close> = open_client(pc, env, parallel)
  local mpc <close> = open_pc_client(pc, env, nil, parallel)
  local rows, e = report.rows(ave, mpc, { page_size = page_size, parallel = parallel })
  if not rows then
    err:write(line(e), "\n")
    return FAILURE
  end
  local w = output(fmt, out, "report")
  for _, row in ipairs(rows) do
    if not w.add(row) then break end
  end
  local ok, werr = w.finish()
  if not ok then
    err:write(werr, "\n")
    return FAILURE
  end

  local tenants, failed, first = {}, 0, nil
  for _, row in ipairs(rows) do
    if row.tenantId ~= nil and not tenants[row.tenantId] then
      tenants[row.tenantId] = true
      if row.error and not report.tenant_specific(row.error) then
        failed = failed + 1
        first = first or row.error
      end
    end
  end
  if failed == 0 then return OK end
  err:write(("partnercustomers: %d Partner Center lookup%s failed: "):format(failed,
              failed == 1 and "" or "s"),
            line(first):gsub("^partnercustomers: ", ""), "\n")
  return FAILURE
end

local function sandbox(args)
  -- lua-http may be installed for 5.1 only (Debian's lua-http); it is pure Lua
  if not package.searchpath("http.server", package.path) then
    package.path = package.path .. ";/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
  end
  local rc = require("partnercustomers.sandbox").main(table.move(args, 2, #args, 1, {}))
  if math.type(rc) == "integer" then return rc end
  return (rc == false) and FAILURE or OK
end

local function run(args, env, out, err)
  if args[1] == "sandbox" then return sandbox(args) end -- its options, --help included, are its own
  for _, a in ipairs(args) do
    if a == "--help" or a == "-h" then out:write(HELP); return OK end
    if a == "--version" then
      out:write(require("partnercustomers")._VERSION, "\n")
      return OK
    end
  end
  local command = args[1]
  if command == "customers" then
    local ok, e = customers(args, env, out, err)
    if ok then return OK end
    err:write(line(e), "\n")
    return FAILURE
  elseif command == "organization" then
    return organization(args, env, out, err)
  elseif command == "report" then
    return report_command(args, env, out, err)
  elseif command == nil then
    usage("no command given")
  else
    usage("unknown command '%s'", command)
  end
end

function M.main(args, env, out, err)
  args, env = args or {}, env or {}
  out, err = out or io.stdout, err or io.stderr
  local ok, rc = xpcall(run, function(e)
    local mt = getmetatable(e)
    if mt == Usage or mt == Failure then return e end
    return debug.traceback(e, 2) -- a bug: keep where it happened
  end, args, env, out, err)
  if ok then return rc end
  local mt = getmetatable(rc)
  if mt == Failure then
    err:write("partnercustomers: ", line(rc.message), "\n")
    return FAILURE
  end
  if mt ~= Usage then error(rc, 0) end
  err:write("partnercustomers: ", line(rc.message), "\n",
            "Try 'partnercustomers --help'.\n")
  return MISUSE
end

M.HELP = HELP

return M
