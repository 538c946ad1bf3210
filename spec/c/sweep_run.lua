-- The run that spec/c/alloc_sweep.c sweeps: certificate credentials, a token fetch, a paged listing
-- and an error answer, against a sandbox started with a client certificate (bin/with-sandbox with
-- WITH_SANDBOX_AUTH=certificate: the key and certificate are made there, at run time, never stored).
--
-- Loading this file allocates nothing under the limit; it returns the stages the host runs in
-- order, each under lua_pcall, while the host refuses the Nth allocation (see alloc_sweep.c):
--   load      require the core (luaopen: curl_global_init, error metatable)
--   new       core.new with certificate credentials (the key and certificate are loaded and checked)
--   requests  a fault rule put with a PUT (the first page answers 503, Retry-After: 0), a token fetch
--             (a signed client assertion), three OData pages (the first one retried), the same
--             pages again as one parallel batch, then as a batch stepped across Lua calls
--             (client:start, as in a host's event loop), and an error answer (400, OAuth-shaped body)
--   check     run with the limit off, after a failure: the client (made again if it never was)
--             must answer one more request; then the sandbox's fault rules and log are cleared
-- A stage returns true, or a string that says which request got an error object instead.
local env = {
  base = assert(os.getenv "PARTNERCUSTOMERS_BASE_URL", "PARTNERCUSTOMERS_BASE_URL: run under bin/with-sandbox"),
  token_url = assert(os.getenv "PARTNERCUSTOMERS_TOKEN_URL"),
  client_id = assert(os.getenv "PARTNERCUSTOMERS_CLIENT_ID"),
  key = assert(os.getenv "PARTNERCUSTOMERS_CERT_KEY_FILE", "run with WITH_SANDBOX_AUTH=certificate"),
  cert = assert(os.getenv "PARTNERCUSTOMERS_CERT_FILE"),
}
local SCOPE = "partner.customers.read.all"
local PAGES, ITEMS = 3, 30 -- the sandbox runs with --count 30 --odata-page-size 10

-- the Lua layer's util.lua, for its stepping driver only: loaded with this file, before any limit
-- (it loads the core only when one of its functions needs it)
package.path = "./lua/?.lua"
local util = require "partnercustomers.util"
local core, client
local events = 0
local FAULTS = '[{"type": "status", "status": 503, "times": 1, "path": "^/partner/customers$", "retry_after": 0}]'

local function new_client()
  return core.new {
    client_credentials = {
      token_url = env.token_url, client_id = env.client_id,
      certificate = { key = env.key, cert = env.cert },
    },
    max_retries = 2, backoff_base = 0.001, backoff_max = 0.002, timeout = 20,
    on_event = function() events = events + 1 end,
  }
end

local function got(what, res, err)
  if res then return nil end
  return what .. ": error object (" .. tostring(err and err.kind) .. ")"
end

-- The same batch stepped as a host's event loop drives it, by the Lua layer's own driver
-- (util.batch: client:start, the queued hook calls made between steps, b:abort on an error),
-- each wait a short sleep instead of a poll of the descriptor.
local function stepped(reqs)
  local host = { _client = client, _wait = function(w) core.sleep(math.min(w:timeout(), 0.002)) end }
  return util.batch(host, reqs)
end

local stages = {}

function stages.load()
  core = require "partnercustomers.core"
  return true
end

function stages.new()
  client = new_client()
  return true
end

function stages.requests()
  local res, err = client:request { method = "PUT", url = env.base .. "/_sandbox/faults", body = FAULTS }
  local e = got("fault rules", res, err)
  if e then return e end
  local url, urls, items = env.base .. "/partner/customers", {}, 0
  while url do -- the first request fetches the token, then gets a 503 and is retried
    res, err = client:request { url = url, scope = SCOPE }
    e = got("page " .. (#urls + 1), res, err)
    if e then return e end
    if #urls == 0 and res.attempts ~= 2 then return "page 1: not retried after the 503" end
    urls[#urls + 1], items = { url = url, scope = SCOPE }, items + #res.data.value
    url = res.data["@odata.nextLink"]
  end
  if #urls ~= PAGES or items ~= ITEMS or res.attempts ~= 1 then
    return ("listing: %d pages, %d items (expected %d, %d)"):format(#urls, items, PAGES, ITEMS)
  end
  for _, run in ipairs { "batch", "stepped" } do
    local results = run == "batch" and client:batch(urls) or stepped(urls)
    for i = 1, PAGES do
      e = got(run .. " " .. i, results[i][1], results[i][2])
      if e then return e end
      if #results[i][1].data.value ~= ITEMS // PAGES then return run .. " " .. i .. ": wrong answer" end
    end
  end
  res, err = client:request { url = env.base .. "/partner/customers?$skiptoken=bad", scope = SCOPE }
  if res then return "error answer: got a response" end
  if not (core.is_error(err) and err.status == 400 and err.code == "invalid_request") then
    return "error answer: " .. tostring(err.kind) .. " " .. tostring(err.status) .. " " .. tostring(err.code)
  end
  local text = tostring(err)
  if not text:find("HTTP 400", 1, true) and not text:find("400", 1, true) then return "error answer: " .. text end
  return true
end

-- With the limit off: whatever stage failed, the module loads, a client can be made, and it answers.
function stages.check()
  if not core then stages.load() end
  if not client then stages.new() end
  local res, err = client:request { url = env.base .. "/partner/customers", scope = SCOPE }
  if not res then return "check request: " .. tostring(err) end
  if res.status ~= 200 or #res.data.value ~= ITEMS // PAGES then return "check request: wrong answer" end
  for _, path in ipairs { "/_sandbox/faults", "/_sandbox/log" } do
    res, err = client:request { method = path:find "faults" and "PUT" or "DELETE", url = env.base .. path,
                                body = path:find "faults" and "[]" or nil }
    if not res then return "clearing " .. path .. ": " .. tostring(err) end
  end
  client:close()
  return events > 0 or "no event seen"
end

return stages
