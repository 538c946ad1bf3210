-- One measured client of `make bench`, run by bench/run.lua in its own lua5.4 process (so that its
-- CPU time and peak RSS are its own): `lua5.4 bench/peer.lua MODE key=value...`.
-- It prints one line `RESULT key=value ...` on stdout; anything else is for humans.
-- Only the public Lua API is used (and `partnercustomers.core` for the HTTP/2 burst, where no
-- public method sends N requests to one origin at once).
--
-- Modes:
--   module      the module's all_customers{page_size, parallel} (client credentials), `rounds` times
--   loop        luasocket (socket.http + ltn12) + lua-cjson, page by page, as a user would write it
--   floor       lua-cjson decoding the page bodies in `file` (one per line), no transport
--   v3wall      all_customers{page_size, parallel}, wall time; `pages` expected
--   orgs        pc.partnercenter organizations(ids from /_bench/org-ids, {parallel}), max_parallel
--   each        each_customer{page_size}, counting
--   burst       core client:batch of `n` requests at once (max_parallel = n, ca_file)
--   curlpage    one `curl` process per page + cjson (the old by-hand comparison)
--   cqueues     `n` clients at once in one thread under cqueues (wait = cqueues.poll), each
--               all_customers{page_size, parallel}; wall time from before the first client is made
-- With `startup=1`, a mode loads and sets up everything it needs and stops before the work: its
-- CPU time is subtracted from the measured run's.

local MODE = arg[1]
local A = {}
for i = 2, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  assert(k, "bad argument " .. arg[i])
  A[k] = v
end
local function num(k, d) return tonumber(A[k]) or d end

local BASE = A.base
local SECRET = os.getenv("BENCH_SERVER_SECRET") or "bench-secret"
local TOKEN = os.getenv("BENCH_SERVER_TOKEN")
local STARTUP = A.startup == "1"
local PAGE = num("page_size", 100)

local function result(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = ("%s=%s"):format(k, tostring(t[k])) end
  io.stdout:write("RESULT ", table.concat(out, " "), "\n")
  io.stdout:flush()
end

-- wall clock from luasocket, not from the module under test
local now = require("socket").gettime

local modes = {}

function modes.module()
  local pc = require "partnercustomers"
  local ave = pc.avepoint {
    client_id = "bench", client_secret = SECRET,
    token_url = BASE .. "/connect/token", base_url = BASE,
    max_parallel = A.max_parallel and num("max_parallel"),
  }
  if STARTUP then ave:close(); return result { count = 0 } end
  local n = 0
  for _ = 1, num("rounds", 1) do
    local all = assert(ave:all_customers { page_size = PAGE, parallel = A.parallel and num("parallel") })
    n = n + #all
  end
  ave:close()
  result { count = n }
end

function modes.loop()
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local cjson = require "cjson"
  if STARTUP then return result { count = 0 } end

  -- the token, once (a user would keep it for its hour)
  local form = "grant_type=client_credentials&client_id=bench&client_secret=" .. SECRET
               .. "&scope=elements.customers.read.all"
  local chunks = {}
  local _, code = http.request {
    url = BASE .. "/connect/token", method = "POST", source = ltn12.source.string(form),
    headers = { ["content-type"] = "application/x-www-form-urlencoded", ["content-length"] = #form },
    sink = ltn12.sink.table(chunks),
  }
  assert(code == 200, "token: " .. tostring(code))
  local auth = "Bearer " .. cjson.decode(table.concat(chunks)).access_token

  local n = 0
  for _ = 1, num("rounds", 1) do
    local all, index = {}, 1
    while true do
      local body = {}
      local _, status = http.request {
        url = ("%s/partner/external/v3/general/customers?pageIndex=%d&pageSize=%d"):format(BASE, index, PAGE),
        headers = { authorization = auth, accept = "application/json" },
        sink = ltn12.sink.table(body),
      }
      assert(status == 200, "page " .. index .. ": " .. tostring(status))
      local page = cjson.decode(table.concat(body))
      for _, c in ipairs(page.data) do all[#all + 1] = c end
      if #page.data < PAGE or #all >= page.metadata.totalCount then break end
      index = index + 1
    end
    n = n + #all
  end
  result { count = n }
end

function modes.floor()
  local cjson = require "cjson"
  local bodies = {}
  for line in io.lines(A.file) do bodies[#bodies + 1] = line end
  if STARTUP then return result { count = 0 } end
  local n = 0
  for _ = 1, num("rounds", 1) do
    local all = {}
    for _, body in ipairs(bodies) do
      local page = cjson.decode(body)
      for _, c in ipairs(page.data) do all[#all + 1] = c end
    end
    n = n + #all
  end
  result { count = n }
end

function modes.v3wall()
  local pc = require "partnercustomers"
  local ave = pc.avepoint {
    client_id = "bench", client_secret = SECRET,
    token_url = BASE .. "/connect/token", base_url = BASE,
    max_parallel = A.max_parallel and num("max_parallel"),
  }
  local t0 = now()
  local all, err = ave:all_customers { page_size = PAGE, parallel = num("parallel", 8) }
  local wall = now() - t0
  ave:close()
  local got = all and #all or 0
  result { wall = ("%.4f"):format(wall), count = got,
           failed = all and 0 or 1, error = err and tostring(err.kind) or "none" }
end

function modes.cqueues()
  local pc = require "partnercustomers"
  local cqueues = require "cqueues"
  local n, cq = num("n", 1), cqueues.new()
  if STARTUP then return result { count = 0 } end
  local count, failed, err1 = 0, 0, "none"
  local t0 = now()
  for _ = 1, n do
    cq:wrap(function()
      local ave <close> = pc.avepoint {
        client_id = "bench", client_secret = SECRET, token_url = BASE .. "/connect/token",
        base_url = BASE, wait = cqueues.poll,
      }
      local all, err = ave:all_customers { page_size = PAGE, parallel = num("parallel", 8) }
      if all then count = count + #all else failed, err1 = failed + 1, tostring(err.kind) end
    end)
  end
  assert(cq:loop())
  result { wall = ("%.4f"):format(now() - t0), count = count, failed = failed, error = err1 }
end

function modes.orgs()
  local pc = require "partnercustomers"
  local cjson = require "cjson"
  local http = require "socket.http"
  local body = assert(http.request(BASE .. "/_bench/org-ids"))
  local ids = cjson.decode(body)
  local n = num("n", #ids)
  while #ids > n do ids[#ids] = nil end
  local mpc = pc.partnercenter {
    client_id = "bench", client_secret = SECRET,
    token_url = BASE .. "/bench-partner.onmicrosoft.com/oauth2/v2.0/token", base_url = BASE,
    max_parallel = A.max_parallel and num("max_parallel"),
  }
  local t0 = now()
  local results, errors = mpc:organizations(ids, { parallel = num("parallel", 8) })
  local wall = now() - t0
  mpc:close()
  local ok, failed, kinds = 0, 0, {}
  for _ in pairs(results) do ok = ok + 1 end
  for _, e in pairs(errors) do
    failed = failed + 1
    kinds[#kinds + 1] = tostring(e.kind) .. (e.status and tostring(e.status) or "")
  end
  result { wall = ("%.4f"):format(wall), count = ok, failed = failed, asked = #ids,
           error = kinds[1] or "none" }
end

function modes.each()
  local pc = require "partnercustomers"
  local ave = pc.avepoint {
    client_id = "bench", client_secret = SECRET,
    token_url = BASE .. "/connect/token", base_url = BASE,
  }
  local t0 = now()
  local n = 0
  for _ in ave:each_customer { page_size = PAGE } do n = n + 1 end
  local wall = now() - t0
  ave:close()
  result { wall = ("%.3f"):format(wall), count = n }
end

function modes.burst()
  local core = require "partnercustomers.core"
  local n = num("n", 16)
  local client = core.new { access_token = assert(TOKEN, "BENCH_SERVER_TOKEN"), max_parallel = n,
                            ca_file = A.ca_file }
  local reqs = {}
  for i = 1, n do
    reqs[i] = { method = "GET", scope = "elements.customers.read.all", decode = true,
                headers = { Accept = "application/json" },
                url = ("%s/partner/external/v3/general/customers?pageIndex=%d&pageSize=%d"):format(BASE, i, PAGE) }
  end
  local t0 = now()
  local answers = client:batch(reqs)
  local wall = now() - t0
  local ok, err = 0, "none"
  for _, a in ipairs(answers) do
    if a[1] and a[1].status == 200 then ok = ok + 1 elseif a[2] then err = tostring(a[2]) :gsub("%s", "_") end
  end
  client:close()
  result { wall = ("%.4f"):format(wall), count = ok, error = err }
end

function modes.curlpage()
  local cjson = require "cjson"
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local form = "grant_type=client_credentials&client_id=bench&client_secret=" .. SECRET
               .. "&scope=elements.customers.read.all"
  local chunks = {}
  assert(http.request { url = BASE .. "/connect/token", method = "POST", source = ltn12.source.string(form),
    headers = { ["content-type"] = "application/x-www-form-urlencoded", ["content-length"] = #form },
    sink = ltn12.sink.table(chunks) })
  local token = cjson.decode(table.concat(chunks)).access_token
  local t0 = now()
  local n, index = 0, 1
  while true do
    local url = ("%s/partner/external/v3/general/customers?pageIndex=%d&pageSize=%d"):format(BASE, index, PAGE)
    local p = assert(io.popen("env -u LD_PRELOAD curl -s --compressed -H 'Authorization: Bearer "
                              .. token .. "' '" .. url .. "'"))
    local body = p:read("a")
    p:close()
    local page = assert(cjson.decode(body))
    n = n + #page.data
    if #page.data < PAGE or n >= page.metadata.totalCount then break end
    index = index + 1
  end
  result { wall = ("%.4f"):format(now() - t0), count = n }
end

local f = modes[MODE]
if not f then
  io.stderr:write("bench/peer.lua: unknown mode ", tostring(MODE), "\n")
  os.exit(2)
end
f()
