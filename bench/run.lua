-- `make bench`: the v3 paging run against a local sandbox, measured three ways.
--   1. partnercustomers: one client, keep-alive, JSON decoded in the core (all_customers, each_customer)
--   2. by hand: one `curl` process per page plus cjson, as a shell script would do it
--   3. no reuse: a new core client per page (what a script that builds a client per call gets)
-- and the Lua heap of each_customer (one page at a time) against all_customers (everything held).
-- Everything talks to 127.0.0.1 only; the sandbox stops when the run ends.
local pc = require "partnercustomers"
local core = require "partnercustomers.core"
local cjson = require "cjson.safe"
local sandbox = require "spec.helpers.sandbox"

local COUNT = tonumber(os.getenv("BENCH_CUSTOMERS")) or 10000
local PAGE = 100
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 3

local sb = sandbox.start { count = COUNT, seed = 11, v3_status = "int" }
local token = sb:token("elements.customers.read.all")
local pages = math.ceil(COUNT / PAGE)

local function best_of(f)
  local best = math.huge
  for _ = 1, ROUNDS do
    collectgarbage()
    local t0 = core.now()
    f()
    best = math.min(best, core.now() - t0)
  end
  return best
end

local function client()
  return pc.avepoint { access_token = token, base_url = sb.url }
end

local results = {}
local function record(name, seconds, note)
  results[#results + 1] = { name = name, seconds = seconds, note = note or "" }
end

-- 1. the module
local ave = client()
record("partnercustomers all_customers", best_of(function()
  local all = assert(ave:all_customers { page_size = PAGE })
  assert(#all == COUNT)
end))
record("partnercustomers each_customer", best_of(function()
  local n = 0
  for _ in ave:each_customer { page_size = PAGE } do n = n + 1 end
  assert(n == COUNT)
end))

-- 2. by hand: curl per page, then cjson
record("curl process per page + cjson", best_of(function()
  local n = 0
  for i = 1, pages do
    local url = ("%s/partner/external/v3/general/customers?pageIndex=%d&pageSize=%d"):format(sb.url, i, PAGE)
    local p = assert(io.popen("env -u LD_PRELOAD curl -s --compressed -H 'Authorization: Bearer " .. token .. "' '" .. url .. "'"))
    local body = p:read("a")
    p:close()
    n = n + #assert(cjson.decode(body)).data
  end
  assert(n == COUNT)
end))

-- 3. a new client for every page
record("new client per page", best_of(function()
  local n = 0
  for i = 1, pages do
    local a = client()
    n = n + #assert(a:customer_page(i, PAGE)).customers
    a:close()
  end
  assert(n == COUNT)
end))

-- Lua heap: what each_customer keeps alive (sampled after a full collection at every page
-- boundary) against what all_customers holds; garbage not yet collected is not counted.
collectgarbage()
collectgarbage()
local base = collectgarbage("count")
local peak, n = 0, 0
for _ in ave:each_customer { page_size = PAGE } do
  n = n + 1
  if n % PAGE == 1 then
    collectgarbage()
    peak = math.max(peak, collectgarbage("count") - base)
  end
end
local each_kib = peak
collectgarbage()
base = collectgarbage("count")
local all = assert(ave:all_customers { page_size = PAGE })
collectgarbage()
local all_kib = collectgarbage("count") - base
assert(#all == COUNT)
ave:close()
sb:stop()

local out = {}
local function say(fmt, ...) out[#out + 1] = fmt:format(...) end
say("customers: %d, page size: %d (%d pages), best of %d rounds", COUNT, PAGE, pages, ROUNDS)
say("")
say("| run | seconds | pages/s | vs partnercustomers all_customers |")
say("| --- | ---: | ---: | ---: |")
local ref = results[1].seconds
for _, r in ipairs(results) do
  say("| %s | %.3f | %.0f | %.2fx |", r.name, r.seconds, pages / r.seconds, r.seconds / ref)
end
say("")
say("Lua heap kept alive: each_customer at most %.0f KiB; all_customers %.0f KiB (%.1fx)",
  each_kib, all_kib, all_kib / math.max(each_kib, 1))
print(table.concat(out, "\n"))

-- the targets this benchmark holds the module to
local curl_time = results[3].seconds
local ok = true
if not (ref < curl_time) then print("TARGET MISSED: all_customers must beat a curl process per page"); ok = false end
if not (each_kib * 4 < all_kib) then print("TARGET MISSED: each_customer must hold well under a quarter of all_customers"); ok = false end
os.exit(ok and 0 or 1)
