-- The command line: main(args, env, out, err) -> exit code.
-- `env` maps variable names to values (bin/partnercustomers passes os.getenv behind a table), so
-- specs can run the CLI in-process with a fake environment and capture out and err. Arguments are
-- parsed by lua-argparse; its help and error paths never exit the process (help is answered
-- before parsing, errors come back from pparse).

local argparse = require "argparse"
local format = require "partnercustomers.format"
local job_status = require "partnercustomers.job_status"
local report = require "partnercustomers.report"
local util = require "partnercustomers.util"
local is_guid = require("partnercustomers.partnercenter").is_guid

local M = {}

local OK, FAILURE, MISUSE, INTERRUPTED = 0, 1, 2, 130

local function core() return require "partnercustomers.core" end

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

local ENVIRONMENT_HELP = [[
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

Exit status: 0 ok, 1 the service or the network failed, 2 misuse, 130 interrupted (Ctrl-C).
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

-- An integer option of the command line (its text), or nil when it was not given.
local function integer(value, flag, min, max)
  if value == nil then return nil end
  local n = util.to_integer(value)
  if not n or n < min or n > max then usage("%s must be an integer from %d to %d", flag, min, max) end
  return n
end

local env_value = util.env_value

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

-- Whether a URL's host is this machine (a sandbox, say).
local function loopback(url)
  local host = url and (url:match("^%a[%w+.-]*://%[([^%]]*)%]") or url:match("^%a[%w+.-]*://([^/:?#]*)"))
  if not host then return false end
  host = host:lower()
  return host == "localhost" or host == "::1" or host:match("^127%.%d+%.%d+%.%d+$") ~= nil
end

-- An API on this machine with the token URL left to the environment would send the credentials
-- to the production identity service: refused.
local function local_api_needs_token_url(base_url, token_url, base_var, token_var)
  if loopback(base_url) and not token_url then
    usage("%s points at this machine (a sandbox?) but %s is not set: the token request would go "
          .. "to the production identity service", base_var, token_var)
  end
end

-- pc.avepoint options from the environment.
local function client_options(env)
  local o = {}
  for var, option in pairs(ENV_OPTIONS) do o[option] = env_value(env, var) end
  if not env_value(env, "PARTNERCUSTOMERS_ACCESS_TOKEN") then
    local_api_needs_token_url(o.base_url, o.token_url, "PARTNERCUSTOMERS_BASE_URL",
                              "PARTNERCUSTOMERS_TOKEN_URL")
  end
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

-- `hooks`: on_event and sleep of the run (verbose lines, progress).
local function open_client(pc, env, parallel, hooks)
  local o = with_slots(client_options(env), parallel)
  o.on_event, o.sleep = hooks.on_event, hooks.sleep
  return construct(pc.avepoint, o, "pc.avepoint", OPTION_ENV)
end

------------------------------------------------------------------------------------------------
-- Partner Center

local REFRESH_VAR = "PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE"

local function read_refresh_token(path)
  local f, why = io.open(path, "r")
  if not f then usage("%s: cannot read the file: %s", REFRESH_VAR, why) end
  local text = f:read("a")
  f:close()
  local token = text and text:match("^%s*(%S+)%s*$")
  if not token then usage("%s: the file does not hold one refresh token", REFRESH_VAR) end
  return token
end

-- Replaces the refresh token file atomically (core.write_private_file: a new file of mode 0600 in
-- the same directory, renamed over the old one). Raises a Failure, never with the token in it.
local function save_refresh_token(path, token)
  local ok, why = core().write_private_file(path, token .. "\n")
  if not ok then
    fail("cannot save the new refresh token: %s (the one there may no longer be accepted)", tostring(why))
  end
end

-- pc.partnercenter options from the environment.
local function pc_client_options(env)
  local o = {}
  for var, option in pairs(PC_ENV_OPTIONS) do o[option] = env_value(env, var) end
  if o.tenant and not env_value(env, "PARTNERCUSTOMERS_PC_ACCESS_TOKEN") then -- (no tenant: misuse of its own)
    local_api_needs_token_url(o.base_url, o.token_url, "PARTNERCUSTOMERS_PC_BASE_URL",
                              "PARTNERCUSTOMERS_PC_TOKEN_URL")
  end
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

local function open_pc_client(pc, env, parallel, hooks)
  local o = with_slots(pc_client_options(env), parallel)
  o.on_event, o.sleep = hooks.on_event, hooks.sleep
  return construct(pc.partnercenter, o, "pc.partnercenter", PC_OPTION_ENV)
end

------------------------------------------------------------------------------------------------
-- The status line on stderr: progress, throttle waits and --verbose lines

-- Seconds as people read them: "12 s", "3 min", "2 h 5 min".
local function duration(s)
  s = math.max(0, math.ceil(s))
  if s < 90 then return ("%d s"):format(s) end
  if s < 5400 then return ("%d min"):format((s + 30) // 60) end
  return ("%d h %d min"):format(s // 3600, (s % 3600 + 30) // 60)
end

-- `terminal`: redrawn in place (rate, time left, throttle waits); otherwise, with --progress, one
-- line per step. Without `progress`, only the --verbose lines (`verbose`). Rows written to a
-- terminal stdout go through clear() first, so that no row starts inside the status line.
local function status_line(err, o)
  local s = { shown = false }
  local start, done, total, unit, waiting_until = core().now(), 0, nil, nil, nil

  local function text()
    local t = { total and ("%d of %d %s"):format(done, total, unit) or ("%d %s"):format(done, unit) }
    local now = core().now()
    if waiting_until and waiting_until > now then
      t[#t + 1] = "throttled, waiting " .. duration(waiting_until - now)
    elseif now - start >= 1 and done > 0 then
      local rate = done / (now - start)
      t[#t + 1] = ("%.1f/s"):format(rate)
      if total and total > done then t[#t + 1] = "about " .. duration((total - done) / rate) .. " left" end
    end
    return "partnercustomers: " .. table.concat(t, ", ")
  end

  local function draw()
    if not o.progress or not unit then return end
    if o.terminal then
      err:write("\r", text(), "\27[K")
      s.shown = true
    else
      err:write(text(), "\n")
    end
  end

  function s.clear()
    if s.shown then
      err:write("\r\27[K")
      s.shown = false
    end
  end

  -- done out of total (nil: unknown) units ("customers", "tenants").
  function s.progress(d, t, u)
    if u ~= unit then start = core().now() end
    done, total, unit = d, t, u
    draw()
  end

  function s.note(msg)
    s.clear()
    err:write("partnercustomers: ", msg, "\n")
    if o.terminal and unit and o.progress then draw() end
  end

  -- A Retry-After pause (or a back-off) of `wait` seconds starts now.
  function s.throttled(wait)
    waiting_until = core().now() + wait
    if o.terminal then draw() end
  end

  -- The client's sleep: in slices, the countdown redrawn each second (Ctrl-C is seen in a slice).
  function s.sleep(seconds)
    local until_ = core().now() + seconds
    local next_draw = 0
    while true do
      local left = until_ - core().now()
      if left <= 0 then break end
      if o.terminal and core().now() >= next_draw then
        draw()
        next_draw = core().now() + 1
      end
      core().sleep(math.min(left, 0.1))
    end
  end

  setmetatable(s, { __close = function(_, e)
    if s.shown then err:write(e and "\r\27[K" or "\n") end
    s.shown = false
  end })
  return s
end

-- One --verbose line per event of the core (never a secret: the core redacts its events).
local function event_line(ev)
  local t = ev.type
  if t == "request" then
    local what = ev.status and tostring(ev.status) or (ev.error or "no answer")
    return ("%s %s -> %s in %.2f s%s"):format(ev.method, ev.url, what, ev.elapsed or 0,
                                              (ev.attempt or 1) > 1 and (", attempt " .. ev.attempt) or "")
  elseif t == "retry" then
    return ("retry %s %s in %.1f s (attempt %d: %s)"):format(ev.method, ev.url, ev.wait or 0,
                                                             ev.attempt or 0, ev.status or ev.reason or "?")
  elseif t == "token" then
    local life = ev.expires_in and (", valid %s"):format(duration(ev.expires_in)) or ""
    return ("token for %s (%s)%s"):format(ev.scope, ev.source or "?", life)
  elseif t == "pace" then
    local rate = ev.rate and (", %.1f requests/s"):format(ev.rate) or ""
    return ("pacing %s: %d at once%s (%s)"):format(ev.origin, ev.window, rate, ev.reason)
  elseif t == "poll" then
    return ("sign-in: next poll in %s (%s)"):format(duration(ev.wait or 0), ev.reason or "?")
  end
end

-- The hooks a command gives its clients: on_event (verbose lines, throttle waits, page counts
-- for progress with `unit`) and, on a terminal with progress, a sleep that counts down.
local function hooks_for(status, o, unit)
  local done = 0
  local h = {}
  function h.on_event(ev)
    if o.verbose then
      local l = event_line(ev)
      if l then status.note(l) end
    end
    if ev.type == "retry" and (ev.status == 429 or ev.status == 503) then
      status.throttled(ev.wait or 0)
    elseif ev.type == "page" and unit then
      done = done + (ev.count or 0)
      status.progress(done, ev.total_count, unit)
    end
  end
  if o.progress and o.terminal then h.sleep = status.sleep end
  return h
end

------------------------------------------------------------------------------------------------
-- Output

-- A writer that remembers its first write error; rows added after it are dropped. Rows bound for
-- a terminal stdout clear the status line first.
local function output(fmt, out, layout, o, status)
  local dest = out
  if o.stdout_terminal then
    dest = { write = function(_, ...)
      status.clear()
      return out:write(...)
    end }
  end
  local w = format.writer(fmt, dest, layout, { fields = o.fields, bom = o.bom, width = o.width })
  local ow = {}
  function ow.add(row)
    if ow.failed then return false end
    local ok, werr = w:add(row)
    if not ok then ow.failed = werr end
    return ok
  end
  function ow.finish()
    if not ow.failed then
      local ok, werr = w:finish()
      if not ok then ow.failed = werr end
    end
    if ow.failed then
      return nil, "partnercustomers: cannot write the output: " .. tostring(ow.failed)
    end
    return true
  end
  return ow
end

-- Calls an iterator of the library: its value, or nil and the error object it raised.
local function step(pc, it)
  local ok, v = pcall(it)
  if ok then return v end
  if pc.is_error(v) then return nil, v end
  error(v, 0) -- a bug, Ctrl-C, or a Failure from a hook: let it through
end

-- A failure of the service after some rows: the output is ended properly (a JSON array closed),
-- except a table, which prints nothing of a listing that failed.
local function failed_midway(w, fmt, e)
  if fmt ~= "table" then w.finish() end
  return nil, e
end

------------------------------------------------------------------------------------------------
-- Selection: --customer-id, --domain, --name (and --status for AvePoint)

local function lower(v) return type(v) == "string" and v:lower() or nil end

-- A predicate over rows, or nil when no selection flag was given. `get` gives a row's id, its
-- domains (an array) and its name.
local function selector(o, get)
  local ids, domain, name = nil, lower(o.domain), lower(o.name)
  if o.customer_id and #o.customer_id > 0 then
    ids = {}
    for _, id in ipairs(o.customer_id) do ids[id:lower()] = true end
  end
  if not (ids or domain or name) then return nil end
  return function(row)
    local id, domains, n = get(row)
    if ids and not ids[lower(id ~= nil and tostring(id) or nil) or ""] then return false end
    if name and not (lower(n) or ""):find(name, 1, true) then return false end
    if domain then
      for _, d in ipairs(domains) do
        if lower(d) == domain then return true end
      end
      return false
    end
    return true
  end
end

-- AvePoint: the owner's mail domain and the tenants' names are its domains.
local function avepoint_fields(c)
  local domains = { type(c.ownerEmail) == "string" and c.ownerEmail:match("@([^@]+)$") or nil }
  for _, t in ipairs(c.tenants or {}) do
    if type(t.name) == "string" then domains[#domains + 1] = t.name end
  end
  return c.id, domains, c.organization
end

local function pc_fields(c)
  local p = type(c.companyProfile) == "table" and c.companyProfile or {}
  return c.id, { p.domain }, p.companyName
end

------------------------------------------------------------------------------------------------
-- Commands

local function pc_customers(pc, o, env, out, err, status)
  for _, flag in ipairs { "status", "parallel", "v3" } do
    if o[flag] then usage("--%s applies to the AvePoint sources only", flag) end
  end
  local page_size = integer(o.page_size, "--page-size", 1, 500)
  local keep = selector(o, pc_fields)
  local mpc <close> = open_pc_client(pc, env, nil, hooks_for(status, o, "customers"))
  local w = output(o.format, out, "pc_customers", o, status)
  local it = mpc:each_customer { page_size = page_size }
  while true do
    local c, e = step(pc, it)
    if e then return failed_midway(w, o.format, e) end
    if c == nil then break end
    if (not keep or keep(c)) and not w.add(c) then break end
  end
  return w.finish()
end

local function customers(o, env, out, err, status)
  local pc = require "partnercustomers"
  if o.source == "partnercenter" then return pc_customers(pc, o, env, out, err, status) end
  local want
  if o.status then
    want = job_status.name(o.status) or usage("--status: unknown job status '%s'", o.status)
  end
  local page_size = integer(o.page_size, "--page-size", 1, 100)
  local parallel = integer(o.parallel, "--parallel", 1, 64)
  local v3 = o.v3
  if o.source == "avepoint" and (page_size or parallel or v3) then
    usage("--page-size, --parallel and --v3 apply to --source avepoint-v3 only")
  end
  local keep = selector(o, avepoint_fields)

  local ave <close> = open_client(pc, env, parallel, hooks_for(status, o, "customers"))
  local w = output(o.format, out, nil, o, status)
  local function emit(list)
    for _, c in ipairs(list) do
      if (not want or c.jobStatus == want) and (not keep or keep(c)) then
        if not w.add(c) then return false end
      end
    end
    return true
  end

  if o.source == "avepoint" then
    local list, e = ave:customers()
    if not list then return nil, e end
    emit(list)
  elseif format.STREAMING[o.format] and not parallel then
    -- page by page: a long listing starts at once and is never held whole
    local pages = ave:pages { page_size = page_size, v3 = v3 }
    while true do
      local page, e = step(pc, pages)
      if e then return failed_midway(w, o.format, e) end
      if page == nil or not emit(page.customers) then break end
    end
  else
    local list, e = ave:all_customers { page_size = page_size, parallel = parallel, v3 = v3 }
    if not list then return nil, e end
    emit(list)
  end
  return w.finish()
end

-- `partnercustomers organization TENANT_ID...`: prints every organization found, then a line on
-- stderr for every lookup that failed (exit 1).
local function organization(o, env, out, err, status)
  local parallel = integer(o.parallel, "--parallel", 1, 64)
  local ids, seen = {}, {}
  for _, id in ipairs(o.tenant_id) do
    if not is_guid(id) then usage("'%s' is not a customer tenant id (a GUID)", id) end
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
  end

  local pc = require "partnercustomers"
  local mpc <close> = open_pc_client(pc, env, parallel, hooks_for(status, o))
  local results, errors = mpc:organizations(ids, { parallel = parallel,
    progress = o.progress and function(done, total) status.progress(done, total, "tenants") end or nil })
  if next(results) ~= nil or next(errors) == nil then -- nothing at all when every lookup failed
    local w = output(o.format, out, "organizations", o, status)
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
      status.note(werr:gsub("^partnercustomers: ", ""))
      return FAILURE
    end
  end
  local failed = false
  for _, id in ipairs(ids) do
    if errors[id] then
      failed = true
      status.note("tenant " .. id .. ": " .. line(errors[id]):gsub("^partnercustomers: ", ""))
    end
  end
  return failed and FAILURE or OK
end

-- `partnercustomers report`: the rows of report.lua. Lookups that failed for the tenant itself
-- (403, 404) are only named in their rows; any other failed lookup also makes the exit status 1.
local function report_command(o, env, out, err, status)
  local page_size = integer(o.page_size, "--page-size", 1, 100)
  local parallel = integer(o.parallel, "--parallel", 1, 64)

  local pc = require "partnercustomers"
  local ave <close> = open_client(pc, env, parallel, hooks_for(status, o, "customers"))
  local mpc <close> = open_pc_client(pc, env, parallel, hooks_for(status, o))
  local rows, e = report.rows(ave, mpc, { page_size = page_size, parallel = parallel,
    progress = o.progress and function(done, total) status.progress(done, total, "tenants") end or nil })
  if not rows then
    status.note(line(e):gsub("^partnercustomers: ", ""))
    return FAILURE
  end
  local w = output(o.format, out, "report", o, status)
  for _, row in ipairs(rows) do
    if not w.add(row) then break end
  end
  local ok, werr = w.finish()
  if not ok then
    status.note(werr:gsub("^partnercustomers: ", ""))
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
  status.note(("%d Partner Center lookup%s failed: "):format(failed, failed == 1 and "" or "s")
              .. line(first):gsub("^partnercustomers: ", ""))
  return FAILURE
end

-- The environment that points the command line at a sandbox listening on `url`.
local function sandbox_environment(url, cfg)
  local token_pc = ("%s/%s/oauth2/v2.0/token"):format(url, cfg.pc_tenant)
  local lines = {
    "# point partnercustomers at this sandbox (a sandbox's secret is no secret):",
    "export PARTNERCUSTOMERS_CLIENT_ID=" .. cfg.client_id,
    "export PARTNERCUSTOMERS_CLIENT_SECRET=" .. cfg.client_secret,
    "export PARTNERCUSTOMERS_BASE_URL=" .. url,
    "export PARTNERCUSTOMERS_TOKEN_URL=" .. url .. "/connect/token",
    "export PARTNERCUSTOMERS_PC_TENANT=" .. cfg.pc_tenant,
    "export PARTNERCUSTOMERS_PC_CLIENT_ID=" .. cfg.client_id,
    "export PARTNERCUSTOMERS_PC_CLIENT_SECRET=" .. cfg.client_secret,
    "export PARTNERCUSTOMERS_PC_BASE_URL=" .. url,
    "export PARTNERCUSTOMERS_PC_TOKEN_URL=" .. token_pc,
  }
  if cfg.client_cert then
    lines[#lines + 1] = "# the token endpoints check client assertions: set PARTNERCUSTOMERS_CERT_KEY_FILE"
      .. " and PARTNERCUSTOMERS_CERT_FILE (and _PC_) to the key and the certificate given to --client-cert"
  end
  return table.concat(lines, "\n") .. "\n"
end

-- `partnercustomers sandbox`: its options, --help included, are its own. Started by hand (stdout
-- a terminal), it prints, once it listens, the environment that points the command line at it;
-- to a pipe or a file it prints its URL alone, and never its secret.
local function sandbox(args, out)
  -- lua-http may be installed for 5.1 only (Debian's lua-http); it is pure Lua
  if not package.searchpath("http.server", package.path) then
    package.path = package.path .. ";/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
  end
  local rc = require("partnercustomers.sandbox").main(table.move(args, 2, #args, 1, {}), {
    on_listen = out == io.stdout and core().isatty(1)
      and function(url, cfg) out:write(sandbox_environment(url, cfg)) end or nil,
  })
  if math.type(rc) == "integer" then return rc end
  return (rc == false) and FAILURE or OK
end

------------------------------------------------------------------------------------------------
-- Arguments

local EXAMPLES = {
  customers = [[
Examples:
  partnercustomers customers
  partnercustomers customers --format csv --bom > customers.csv
  partnercustomers customers --status failed --fields id,organization,ownerEmail
  partnercustomers customers --name contoso --format json
  partnercustomers customers --source partnercenter --domain contoso.onmicrosoft.com]],
  organization = [[
Exit status 1 when any lookup failed, after printing the others.

Examples:
  partnercustomers organization 7c1f2a9e-0000-4000-8000-000000000001
  partnercustomers organization --format csv $(cat tenant-ids.txt)]],
  report = [[
A lookup that failed for the tenant itself is named in the failure column ("auth 403",
"http 404"); exit status 1 when a lookup failed for another reason.

Examples:
  partnercustomers report
  partnercustomers report --format csv --bom > report.csv
  partnercustomers report --parallel 16 --verbose]],
  login = (require("partnercustomers.login_cmd").HELP:match("\n(Environment:.*)$")),
  completion = [[
Examples:
  partnercustomers completion bash > ~/.local/share/bash-completion/completions/partnercustomers
  source <(partnercustomers completion bash)]],
}

-- The options every listing command has.
local function output_options(cmd)
  cmd:option("--format", "Output format."):choices(format.NAMES):default("table")
  cmd:option("--fields", "Columns (table, csv) or keys (json, ndjson) to print, comma-separated, "
             .. "in this order; --fields help lists them."):argname("<list>")
  cmd:flag("--bom", "Start CSV output with a UTF-8 byte order mark (for Excel).")
  cmd:flag("--progress", "Report progress on stderr (default: only when stderr is a terminal).")
  cmd:flag("--no-progress", "No progress, even on a terminal.")
  cmd:flag("-v --verbose", "One line on stderr per request, retry, token fetch and pacing change.")
end

local function command(p, commands, name, summary)
  local cmd = p:command(name, summary):add_help(false)
  commands[name] = cmd
  cmd:flag("-h --help", "Show this help and exit.")
  if EXAMPLES[name] then cmd:epilog(EXAMPLES[name]) end
  return cmd
end

-- The parser, and its command parsers by name.
function M.parser()
  local commands = {}
  local p = argparse("partnercustomers",
                     "Customer inventory from AvePoint Elements for Partners and Microsoft Partner Center.")
    :add_help(false):command_target("command"):epilog(ENVIRONMENT_HELP):help_max_width(100)
  p:flag("-h --help", "Show this help and exit.")
  p:flag("--version", "Print the version and exit.")

  local c = command(p, commands, "customers", "List the customers.")
  c:option("--source", "Which listing: AvePoint's /partner/customers, its v3 general customers, "
           .. "or Partner Center's customers."):choices { "avepoint", "avepoint-v3", "partnercenter" }
    :default("avepoint-v3")
  output_options(c)
  c:option("--status", 'Only customers with this job status (any case, a label or a code: '
           .. '"Failed", "no backup updates", 2). AvePoint only.'):argname("<label>")
  c:option("--customer-id", "Only this customer (repeatable)."):count("*"):argname("<id>")
  c:option("--domain", "Only customers with this domain (AvePoint: the owner's mail domain or a "
           .. "tenant name; Partner Center: the company's domain), any case."):argname("<domain>")
  c:option("--name", "Only customers whose name contains this text, any case."):argname("<text>")
  c:option("--page-size", "Page size: v3 1 to 100 (default 100), partnercenter 1 to 500 (default 500)."):argname("<n>")
  c:option("--parallel", "v3 pages fetched at once, 1 to 64 (default 8); reads every page first."):argname("<n>")
  c:option("--v3", "The v3 call: GET (default) or POST .../customers/batch."):choices { "get", "batch" }

  local o = command(p, commands, "organization", "The Partner Center organization of each customer tenant.")
  o:argument("TENANT_ID", "Customer tenant ids (GUIDs)."):args("+"):target("tenant_id")
  output_options(o)
  o:option("--parallel", "Lookups at once, 1 to 64 (default 8)."):argname("<n>")

  local r = command(p, commands, "report", "Every AvePoint v3 customer and each of its tenants, joined with "
                    .. "the tenant's Partner Center organization.")
  output_options(r)
  r:option("--page-size", "v3 page size, 1 to 100 (default 100)."):argname("<n>")
  r:option("--parallel", "Partner Center lookups at once, 1 to 64 (default 8)."):argname("<n>")

  command(p, commands, "login", "Sign a user in to Partner Center with a device code; the refresh "
          .. "token goes to PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE.")
    :flag("-v --verbose", "One line on stderr per request and poll.")
  command(p, commands, "sandbox", "Run the local sandbox service (see partnercustomers sandbox --help).")
    :handle_options(false):argument("args", "The sandbox's own arguments."):args("*")
  command(p, commands, "completion", "Print a shell completion script.")
    :argument("shell", "The shell."):choices { "bash", "zsh", "fish" }
  return p, commands
end

-- --help anywhere (before "--"): the help of the command named first, or the general one.
local function help_request(p, commands, args)
  local asked, cmd = false, nil
  for _, a in ipairs(args) do
    if a == "--" then break end
    if a == "-h" or a == "--help" then asked = true end
    cmd = cmd or commands[a]
  end
  if not asked then return nil end
  return (cmd or p):get_help()
end

local function fields_of(text)
  if text == nil then return nil end
  local list = {}
  for f in text:gmatch("[^,%s]+") do list[#list + 1] = f end
  if #list == 0 then usage("--fields needs at least one field name") end
  return list
end

local LAYOUT_OF = { customers = "customers", organization = "organizations", report = "report" }

-- Checks --fields against the command's layout (before any request).
local function check_fields(o, command_name)
  if not o.fields then return end
  local layout = LAYOUT_OF[command_name]
  if command_name == "customers" and o.source == "partnercenter" then layout = "pc_customers" end
  local known = format.fields(o.format, layout)
  if not known then return end -- json, ndjson: any key
  local set = {}
  for _, f in ipairs(known) do set[f] = true end
  for _, f in ipairs(o.fields) do
    if not set[f] then
      usage("--fields: unknown field '%s' (%s has %s)", f, o.format, table.concat(known, ", "))
    end
  end
end

-- The device login: its body lives beside pc.device_login; its exit code is the command's.
local function login(o, env, out, err, status)
  local hooks = o.verbose and { on_event = function(ev)
    local l = event_line(ev)
    if l then status.note(l) end
  end } or {}
  return require("partnercustomers.login_cmd").run(env, out, err, hooks)
end

local COMMANDS = { customers = customers, organization = organization, report = report_command,
                   login = login }

local function run(args, env, out, err)
  if args[1] == "sandbox" then return sandbox(args, out) end
  local p, commands = M.parser()
  local help = help_request(p, commands, args)
  if help then out:write(help, "\n"); return OK end
  for _, a in ipairs(args) do
    if a == "--" then break end
    if a == "--version" then
      out:write(require("partnercustomers")._VERSION, "\n")
      return OK
    end
  end
  local ok, o = p:pparse(args)
  if not ok then usage("%s", o) end
  if o.command == "completion" then
    local script = ({ bash = p.get_bash_complete, zsh = p.get_zsh_complete,
                      fish = p.get_fish_complete })[o.shell](p)
    out:write(script)
    return OK
  end
  if o.fields == "help" then
    local layout = LAYOUT_OF[o.command]
    if o.command == "customers" and o.source == "partnercenter" then layout = "pc_customers" end
    out:write(table.concat(format.fields(o.format, layout) or { "(any key of the objects)" }, "\n"), "\n")
    return OK
  end
  o.fields = fields_of(o.fields)
  check_fields(o, o.command)

  local terminal = err == io.stderr and core().isatty(2)
  o.stdout_terminal = out == io.stdout and core().isatty(1)
  o.width = o.stdout_terminal and core().terminal_columns(1) or nil
  o.terminal = terminal
  o.progress = not o.no_progress and (o.progress or terminal)
  local status <close> = status_line(err, o)
  local rc, e = COMMANDS[o.command](o, env, out, err, status)
  if math.type(rc) == "integer" then return rc end
  if rc then return OK end
  status.note(line(e):gsub("^partnercustomers: ", ""))
  return FAILURE
end

-- Lua's SIGINT hook (lua5.4) raises "interrupted!" in whatever Lua code runs next; the core's waits
-- call into Lua every 100 ms.
local function interrupted(e)
  return type(e) == "string" and e:find("interrupted!$") ~= nil
end

local Interrupted = {}

function M.main(args, env, out, err)
  args, env = args or {}, env or {}
  out, err = out or io.stdout, err or io.stderr
  local ok, rc = xpcall(run, function(e)
    local mt = getmetatable(e)
    if mt == Usage or mt == Failure then return e end
    if interrupted(e) then return Interrupted end
    return debug.traceback(e, 2) -- a bug: keep where it happened
  end, args, env, out, err)
  if ok then
    -- buffered output that cannot be written (a full disk, a closed pipe) is a failure too
    if type(out) == "userdata" and io.type(out) == "file" then
      local flushed, why = out:flush()
      if not flushed then
        err:write("partnercustomers: cannot write the output: ", tostring(why), "\n")
        return FAILURE
      end
    end
    return rc
  end
  if rc == Interrupted then
    err:write("partnercustomers: interrupted\n")
    return INTERRUPTED
  end
  local mt = getmetatable(rc)
  if mt == Failure then
    err:write("partnercustomers: ", line(rc.message), "\n")
    return FAILURE
  end
  if mt ~= Usage then error(rc, 0) end
  local cmd = args[1]
  local hint = (cmd == "customers" or cmd == "organization" or cmd == "report" or cmd == "completion"
                or cmd == "login")
    and ("partnercustomers " .. cmd .. " --help") or "partnercustomers --help"
  err:write("partnercustomers: ", rc.message, "\n", "Try '", hint, "'.\n")
  return MISUSE
end

return M
