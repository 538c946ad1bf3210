-- Every form of Retry-After on a 429 (then a good answer). The core's calls run with
-- random = 1 and backoff_base = 0.5, so a Retry-After treated as absent waits exactly 0.5 s
-- (the first backoff step); the Lua layer's calls have jitter, so they wait at most 0.5 s.
-- README: decimal seconds (a fraction allowed) or an HTTP date; hex, a sign, garbage are ignored.
local R = require "spec.helpers.rawpeer"
local C = require "spec.hostile.common"

local function http_date(t) return os.date("!%a, %d %b %Y %H:%M:%S GMT", t) end

local function limited(values, status, call)
  local h = {}
  for _, v in ipairs(values) do h[#h + 1] = "Retry-After: " .. v end
  return { R.json(status or 429, '{"error":"slow down"}', h), C.good(call or "core_fixed") }
end

local ABSENT = { ok = true, sleeps = { 0.5 } } -- unreadable: the backoff alone
local function waits(s) return { ok = true, sleeps = { s } } end
-- beyond retry_after_cap (120 s): fails at once, without waiting, with retry_after set
local BEYOND = { kind = "throttled", status = 429, attempts = 1, sleeps = {}, retry_after_over = 120 }

local FORMS = {
  { "seconds", { "7" }, waits(7) },
  { "seconds at the cap (120)", { "120" }, waits(120) },
  { "seconds just over the cap (121)", { "121" }, BEYOND },
  { "a fraction over the cap (120.5)", { "120.5" }, BEYOND },
  { "a fraction under the cap (7.5)", { "7.5" }, waits(7.5) },
  { "huge (3000000000)", { "3000000000" }, BEYOND },
  { "beyond any integer (10^23)", { "99999999999999999999999" }, BEYOND },
  { "hex (0x10)", { "0x10" }, ABSENT },
  { "negative (-5)", { "-5" }, ABSENT },
  { "an exponent (1e3)", { "1e3" }, ABSENT },
  { "inf", { "inf" }, ABSENT },
  { "nan", { "nan" }, ABSENT },
  { "empty", { "" }, ABSENT },
  { "garbage", { "soon" }, ABSENT },
  { "an HTTP date 9 s ahead", { http_date(C.NOW + 9) }, waits(9) },
  { "an HTTP date in the past", { "Sun, 06 Nov 1994 08:49:37 GMT" }, ABSENT },
  { "an RFC 850 date in the past", { "Sunday, 06-Nov-94 08:49:37 GMT" }, ABSENT },
  { "an HTTP date in 2100", { "Fri, 01 Jan 2100 00:00:00 GMT" }, BEYOND },
  { "a garbage date", { "Fri, 99 Foo 2100 99:99:99 GMT" }, ABSENT },
  { "padded with spaces", { "  7  " }, waits(7) },
  { "two values in one header", { "7, 9" }, { ok = true } },
  { "two headers", { "7", "9" }, { ok = true } },
}

local cases = {}
for _, f in ipairs(FORMS) do
  cases[#cases + 1] = { name = "Retry-After " .. f[1], call = "core_fixed", api = limited(f[2]), expect = f[3] }
end

local JITTERED = { ok = true, max_sleep = 0.5 }
local more = {
  { name = "Retry-After huge (3000000000) on a 503", call = "core_fixed", api = limited({ "3000000000" }, 503),
    expect = { kind = "http", status = 503, attempts = 1, sleeps = {} } },
  { name = "Retry-After hex (0x10) on a 503", call = "core_fixed", api = limited({ "0x10" }, 503), expect = ABSENT },
  { name = "Retry-After hex (0x10)", call = "ave_page", api = limited({ "0x10" }, 429, "ave_page"), expect = JITTERED },
  { name = "Retry-After negative (-5)", call = "pc_customers", api = limited({ "-5" }, 429, "pc_customers"), expect = JITTERED },
  { name = "Retry-After an HTTP date in 2100", call = "pc_org", api = limited({ "Fri, 01 Jan 2100 00:00:00 GMT" }, 429, "pc_org"),
    expect = BEYOND },
  { name = "Retry-After huge (3000000000) on the token endpoint", call = "core",
    token = { R.json(429, '{"error":"slow_down"}', { "Retry-After: 3000000000" }), C.TOKEN_OK },
    expect = { kinds = { "throttled", "auth" }, attempts = 1, sleeps = {} } },
  { name = "Retry-After hex (0x10) on the token endpoint", call = "core",
    token = { R.json(503, '{"error":"busy"}', { "Retry-After: 0x10" }), C.TOKEN_OK }, expect = ABSENT },
}
for _, c in ipairs(more) do cases[#cases + 1] = c end
return cases
