-- The sandbox's customer data set: generated from a seed, identical for the same (count, seed).
--
-- The generator has its own PRNG (SplitMix64 on Lua 5.4 wrapping integers) so that it neither
-- depends on nor disturbs math.random, and gives the same data on every platform.

local json = require "partnercustomers.sandbox.json"

local data = {}

data.labels = {
  [0] = "N/A", "Working", "Failed", "Waiting for Configuration",
  "Multiple Issues Found", "Finished with Exception", "No Backup Update",
}

-- Spellings a client must accept besides the canonical label (case and number vary between
-- the doc versions).
local label_variants = {
  [0] = {"n/a"}, {"working", "WORKING"}, {"failed", "FAILED"},
  {"waiting for configuration", "Waiting For Configuration"},
  {"multiple issues found", "Multiple issues found"},
  {"finished with exception", "Finished With Exception"},
  {"No backup updates", "no backup update", "No Backup Updates"},
}

local function new_rng(seed)
  local state = seed
  local function next64()
    state = state + 0x9E3779B97F4A7C15
    local z = state
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    return z ~ (z >> 31)
  end
  -- rng(n): an integer in 1..n; rng(): a raw 64-bit integer.
  return function(n)
    local z = next64()
    if n then
      return (z >> 1) % n + 1
    end
    return z
  end
end

local function pick(rng, list)
  return list[rng(#list)]
end

local function chance(rng, percent)
  return rng(100) <= percent
end

local function guid(rng)
  local hex = string.format("%016x%016x", rng(), rng())
  local k = rng(4)
  local variant = ("89ab"):sub(k, k)
  return table.concat{
    hex:sub(1, 8), "-", hex:sub(9, 12), "-4", hex:sub(14, 16), "-",
    variant, hex:sub(18, 20), "-", hex:sub(21, 32),
  }
end

-- Organization names: ASCII ones (some with CSV-hostile commas and quotes) and non-ASCII ones.
local ascii_orgs = {
  "Contoso Ltd", "Fabrikam, Inc.", "Northwind Traders", "Tailspin Toys", "Adventure Works Cycles",
  "Woodgrove Bank", "Litware, Inc.", "Proseware", "Wide World Importers", "Alpine Ski House",
  "Coho Winery", "Blue Yonder Airlines", "Trey Research", "Lucerne Publishing", "Margie's Travel",
  'The "Quoted" Company', "Humongous Insurance", "Fourth Coffee", "Relecloud", "VanArsdel Ltd",
  "A. Datum Corporation", "Best For You Organics", "AvePoint test",
}
local german = {"Müller & Söhne GmbH", "Bäckerei Weiß KG", "Grüne Energie Köln AG"}
local french = {"Société Générale de Développement", "Café Crème SARL", "Hôtel Les Âmes"}
local japanese = {"株式会社さくら技研", "東京データ合同会社"}
local greek = {"Ελληνικά Συστήματα Α.Ε.", "Ωμέγα Λογισμικό"}
local other_intl = {"Fjällräven Konsult AB", "Łódź Software Sp. z o.o.", "Ñandú Soluciones S.L."}
local intl_groups = {german, french, japanese, greek, other_intl}

local countries = {
  "United States", "Germany", "France", "Japan", "Greece", "Vietnam", "Afghanistan",
  "United Kingdom", "Côte d'Ivoire", "Türkiye", "Australia", "Canada", "Singapore",
}

local mailbox_names = {"admin", "it", "owner", "ops", "m.schmidt", "j.dupont", "backup-admin"}

-- An ASCII label for mail domains and tenant names; names without enough ASCII letters
-- (Japanese, Greek) fall back to a numbered one.
local function slug(name, index)
  local s = name:lower():gsub("[^%w]", ""):sub(1, 14)
  if not s:find("%a%a%a") then
    s = "customer" .. index
  end
  return s
end

local function organization(rng)
  local name
  if chance(rng, 30) then
    name = pick(rng, pick(rng, intl_groups))
  else
    name = pick(rng, ascii_orgs)
  end
  if chance(rng, 25) then
    name = name .. " " .. rng(99)
  end
  return name
end

local function tenant_count(rng)
  local roll = rng(100)
  if roll <= 10 then
    return 0
  elseif roll <= 85 then
    return 1
  end
  return 1 + rng(3)
end

local function tenants(rng, org, index, force)
  local n = force.tenant_count or tenant_count(rng)
  local base = slug(org, index)
  local list = json.array()
  for i = 1, n do
    local name = i == 1 and base or base .. "-" .. i
    if chance(rng, 8) or (force.null_tenant_name and i == n) then
      name = json.null
    end
    list[i] = {id = guid(rng), name = name}
  end
  return list
end

-- One customer; `force` overrides some random draws (see plan_cases). Every draw is made
-- whether or not it is overridden, so that forcing one field does not shift the others.
local function customer(rng, index, force)
  local org = organization(rng)
  local c = {
    id = guid(rng),
    organization = force.organization or org,
    ownerEmail = json.null,
    jobStatus = rng(7) - 1,
    countryOrRegion = json.null,
    managementMode = rng(3) - 1,
  }
  c.jobStatus = force.jobStatus or c.jobStatus
  c.managementMode = force.managementMode or c.managementMode
  local email = pick(rng, mailbox_names) .. "@" .. slug(c.organization, index) .. ".example"
  if not (chance(rng, 12) or force.no_email) then
    c.ownerEmail = email
  end
  local country = pick(rng, countries)
  if not (chance(rng, 12) or force.no_country) then
    c.countryOrRegion = country
  end
  c.tenants = tenants(rng, c.organization, index, force)
  return c
end

-- A random permutation of 1..n (Fisher-Yates).
local function shuffled(rng, n)
  local p = {}
  for i = 1, n do p[i] = i end
  for i = n, 2, -1 do
    local j = rng(i)
    p[i], p[j] = p[j], p[i]
  end
  return p
end

-- The cases every client must handle, planted at seeded positions so that they exist in any
-- data set big enough to hold them, whatever the random draws give.
local planted = {
  {jobStatus = 0}, {jobStatus = 1}, {jobStatus = 2}, {jobStatus = 3}, {jobStatus = 4},
  {jobStatus = 5}, {jobStatus = 6},
  {no_email = true}, {no_country = true}, {tenant_count = 0},
  {tenant_count = 3, null_tenant_name = true},
  {organization = german[1]}, {organization = french[1]},
  {organization = japanese[1]}, {organization = greek[1]},
  {managementMode = 0}, {managementMode = 1}, {managementMode = 2},
}

-- Returns force[index] for every index (an empty table where nothing is planted).
local function plan_cases(rng, count)
  local pos = shuffled(rng, count)
  local force = {}
  for i = 1, count do force[i] = {} end
  for i, case in ipairs(planted) do
    if pos[i] then force[pos[i]] = case end
  end
  return force
end

-- The jobStatus a "mixed" sandbox sends for a customer: integer, numeric string, canonical
-- label or another spelling, cycling so that every form appears in any four customers.
local function mixed_status(rng, code, index, seed)
  local form = (index + seed) % 4
  if form == 0 then
    return code
  elseif form == 1 then
    return tostring(code)
  elseif form == 2 then
    return data.labels[code]
  end
  return pick(rng, label_variants[code])
end

-- Returns the array of customers: v3 shape, integer jobStatus, JSON nulls as json.null.
-- Each record also carries `mixed_status` (not part of the wire shape).
function data.generate(count, seed)
  local rng = new_rng(seed)
  local force = plan_cases(rng, count)
  local list = {}
  for i = 1, count do
    list[i] = customer(rng, i, force[i])
  end
  for i, c in ipairs(list) do
    c.mixed_status = mixed_status(rng, c.jobStatus, i, seed)
  end
  return list
end

-- jobStatus as a v3 answer encodes it in the given style ("int", "string", "label", "mixed").
function data.v3_status(c, style)
  if style == "int" then
    return c.jobStatus
  elseif style == "string" then
    return tostring(c.jobStatus)
  elseif style == "label" then
    return data.labels[c.jobStatus]
  end
  return c.mixed_status
end

local function copy_tenants(list)
  local out = json.array()
  for i, t in ipairs(list) do
    out[i] = {id = t.id, name = t.name}
  end
  return out
end

-- A customer as the v3 endpoints answer it.
function data.v3_view(c, style)
  return {
    id = c.id, organization = c.organization, ownerEmail = c.ownerEmail,
    jobStatus = data.v3_status(c, style), countryOrRegion = c.countryOrRegion,
    managementMode = c.managementMode, tenants = copy_tenants(c.tenants),
  }
end

-- The Partner Center side: one entry per tenant of the customers above, in their order (customer
-- order, then tenant order). Position k (1-based) decides the planted cases, so that any six
-- consecutive tenants show each of them:
--   k % 6 == 0  no GDAP role: the organization call answers 403
--   k % 6 == 2  technicalNotificationMails is null
--   k % 6 == 3  a non-ASCII displayName (and companyName) and a city with non-ASCII letters
--   k % 6 == 4  technicalNotificationMails is absent
--   k % 6 == 5  two technicalNotificationMails (one otherwise)
-- Streets, house numbers, the address's city and the mailbox names come from a PRNG of their own
-- (seeded from `seed`), so the AvePoint data set is the same as without this view.

-- {street pattern, countryLetterCode, postalCode, city, state}; the first group's cities are ASCII.
local ascii_addresses = {
  {"%d Harbor Road", "US", "98101", "Seattle", "WA"},
  {"%d Elm Street", "US", "02134", "Boston", "MA"},
  {"%d Queen Street West", "CA", "M5H 2M9", "Toronto", "ON"},
  {"%d Collins Street", "AU", "3000", "Melbourne", "VIC"},
  {"Keizersgracht %d", "NL", "1015 CJ", "Amsterdam", ""},
  {"%d Orchard Road", "SG", "238858", "Singapore", ""},
}
local intl_addresses = {
  {"Königsallee %d", "DE", "40212", "Düsseldorf", "NW"},
  {"Bahnhofstrasse %d", "CH", "8001", "Zürich", "ZH"},
  {"丸の内%d丁目", "JP", "100-0005", "東京都千代田区", "東京都"},
  {"Οδός Ερμού %d", "GR", "105 63", "Αθήνα", "Αττική"},
  {"ul. Floriańska %d", "PL", "31-019", "Kraków", "małopolskie"},
  {"Rue Saint-Jean %d", "CA", "G1R 1N8", "Québec", "QC"},
  {"Avenida Paulista %d", "BR", "01310-100", "São Paulo", "SP"},
}
local intl_company_names = {
  "Schöne Aussicht GmbH", "Ålesund Havnedata AS", "Zürcher Datenwerk AG", "Œuvre Numérique SAS",
  "Ηλιακή Τεχνική Ο.Ε.", "株式会社みなと商事", "Żółta Łódka Sp. z o.o.", "Ñam Ñam Cocina S.L.",
}
local pc_mailboxes = {"admin", "it", "security", "noc", "m365-alerts"}

local function pc_address(rng, intl)
  local all = #ascii_addresses + #intl_addresses
  local roll, number = rng(all), rng(120)
  local a
  if intl then
    a = intl_addresses[(roll - 1) % #intl_addresses + 1]
  elseif roll <= #ascii_addresses then
    a = ascii_addresses[roll]
  else
    a = intl_addresses[roll - #ascii_addresses]
  end
  return {street = string.format(a[1], number), countryLetterCode = a[2], postalCode = a[3],
          city = a[4], state = a[5]}
end

-- Returns the array of {id, customer_id, domain, company_name, status = 200|403, organization}.
-- `organization` is the object GET /v1/customers/{id}/organization answers (in an array).
function data.pc_tenants(customers, seed)
  local rng = new_rng(seed ~ 0x5043)
  local list, domains = {}, {}
  for _, c in ipairs(customers) do
    for _, t in ipairs(c.tenants) do
      local k = #list + 1
      local cycle = k % 6
      local name = t.name ~= json.null and t.name or ("tenant" .. k)
      if domains[name] then name = name .. k end
      domains[name] = true
      local domain = name .. ".onmicrosoft.com"
      -- every draw is made for every tenant, so one planted case does not shift the others
      local org = pc_address(rng, cycle == 3)
      local intl_name = pick(rng, intl_company_names)
      local first, second = pick(rng, pc_mailboxes), pick(rng, pc_mailboxes)
      org.displayName = cycle == 3 and intl_name or c.organization
      if cycle == 2 then
        org.technicalNotificationMails = json.null
      elseif cycle ~= 4 then
        local mails = json.array{first .. "@" .. domain}
        if cycle == 5 then
          mails[2] = (second == first and "backup-" .. second or second) .. "@" .. domain
        end
        org.technicalNotificationMails = mails
      end
      list[k] = {id = t.id, customer_id = c.id, domain = domain, company_name = org.displayName,
                 status = cycle == 0 and 403 or 200, organization = org}
    end
  end
  return list
end

-- A customer as GET /partner/customers answers it (label status, no tenants, no mode).
function data.odata_view(c)
  return {
    id = c.id, organization = c.organization, ownerEmail = c.ownerEmail,
    jobStatus = data.labels[c.jobStatus], countryOrRegion = c.countryOrRegion,
  }
end

return data
