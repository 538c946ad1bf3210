-- The command line: main(args, env, out, err) -> exit code.
-- `env` maps variable names to values (bin/partnercustomers passes os.getenv behind a table), so
-- specs can run the CLI in-process with a fake environment and capture out and err.

local format = require "partnercustomers.format"
local job_status = require "partnercustomers.job_status"
local util = require "partnercustomers.util"

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
  client_id = "PARTNERCUSTOMERS_CLIENT_ID",
  client_secret = "PARTNERCUSTOMERS_CLIENT_SECRET",
  access_token = "PARTNERCUSTOMERS_ACCESS_TOKEN",
}
for var, option in pairs(ENV_OPTIONS) do OPTION_ENV[option] = var end

local HELP = [[
Usage: partnercustomers COMMAND [OPTIONS]

Commands:
  customers                   list the AvePoint customers
      --source avepoint|avepoint-v3   which endpoint (default avepoint-v3):
                                      /partner/customers or the v3 general customers
      --format table|csv|json|ndjson  output format (default table)
      --status LABEL                  only customers with this job status (any case,
                                      a label or a code: "Failed", "no backup updates", 2)
      --page-size N                   v3 page size, 1 to 100 (default 100)
      --parallel N                    v3 pages fetched at once, 1 to 64 (default 8)
      --v3 get|batch                  the v3 call: GET (default) or POST .../customers/batch
      --progress                      report progress on stderr (default: only on a terminal)
  organization TENANT_ID...   Partner Center organizations (not available yet)
  report                      customers joined with their organizations (not available yet)
  sandbox [ARGS...]           run the local sandbox service (see its --help)

Options:
  --help       this text
  --version    the version

Environment (credentials never go on the command line):
  PARTNERCUSTOMERS_CLIENT_ID        the app's client id
  PARTNERCUSTOMERS_CLIENT_SECRET    the app's client secret
  PARTNERCUSTOMERS_ACCESS_TOKEN     or, instead of those two, a bearer token used as it is
  PARTNERCUSTOMERS_ENVIRONMENT      commercial (default), gov, aos2 or fedramp
  PARTNERCUSTOMERS_BASE_URL         API base URL (overrides the environment's)
  PARTNERCUSTOMERS_TOKEN_URL        token URL (overrides the environment's)
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

-- One line, whatever the error holds.
local function line(e)
  return (tostring(e):gsub("[\r\n]+", " "))
end

local FLAGS = {
  ["--source"] = true, ["--format"] = true, ["--status"] = true, ["--page-size"] = true,
  ["--parallel"] = true, ["--v3"] = true, ["--progress"] = false,
}

-- Parses "--name value", "--name=value" and bare flags; FLAGS[name] says if it takes a value.
local function parse(args, first)
  local o, i = {}, first
  while i <= #args do
    local a = args[i]
    local name, value = a:match("^(%-%-[^=]+)=(.*)$")
    name = name or a
    local takes = FLAGS[name]
    if takes == nil then usage("unknown argument '%s'", a) end
    if takes and value == nil then
      i = i + 1
      value = args[i]
      if value == nil then usage("%s needs a value", name) end
    elseif not takes and value ~= nil then
      usage("%s takes no value", name)
    end
    o[name] = value or true
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

-- pc.avepoint options from the environment.
local function client_options(env)
  local o = {}
  for var, option in pairs(ENV_OPTIONS) do o[option] = env_value(env, var) end
  for _, option in ipairs { "timeout", "max_retries" } do
    if o[option] then
      o[option] = tonumber(o[option]) or usage("%s must be a number", OPTION_ENV[option])
    end
  end
  local id = env_value(env, "PARTNERCUSTOMERS_CLIENT_ID")
  local secret = env_value(env, "PARTNERCUSTOMERS_CLIENT_SECRET")
  local token = env_value(env, "PARTNERCUSTOMERS_ACCESS_TOKEN")
  if token and (id or secret) then
    usage("set either PARTNERCUSTOMERS_ACCESS_TOKEN or PARTNERCUSTOMERS_CLIENT_ID and "
          .. "PARTNERCUSTOMERS_CLIENT_SECRET, not both")
  elseif token then
    o.access_token = token
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

-- pc.avepoint, with its misuse (a bad PARTNERCUSTOMERS_* value) told in the variables' names.
local function open_client(pc, env)
  local o = client_options(env)
  local ok, ave = pcall(pc.avepoint, o)
  if ok then return ave end
  local msg = type(ave) == "string"
    and (ave:match("^partnercustomers: (.*)$") or ave:match("^[^\n]-:%d+: partnercustomers: (.*)$"))
  if not msg then error(ave, 0) end -- not misuse: a bug, let it show
  usage("%s", (msg:gsub("^pc%.avepoint: ", ""):gsub("option '([%w_]+)'", OPTION_ENV)))
end

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

local function customers(args, env, out, err)
  local o = parse(args, 2)
  local source = choice(o, "--source", { "avepoint", "avepoint-v3", "partnercenter" }, "avepoint-v3")
  if source == "partnercenter" then
    usage("--source partnercenter is not available yet")
  end
  local fmt = choice(o, "--format", format.NAMES, "table")
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

  local pc = require "partnercustomers"
  local ave <close> = open_client(pc, env)
  local terminal = stderr_is_terminal(err)
  local progress <close> = (o["--progress"] or terminal) and progress_reporter(err, terminal) or nil

  local w = format.writer(fmt, out)
  local write_failed
  local function emit(list)
    for _, c in ipairs(list) do
      if not status or c.jobStatus == status then
        local ok, werr = w:add(c)
        if not ok then write_failed = werr; return false end
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
      local ok, page = pcall(pages)
      if not ok then
        if pc.is_error(page) then return nil, page end
        error(page, 0)
      end
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
  if not write_failed then
    local ok, werr = w:finish()
    if not ok then write_failed = werr end
  end
  if write_failed then
    return nil, "partnercustomers: cannot write the output: " .. tostring(write_failed)
  end
  return true
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
  elseif command == "organization" or command == "report" then
    usage("'%s' is not available yet", command)
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
    if getmetatable(e) == Usage then return e end
    return debug.traceback(e, 2) -- a bug: keep where it happened
  end, args, env, out, err)
  if ok then return rc end
  if getmetatable(rc) ~= Usage then error(rc, 0) end
  err:write("partnercustomers: ", line(rc.message), "\n",
            "Try 'partnercustomers --help'.\n")
  return MISUSE
end

M.HELP = HELP

return M
