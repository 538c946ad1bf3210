-- The `partnercustomers login` command: a user signs in with a device code (pc.device_login) and
-- the refresh token goes to PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE (mode 600, replaced atomically),
-- where the Partner Center commands read it.
--
--   require("partnercustomers.login_cmd").run(env, out, err, hooks) -> exit code
--
-- `env` maps variable names to values; messages go to `err` (nothing to `out`); `hooks` (optional)
-- = {clock, sleep, on_code, on_event}, handed to pc.device_login (specs inject time with them).

local core = require "partnercustomers.core"
local device_login = require "partnercustomers.device_login"
local util = require "partnercustomers.util"

local M = {}

local OK, FAILURE, MISUSE = 0, 1, 2
local FILE_VAR = "PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE"

-- Environment variable -> pc.device_login option.
local ENV_OPTIONS = {
  PARTNERCUSTOMERS_PC_TENANT = "tenant",
  PARTNERCUSTOMERS_PC_CLIENT_ID = "client_id",
  PARTNERCUSTOMERS_PC_CLIENT_SECRET = "client_secret",
  PARTNERCUSTOMERS_PC_CLOUD = "cloud",
  PARTNERCUSTOMERS_PC_TOKEN_URL = "token_url",
  PARTNERCUSTOMERS_CA_FILE = "ca_file",
  PARTNERCUSTOMERS_PROXY = "proxy",
  PARTNERCUSTOMERS_TIMEOUT = "timeout",
  PARTNERCUSTOMERS_MAX_RETRIES = "max_retries",
}
local NUMBERS = { timeout = true, max_retries = true }
local OPTION_ENV = {}
for var, option in pairs(ENV_OPTIONS) do OPTION_ENV[option] = var end

M.HELP = [[
Usage: partnercustomers login

Signs a user in to Partner Center with a device code (OAuth 2.0 device authorization grant) and
writes the refresh token to PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE (mode 600), from where the
Partner Center commands use it. Open the page it shows, enter the code, and sign in with an
account of the partner tenant.

Environment:
  PARTNERCUSTOMERS_PC_CLIENT_ID          the app's client id (required)
  PARTNERCUSTOMERS_PC_TENANT             the partner tenant (required unless ..._PC_TOKEN_URL is set)
  PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE where the refresh token goes (required)
  PARTNERCUSTOMERS_PC_CLIENT_SECRET      only for an app that is not a public client
  PARTNERCUSTOMERS_PC_CLOUD, PARTNERCUSTOMERS_PC_TOKEN_URL, PARTNERCUSTOMERS_CA_FILE,
  PARTNERCUSTOMERS_PROXY, PARTNERCUSTOMERS_TIMEOUT, PARTNERCUSTOMERS_MAX_RETRIES

Example:
  PARTNERCUSTOMERS_PC_TENANT=contoso.onmicrosoft.com PARTNERCUSTOMERS_PC_CLIENT_ID=… \
  PARTNERCUSTOMERS_PC_REFRESH_TOKEN_FILE=~/.config/partnercustomers/refresh-token \
    partnercustomers login
]]

local function line(s)
  return (tostring(s):gsub("[\r\n]+", " "):gsub("^partnercustomers: ", ""))
end

local value = util.env_value

-- pc.device_login options from the environment; nil and a message when something is missing.
local function options(env)
  local o = {}
  for var, option in pairs(ENV_OPTIONS) do
    local v = value(env, var)
    if v ~= nil and NUMBERS[option] then
      v = tonumber(v)
      if not v then return nil, ("%s must be a number"):format(var) end
    end
    o[option] = v
  end
  if not o.client_id then return nil, "PARTNERCUSTOMERS_PC_CLIENT_ID is not set" end
  if not o.tenant and not o.token_url then
    return nil, "PARTNERCUSTOMERS_PC_TENANT is not set (nor PARTNERCUSTOMERS_PC_TOKEN_URL)"
  end
  return o
end

-- A misuse message of pc.device_login names options: name the variables instead.
local function misuse_message(e)
  return (line(e):gsub("^[^:]*:%d+: ", ""):gsub("^partnercustomers: ", "")
    :gsub("option '([%w_]+)'", function(option)
      return OPTION_ENV[option] or ("option '" .. option .. "'")
    end))
end

function M.run(env, out, err, hooks)
  env, err, hooks = env or {}, err or io.stderr, hooks or {}
  local file = value(env, FILE_VAR)
  local o, why = options(env)
  if o and not file then o, why = nil, FILE_VAR .. " is not set: it names the file the refresh token goes to" end
  if not o then
    err:write("partnercustomers: login: ", why, "\n")
    return MISUSE
  end
  o.clock, o.sleep, o.on_event = hooks.clock, hooks.sleep, hooks.on_event
  o.on_code = hooks.on_code or function(info)
    err:write(device_login.instructions(info), "\n")
  end
  local ok, tokens, failure = pcall(device_login.device_login, o)
  if not ok and tostring(tokens):find("partnercustomers: pc.device_login", 1, true) then
    err:write("partnercustomers: login: ", misuse_message(tokens), "\n") -- a bad value in the environment
    return MISUSE
  elseif not ok then
    error(tokens, 0) -- from a hook, or a bug
  end
  if not tokens then
    err:write("partnercustomers: login: sign-in failed: ", line(failure), "\n")
    return FAILURE
  end
  local saved, save_why = core.write_private_file(file, tokens.refresh_token .. "\n")
  if not saved then
    err:write("partnercustomers: login: signed in, but cannot save the refresh token: ",
              line(save_why), "; sign in again once the file can be written\n")
    return FAILURE
  end
  err:write(("Signed in. The refresh token is in %s (mode 600); the Partner Center commands read it from %s.\n")
    :format(file, FILE_VAR))
  return OK
end

return M
