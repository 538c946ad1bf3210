-- List every AvePoint customer with its job status.
--
--   PARTNERCUSTOMERS_CLIENT_ID=… PARTNERCUSTOMERS_CLIENT_SECRET=… lua5.4 examples/list_customers.lua
--
-- Optional: PARTNERCUSTOMERS_ENVIRONMENT (commercial, gov, aos2, fedramp) and
-- PARTNERCUSTOMERS_BASE_URL / PARTNERCUSTOMERS_TOKEN_URL (for the local sandbox, say).
local pc = require "partnercustomers"

local function env(name)
  local v = os.getenv(name)
  return v ~= "" and v or nil
end

local ave <close> = pc.avepoint {
  client_id = env "PARTNERCUSTOMERS_CLIENT_ID",
  client_secret = env "PARTNERCUSTOMERS_CLIENT_SECRET",
  environment = env "PARTNERCUSTOMERS_ENVIRONMENT",
  base_url = env "PARTNERCUSTOMERS_BASE_URL",
  token_url = env "PARTNERCUSTOMERS_TOKEN_URL",
}

-- Methods return nil and an error object when the service or the network fails.
local customers, err = ave:all_customers { page_size = 100 }
if not customers then
  io.stderr:write("cannot list the customers: ", tostring(err), "\n")
  if err.kind == "auth" then
    io.stderr:write("check PARTNERCUSTOMERS_CLIENT_ID and PARTNERCUSTOMERS_CLIENT_SECRET\n")
  end
  os.exit(1)
end

for _, c in ipairs(customers) do
  print(c.organization or "?", c.jobStatus or "?")
end
print(("%d customers"):format(#customers))
