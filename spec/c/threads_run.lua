-- What each thread of spec/c/threads.c runs in its own lua_State, both at once (`make tsan`), against
-- one sandbox (bin/with-sandbox, started with --count 30 --odata-page-size 10):
-- require the core (both threads load it at the same moment: luaopen's process-wide curl_global_init),
-- make a client with client credentials (one token fetch), then `n` requests: single pages, parallel
-- batches of four, and an error answer every 25th request. Called with (thread id, n); returns
-- "responses errors" counts, or raises when an answer is wrong.
local id, n = ...
local core = require "partnercustomers.core"
local base = assert(os.getenv "PARTNERCUSTOMERS_BASE_URL", "run under bin/with-sandbox")
local SCOPE = "partner.customers.read.all"
local client <close> = core.new {
  client_credentials = {
    token_url = assert(os.getenv "PARTNERCUSTOMERS_TOKEN_URL"),
    client_id = assert(os.getenv "PARTNERCUSTOMERS_CLIENT_ID"),
    client_secret = assert(os.getenv "PARTNERCUSTOMERS_CLIENT_SECRET"),
  },
  max_parallel = 4, timeout = 30,
  user_agent = "tsan-thread-" .. id,
}
local pages = { base .. "/partner/customers" }
local responses, errors, done = 0, 0, 0

local function page_ok(what, res, err)
  if not res then error(("thread %d: %s: %s"):format(id, what, tostring(err)), 0) end
  if res.status ~= 200 or #res.data.value ~= 10 then error(("thread %d: %s: wrong answer"):format(id, what), 0) end
  responses = responses + 1
  return res
end

-- the listing once, to learn the page links
while #pages < 3 do
  local res = page_ok("listing", client:request { url = pages[#pages], scope = SCOPE })
  pages[#pages + 1] = res.data["@odata.nextLink"]
  done = done + 1
end

while done < n do
  done = done + 1
  if done % 25 == 0 then
    local res, err = client:request { url = base .. "/partner/customers?$skiptoken=nope", scope = SCOPE }
    if res or err.status ~= 400 or err.code ~= "invalid_request" then
      error(("thread %d: the error answer: %s"):format(id, tostring(res or err)), 0)
    end
    errors = errors + 1
  elseif done % 10 == 0 then
    local batch = {}
    for i = 1, 4 do batch[i] = { url = pages[(done + i) % 3 + 1], scope = SCOPE } end
    for i, r in ipairs(client:batch(batch)) do page_ok("batch " .. i, r[1], r[2]) end
    done = done + 3
  else
    page_ok("page", client:request { url = pages[done % 3 + 1], scope = SCOPE })
  end
end
return ("%d %d"):format(responses, errors)
