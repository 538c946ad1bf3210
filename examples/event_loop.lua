-- Both clients and a ticker in one cqueues loop, on one thread: the AvePoint customers and the
-- Partner Center customers are listed at once while the ticker keeps ticking (a blocking call
-- would stop it for as long as the service takes).
--
--   PARTNERCUSTOMERS_CLIENT_ID=… PARTNERCUSTOMERS_CLIENT_SECRET=… PARTNERCUSTOMERS_PC_TENANT=… \
--   PARTNERCUSTOMERS_PC_CLIENT_ID=… PARTNERCUSTOMERS_PC_CLIENT_SECRET=… lua5.4 examples/event_loop.lua
--
-- The base and token URLs come from the same variables as the command line's (for the local
-- sandbox: bin/with-sandbox lua5.4 examples/event_loop.lua). Needs cqueues (Debian: lua-cqueues).
local cqueues = require "cqueues"
local pc = require "partnercustomers"

local function env(name)
  local v = os.getenv(name)
  return v ~= "" and v or nil
end

local cq = cqueues.new()
local running, ticks, failed = 2, 0, false

-- Each listing runs in a coroutine of the loop; wait = cqueues.poll hands every wait to it.
local function list(name, make, method, opts)
  cq:wrap(function()
    local client <close> = make()
    local customers, err = client[method](client, opts)
    if customers then
      print(("%s: %d customers"):format(name, #customers))
    else
      io.stderr:write(name, ": ", tostring(err), "\n")
      failed = true
    end
    running = running - 1
  end)
end

list("AvePoint", function()
  return pc.avepoint {
    client_id = env "PARTNERCUSTOMERS_CLIENT_ID", client_secret = env "PARTNERCUSTOMERS_CLIENT_SECRET",
    environment = env "PARTNERCUSTOMERS_ENVIRONMENT",
    base_url = env "PARTNERCUSTOMERS_BASE_URL", token_url = env "PARTNERCUSTOMERS_TOKEN_URL",
    wait = cqueues.poll,
  }
end, "all_customers", { page_size = 100 })

list("Partner Center", function()
  return pc.partnercenter {
    tenant = env "PARTNERCUSTOMERS_PC_TENANT", client_id = env "PARTNERCUSTOMERS_PC_CLIENT_ID",
    client_secret = env "PARTNERCUSTOMERS_PC_CLIENT_SECRET",
    base_url = env "PARTNERCUSTOMERS_PC_BASE_URL", token_url = env "PARTNERCUSTOMERS_PC_TOKEN_URL",
    wait = cqueues.poll,
  }
end, "customers", { page_size = 100 })

cq:wrap(function() -- the rest of the host's work goes on meanwhile
  while running > 0 do
    ticks = ticks + 1
    cqueues.sleep(0.001)
  end
end)

assert(cq:loop())
print(("the loop ticked %d times meanwhile"):format(ticks))
os.exit(failed and 1 or 0)
