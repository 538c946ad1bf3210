-- The core's Entra ID token forms against the sandbox's Entra-style endpoints: the v1 `resource`
-- and v2 `scope` audiences, the refresh_token grant with rotation, Entra's error shape, GUIDs.
local core = require "partnercustomers.core"
local sandbox = require "spec.helpers.sandbox"

local PC_SCOPE_V2 = "https://api.partnercenter.microsoft.com/.default"
local PC_RESOURCE = "https://api.partnercenter.microsoft.com"

local function token_requests(log)
  local out = {}
  for _, e in ipairs(log) do
    if e.path:match("/oauth2/") then out[#out + 1] = e end
  end
  return out
end

describe("partnercustomers.core with Entra ID", function()
  local sb, org_url
  setup(function()
    sb = sandbox.start { count = 8, seed = 5 }
    org_url = sb:pc_org_url() -- any tenant the sandbox serves an organization for
  end)
  teardown(function() sb:stop() end)
  before_each(function()
    sb:faults {}
    sb:clear_log()
  end)

  it("makes version 4 GUIDs", function()
    local seen = {}
    for _ = 1, 100 do
      local id = core.uuid()
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", id)
      assert.is_nil(seen[id])
      seen[id] = true
    end
  end)

  it("sends the audience as scope to the v2 endpoint and as resource to the v1 endpoint", function()
    for _, case in ipairs {
      { url = sb.pc_token_url_v2, audience = "scope", scope = PC_SCOPE_V2 },
      { url = sb.pc_token_url_v1, audience = "resource", scope = PC_RESOURCE },
    } do
      sb:clear_log()
      local events = {}
      local c <close> = core.new {
        client_credentials = { token_url = case.url, client_id = sb.client_id, client_secret = sb.client_secret,
                               audience = case.audience },
        on_event = function(e) events[#events + 1] = e end,
      }
      local res = assert(c:request { url = org_url, scope = case.scope })
      assert.equal(200, res.status)
      local form = token_requests(sb:log())[1].body
      assert.truthy(form:find(case.audience .. "=" .. case.scope:gsub("[:/]", function(ch)
        return ("%%%02X"):format(ch:byte())
      end), 1, true), form)
      for _, e in ipairs(events) do
        if e.type == "token" then
          assert.equal(3600, e.expires_in) -- v1 sends "3600" as a string
          assert.equal("integer", math.type(e.expires_in))
        end
      end
    end
  end)

  it("refuses an audience that is neither scope nor resource", function()
    assert.error_matches(function()
      core.new { client_credentials = { token_url = sb.pc_token_url_v2, client_id = "a", client_secret = "b", audience = "aud" } }
    end, "audience")
  end)

  it("redeems a refresh token, hands every new one to on_refresh_token before use, and redeems the newest", function()
    local first = sb:refresh_token()
    local handed, order = {}, {}
    local c <close> = core.new {
      refresh_token = { token_url = sb.pc_token_url_v2, client_id = sb.client_id, client_secret = sb.client_secret,
                        refresh_token = first, on_refresh_token = function(new)
                          handed[#handed + 1] = new
                          order[#order + 1] = "persist"
                        end },
      on_event = function(e) if e.type == "request" and e.url == org_url then order[#order + 1] = "api" end end,
    }
    assert(c:request { url = org_url, scope = PC_SCOPE_V2 })
    assert.equal(1, #handed)
    assert.not_equal(first, handed[1])
    assert.same({ "persist", "api" }, order)

    -- a 401 makes the client redeem again: with the newest refresh token, not the first
    sb:revoke()
    assert(c:request { url = org_url, scope = PC_SCOPE_V2 })
    assert.equal(2, #handed)
    local forms = token_requests(sb:log())
    assert.matches("grant_type=refresh_token", forms[2].body)
    assert.equal(2, #forms)

    -- the first one was rotated away: the sandbox refuses it as Entra does
    local stale <close> = core.new {
      refresh_token = { token_url = sb.pc_token_url_v2, client_id = sb.client_id, client_secret = sb.client_secret,
                        refresh_token = first },
    }
    local res, err = stale:request { url = org_url, scope = PC_SCOPE_V2 }
    assert.is_nil(res)
    assert.equal("auth", err.kind)
    assert.equal("invalid_grant", err.code)
    assert.equal(1, err.attempts)
    assert.not_matches(first, tostring(err), 1, true)
  end)

  it("keeps the new refresh token when on_refresh_token raises, and raises its error", function()
    local c <close> = core.new {
      refresh_token = { token_url = sb.pc_token_url_v2, client_id = sb.client_id, client_secret = sb.client_secret,
                        refresh_token = sb:refresh_token(), on_refresh_token = function() error("disk full") end },
    }
    assert.error_matches(function() c:request { url = org_url, scope = PC_SCOPE_V2 } end, "disk full")
  end)

  it("turns an Entra error into an auth error with its code and ids, tried once, without the secret", function()
    local wrong = "not-" .. sb.client_secret
    local c <close> = core.new {
      client_credentials = { token_url = sb.pc_token_url_v2, client_id = sb.client_id, client_secret = wrong },
    }
    local res, err = c:request { url = org_url, scope = PC_SCOPE_V2 }
    assert.is_nil(res)
    assert.equal("auth", err.kind)
    assert.equal("invalid_client", err.code)
    assert.matches("AADSTS7000215", err.message)
    assert.is_string(err.trace_id)
    assert.is_string(err.correlation_id)
    assert.equal(1, err.attempts)
    assert.equal(1, #token_requests(sb:log()))
    local all = tostring(err)
    for k, v in pairs(err) do all = all .. tostring(k) .. tostring(v) end
    assert.not_matches(wrong, all, 1, true)
  end)

  it("reports the Partner Center ids of a failed call: MS-RequestId, MS-CorrelationId, MS-CV", function()
    local c <close> = core.new { access_token = sb:pc_token(), max_retries = 0 }
    local rid, cid = core.uuid(), core.uuid()
    local res, err = c:request { url = sb.url .. "/v1/customers/" .. core.uuid() .. "/organization",
      scope = PC_SCOPE_V2, headers = { ["MS-RequestId"] = rid, ["MS-CorrelationId"] = cid } }
    assert.is_nil(res)
    assert.equal(404, err.status)
    assert.is_string(err.code)
    assert.equal(rid, err.request_id)
    assert.equal(cid, err.correlation_id)
    assert.is_string(err.cv)
  end)
end)
