-- JSON edge cases in 200 answers: nesting, numbers, bytes, and shapes the calls do not expect.
local R = require "spec.helpers.rawpeer"

local PROTOCOL = { kind = "protocol" }
local DECODE = { kind = "decode" }
local OK = { ok = true }
local OK_OR_DECODE = { ok = true, kinds = { "decode" } }
local DEEP_ARRAYS = ("["):rep(10000) .. ("]"):rep(10000)
local DEEP_OBJECTS = ('{"a":'):rep(10000) .. "1" .. ("}"):rep(10000)

local function body(text) return { R.json(200, text) } end
local function v3_customer(fields) return body('{"data":[{"id":"a",' .. fields .. '}],"metadata":{"totalCount":1}}') end
local function org(fields) return body('[{"displayName":"x",' .. fields .. '}]') end

-- { call, name, body text or answers, expectation }
local CASES = {
  -- what the core decodes
  { "core_fixed", "arrays nested 10000 deep", DEEP_ARRAYS, { ok = true, kinds = { "decode", "limit" } } },
  { "core_fixed", "objects nested 10000 deep", DEEP_OBJECTS, { ok = true, kinds = { "decode", "limit" } } },
  { "core_fixed", "a number of 1e400", '{"n":1e400}', OK_OR_DECODE },
  { "core_fixed", "a number of -1e400", '{"n":-1e400}', OK_OR_DECODE },
  { "core_fixed", "a number of 400 digits", '{"n":' .. ("9"):rep(400) .. "}", OK_OR_DECODE },
  { "core_fixed", "non-UTF-8 bytes in a string", '{"s":"\xff\xfe\xc3\x28"}', OK_OR_DECODE },
  { "core_fixed", "non-UTF-8 bytes outside strings", '{"s":1\xff}', DECODE },
  { "core_fixed", "a byte-order mark first", "\xef\xbb\xbf{}", OK_OR_DECODE },
  { "core_fixed", "trailing garbage", '{"ok":true} x', DECODE },
  { "core_fixed", "two documents", "{}{}", DECODE },
  { "core_fixed", "NaN", '{"n":NaN}', DECODE },
  { "core_fixed", "a hex number", '{"n":0x10}', DECODE },
  { "core_fixed", "a lone surrogate", '{"s":"\\ud800"}', OK_OR_DECODE },
  { "core_fixed", "NUL inside a string", '{"s":"a\\u0000b"}', OK },
  { "core_fixed", "duplicate keys", '{"a":1,"a":2}', OK },
  { "core_fixed", "a 512 KiB string", '{"s":"' .. ("z"):rep(512 * 1024) .. '"}', OK },
  { "core_fixed", "an empty body", "", OK },
  { "core_fixed", "only whitespace", "  \r\n\t ", OK_OR_DECODE },
  { "core_fixed", "a top-level number", "42", OK },
  { "core_fixed", "a top-level null", "null", OK },
  { "core_fixed", "an HTML page", { R.send(R.response(200, { "Content-Type: text/html" }, "<html>hi</html>")) }, DECODE },
  -- AvePoint shapes
  { "ave_customers", "an array where an object belongs", '[{"id":"a"}]', PROTOCOL },
  { "ave_customers", "a string where the array belongs", '{"value":"abc"}', PROTOCOL },
  { "ave_customers", "an object where the array belongs", '{"value":{"id":"a"}}', PROTOCOL },
  { "ave_customers", "a customer that is a string", '{"value":["abc"]}', PROTOCOL },
  { "ave_customers", "nulls in the array", '{"value":[null,{"id":"a"},null]}', { ok = true, kinds = { "protocol" } } },
  { "ave_customers", "arrays nested 10000 deep", DEEP_ARRAYS, { kinds = { "decode", "protocol", "limit" } } },
  { "ave_customers", "a top-level null", "null", { kinds = { "protocol", "decode" } } },
  { "ave_customers", "an empty body", "", { kinds = { "protocol", "decode" } } },
  { "ave_page", "tenants that is a string", v3_customer('"tenants":"t1"'), PROTOCOL },
  { "ave_page", "tenants that is an object", v3_customer('"tenants":{"id":"t1"}'), PROTOCOL },
  { "ave_page", "a tenant that is a number", v3_customer('"tenants":[7]'), PROTOCOL },
  { "ave_page", "nulls among the tenants", v3_customer('"tenants":[null]'), { ok = true, kinds = { "protocol" } } },
  { "ave_page", "jobStatus 1e400", v3_customer('"jobStatus":1e400'), { ok = true, kinds = { "protocol", "decode" } } },
  { "ave_page", "managementMode 1e400", v3_customer('"managementMode":1e400'), { ok = true, kinds = { "protocol", "decode" } } },
  { "ave_page", "non-UTF-8 bytes in organization", v3_customer('"organization":"\xff\xfe"'), OK_OR_DECODE },
  { "ave_each", "a page of nulls", '{"data":[null,null]}', { ok = true, kinds = { "protocol" } } },
  { "ave_all", "a top-level string", '"customers"', PROTOCOL },
  -- Partner Center shapes
  { "pc_org", "an object where the array belongs", '{"displayName":"x"}', PROTOCOL },
  { "pc_org", "an empty array", "[]", PROTOCOL },
  { "pc_org", "an array of strings", '["x"]', PROTOCOL },
  { "pc_org", "an array of nulls", "[null]", PROTOCOL },
  { "pc_org", "mails that is a string", org('"technicalNotificationMails":"a@b"'), PROTOCOL },
  { "pc_org", "mails holding a number", org('"technicalNotificationMails":[1]'), PROTOCOL },
  { "pc_org", "arrays nested 10000 deep", DEEP_ARRAYS, { kinds = { "decode", "protocol", "limit" } } },
  { "pc_customers", "an array where an object belongs", '[{"id":"t1"}]', PROTOCOL },
}

local cases = {}
for _, c in ipairs(CASES) do
  local api = type(c[3]) == "string" and body(c[3]) or c[3]
  cases[#cases + 1] = { name = "JSON: " .. c[2], call = c[1], api = api, expect = c[4] }
end
return cases
