-- Every AvePoint customer and each of its tenants, joined with the tenant's Partner Center
-- organization (display name, country, city, notification e-mails), as a table.
--
--   PARTNERCUSTOMERS_CLIENT_ID=… PARTNERCUSTOMERS_CLIENT_SECRET=… \
--   PARTNERCUSTOMERS_PC_TENANT=contoso.onmicrosoft.com \
--   PARTNERCUSTOMERS_PC_CLIENT_ID=… PARTNERCUSTOMERS_PC_CLIENT_SECRET=… lua5.4 examples/report.lua
--
-- Optional: PARTNERCUSTOMERS_BASE_URL / _TOKEN_URL and PARTNERCUSTOMERS_PC_BASE_URL / _PC_TOKEN_URL
-- (for the local sandbox, say: bin/with-sandbox sets them all).
local pc = require "partnercustomers"
local report = require "partnercustomers.report"
local format = require "partnercustomers.format"

local function env(name)
  local v = os.getenv(name)
  return v ~= "" and v or nil
end

local ave <close> = pc.avepoint {
  client_id = env "PARTNERCUSTOMERS_CLIENT_ID",
  client_secret = env "PARTNERCUSTOMERS_CLIENT_SECRET",
  base_url = env "PARTNERCUSTOMERS_BASE_URL",
  token_url = env "PARTNERCUSTOMERS_TOKEN_URL",
}

local mpc <close> = pc.partnercenter {
  tenant = env "PARTNERCUSTOMERS_PC_TENANT",
  client_id = env "PARTNERCUSTOMERS_PC_CLIENT_ID",
  client_secret = env "PARTNERCUSTOMERS_PC_CLIENT_SECRET",
  base_url = env "PARTNERCUSTOMERS_PC_BASE_URL",
  token_url = env "PARTNERCUSTOMERS_PC_TOKEN_URL",
}

-- One row per customer and tenant. Only the AvePoint listing can fail the whole report; a tenant
-- whose organization could not be read says why in row.failure ("auth 403": no GDAP role).
local rows, err = report.rows(ave, mpc, { parallel = 8 })
if not rows then
  io.stderr:write("cannot list the AvePoint customers: ", tostring(err), "\n")
  os.exit(1)
end

assert(format.write("table", io.stdout, rows, "report"))

local failed = 0
for _, row in ipairs(rows) do
  if row.failure then failed = failed + 1 end
end
print(("%d rows, %d without a Partner Center organization"):format(#rows, failed))
