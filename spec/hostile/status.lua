-- API statuses the calls must pass on as errors: redirects (never followed: a redirect would carry
-- the bearer token elsewhere), refusals without the body a client hopes for, errors forever.
local R = require "spec.helpers.rawpeer"
local C = require "spec.hostile.common"

local function answer(status, headers, body) return { R.send(R.response(status, headers, body)) } end

local cases = {}
-- Redirects: to a path of the same peer (/elsewhere: the runner fails any case that reaches it)
-- and to an absolute URL on it.
local REDIRECTS = { 301, 302, 303, 307, 308 }
local CALLS = { "core_fixed", "ave_customers", "pc_org", "ave_page", "pc_customers" }
for i, status in ipairs(REDIRECTS) do
  cases[#cases + 1] = { name = status .. " to a path elsewhere", call = "core_fixed",
                        api = answer(status, { "Location: /elsewhere/things" }, ""), expect = { kind = "http", status = status } }
  cases[#cases + 1] = { name = status .. " to an absolute URL elsewhere", call = CALLS[i],
                        api = function(p) return answer(status, { ("Location: %s/elsewhere/x"):format(p.url) }, "moved") end,
                        expect = { kind = "http", status = status } }
end
cases[#cases + 1] = { name = "302 with a CR/LF Location", call = "core_fixed",
                      api = answer(302, { "Location: /elsewhere\r\nX-Injected: 1" }, ""), expect = { kind = "http", status = 302 } }

-- Refusals without an OAuth error field, every time: one renewal of the token at most.
local RENEWED_ONCE = C.at_most("token", 2)
local REFUSALS = {
  { "empty 401", answer(401, {}, "") },
  { "401 with non-OAuth JSON", { R.json(401, '{"message":"Unauthorized","statusCode":401}') } },
  { "401 with a JSON array", { R.json(401, "[]") } },
  { "401 with an HTML page", answer(401, { "Content-Type: text/html" }, "<h1>401</h1>") },
}
for i, r in ipairs(REFUSALS) do
  for _, call in ipairs { "core", ({ "ave_customers", "pc_org", "ave_each", "pc_refresh" })[i] } do
    cases[#cases + 1] = { name = "API " .. r[1] .. ", every time", call = call, api = r[2],
                          expect = { kind = "auth", status = 401 }, check = RENEWED_ONCE }
  end
end
cases[#cases + 1] = { name = "API empty 401 with a fixed token", call = "core_fixed", api = answer(401, {}, ""),
                      expect = { kind = "auth", status = 401, attempts = 1 } }
cases[#cases + 1] = { name = "API HTML 403", call = "ave_customers", api = answer(403, { "Content-Type: text/html" }, "<h1>no</h1>"),
                      expect = { kind = "auth", status = 403, attempts = 1 } }
cases[#cases + 1] = { name = "API 503 forever", call = "core_fixed", api = answer(503, {}, ""),
                      expect = { kind = "http", status = 503, attempts = 3 } }
cases[#cases + 1] = { name = "API 429 forever", call = "ave_all", api = { R.json(429, '{"statusCode":429,"message":"later"}') },
                      expect = { kind = "throttled", status = 429, attempts = 3 } }
return cases
