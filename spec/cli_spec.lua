-- The command line, run in-process (cli.main with a fake environment and captured output)
-- against the real sandbox, and once through bin/partnercustomers.
local cli = require "partnercustomers.cli"
local sandbox = require "spec.helpers.sandbox"
local cjson = require "cjson"

local COUNT = 23

local function sink()
  local parts = {}
  return {
    write = function(self, ...)
      for _, s in ipairs { ... } do parts[#parts + 1] = tostring(s) end
      return self
    end,
    text = function() return table.concat(parts) end,
  }
end

local function lines(text, sep)
  local out = {}
  for l in text:gmatch("(.-)" .. (sep or "\n")) do out[#out + 1] = l end
  return out
end

describe("partnercustomers command line", function()
  local sb, expected
  local outputs = {} -- everything any run printed, checked for secrets at the end

  setup(function()
    sb = sandbox.start { count = COUNT, seed = 11, odata_page_size = 10 }
    expected = sb:customers()
  end)
  teardown(function()
    local all = table.concat(outputs)
    assert.truthy(#all > 0)
    assert.falsy(all:find(sb.client_secret, 1, true), "the client secret was printed")
    sb:stop()
  end)
  before_each(function()
    sb:faults {}
    sb:clear_log()
  end)

  local function env(extra)
    local e = {
      PARTNERCUSTOMERS_CLIENT_ID = sb.client_id,
      PARTNERCUSTOMERS_CLIENT_SECRET = sb.client_secret,
      PARTNERCUSTOMERS_BASE_URL = sb.url,
      PARTNERCUSTOMERS_TOKEN_URL = sb.token_url,
      PARTNERCUSTOMERS_TIMEOUT = "5",
      PARTNERCUSTOMERS_MAX_RETRIES = "0", -- the CLI sleeps for real between retries
    }
    for k, v in pairs(extra or {}) do
      if v == false then e[k] = nil else e[k] = v end
    end
    return e
  end

  -- Runs the CLI; returns exit code, stdout, stderr.
  local function run(args, e)
    local out, err = sink(), sink()
    local rc = cli.main(args, e or env(), out, err)
    outputs[#outputs + 1] = out.text() .. err.text()
    return rc, out.text(), err.text()
  end

  local ids = require("spec.helpers.util").ids_of

  describe("formats", function()
    it("json: one array of every v3 customer", function()
      local rc, out, err = run { "customers", "--format", "json" }
      assert.equal(0, rc, err)
      assert.equal("", err)
      local list = cjson.decode(out)
      assert.same(ids(expected), ids(list))
      assert.equal("table", type(list[1].tenants))
    end)

    it("ndjson: one object per line", function()
      local rc, out = run { "customers", "--format=ndjson" }
      assert.equal(0, rc)
      local got = {}
      for _, l in ipairs(lines(out)) do got[#got + 1] = cjson.decode(l) end
      assert.same(ids(expected), ids(got))
    end)

    it("csv: a header and a row per customer", function()
      local rc, out = run { "customers", "--format", "csv", "--page-size", "5" }
      assert.equal(0, rc)
      local rows = lines(out, "\r\n")
      assert.matches("^id,organization,ownerEmail,jobStatus,", rows[1])
      -- ids are GUIDs, so the first field never needs quotes; rows may span lines
      local got = {}
      for id in out:gmatch("\r\n(%x+%-%x+%-%x+%-%x+%-%x+),") do got[#got + 1] = id end
      assert.same(ids(expected), got)
    end)

    it("table: aligned columns", function()
      local rc, out = run { "customers" }
      assert.equal(0, rc)
      local ls = lines(out)
      assert.equal(COUNT + 2, #ls)
      assert.matches("^ID%s+Organization%s+Owner e%-mail%s+Job status%s+Country%s+Mode%s+Tenants$", ls[1])
      -- ids are GUIDs (36 ASCII characters): the organizations start where the header says
      local org = ls[1]:find("Organization", 1, true)
      for i = 3, #ls do
        assert.equal(expected[i - 2].id, ls[i]:sub(1, 36))
        assert.equal(org, ls[i]:find("%S", 37))
      end
    end)

    it("the same with --parallel, --v3 batch and --source avepoint", function()
      local _, streamed = run { "customers", "--format", "ndjson" }
      local rc, out = run { "customers", "--format", "ndjson", "--parallel", "2" }
      assert.equal(0, rc)
      assert.equal(streamed, out)
      sb:clear_log()
      rc, out = run { "customers", "--format", "ndjson", "--v3", "batch" }
      assert.equal(0, rc)
      assert.equal(streamed, out)
      for _, e in ipairs(sb:log()) do
        if e.path ~= "/connect/token" then
          assert.equal("POST", e.method)
          assert.matches("/batch$", e.path)
        end
      end
      rc, out = run { "customers", "--source", "avepoint", "--format", "ndjson" }
      assert.equal(0, rc)
      local got = {}
      for _, l in ipairs(lines(out)) do got[#got + 1] = cjson.decode(l) end
      assert.same(ids(expected), ids(got))
    end)
  end)

  describe("--status", function()
    local LABELS = { [0] = "N/A", "Working", "Failed", "Waiting for Configuration",
                     "Multiple Issues Found", "Finished with Exception", "No Backup Update" }

    local function expected_with(code)
      local out = {}
      for _, c in ipairs(expected) do
        if c.jobStatus == code then out[#out + 1] = c.id end
      end
      return out
    end

    it("keeps the customers with that status, in any spelling", function()
      for _, case in ipairs { { "Failed", 2 }, { "failed", 2 }, { "2", 2 },
                              { "no backup updates", 6 }, { "n/a", 0 } } do
        local label, code = case[1], case[2]
        for _, source in ipairs { "avepoint-v3", "avepoint" } do
          local rc, out = run { "customers", "--format", "ndjson", "--status", label,
                                "--source", source }
          assert.equal(0, rc)
          local got = {}
          for _, l in ipairs(lines(out)) do
            local c = cjson.decode(l)
            assert.equal(LABELS[code], c.jobStatus)
            got[#got + 1] = c.id
          end
          assert.same(expected_with(code), got)
          assert.truthy(#got > 0, label) -- the sandbox plants every status
        end
      end
    end)

    it("refuses an unknown status", function()
      local rc, out, err = run { "customers", "--status", "Sleeping" }
      assert.equal(2, rc)
      assert.equal("", out)
      assert.matches("unknown job status 'Sleeping'", err)
      assert.equal(0, #sb:log()) -- refused before any request
    end)
  end)

  describe("exit codes", function()
    it("0 for --help and --version", function()
      local rc, out = run { "--help" }
      assert.equal(0, rc)
      for _, var in ipairs { "CLIENT_ID", "CLIENT_SECRET", "ACCESS_TOKEN", "ENVIRONMENT",
                             "BASE_URL", "TOKEN_URL", "CA_FILE", "PROXY", "TIMEOUT",
                             "MAX_RETRIES" } do
        assert.truthy(out:find("PARTNERCUSTOMERS_" .. var, 1, true), var)
      end
      rc, out = run { "customers", "--help" }
      assert.equal(0, rc)
      assert.matches("^Usage", out)
      rc, out = run { "--version" }
      assert.equal(0, rc)
      assert.equal("partnercustomers 0.1.0\n", out)
    end)

    it("2 for misuse, with a message on stderr only", function()
      local cases = {
        { {} },
        { { "frobnicate" } },
        { { "customers", "extra" } },
        { { "customers", "--format", "xml" } },
        { { "customers", "--format" } },
        { { "customers", "--progress=yes" } },
        { { "customers", "--page-size", "0" } },
        { { "customers", "--page-size", "101" } },
        { { "customers", "--page-size", "ten" } },
        { { "customers", "--parallel", "0" } },
        { { "customers", "--v3", "post" } },
        { { "customers", "--source", "elsewhere" } },
        { { "customers", "--source", "partnercenter" }, "not available yet" },
        { { "customers", "--source", "avepoint", "--page-size", "10" } },
        { { "organization", "00000000-0000-0000-0000-000000000000" }, "not available yet" },
        { { "report" }, "not available yet" },
        { { "customers" }, "no credentials",
          env { PARTNERCUSTOMERS_CLIENT_ID = false, PARTNERCUSTOMERS_CLIENT_SECRET = false } },
        { { "customers" }, "PARTNERCUSTOMERS_CLIENT_SECRET is not set",
          env { PARTNERCUSTOMERS_CLIENT_SECRET = "" } },
        { { "customers" }, "not both", env { PARTNERCUSTOMERS_ACCESS_TOKEN = "tok-123456" } },
        { { "customers" }, "PARTNERCUSTOMERS_TIMEOUT", env { PARTNERCUSTOMERS_TIMEOUT = "soon" } },
        { { "customers" }, "PARTNERCUSTOMERS_TIMEOUT", env { PARTNERCUSTOMERS_TIMEOUT = "-1" } },
        { { "customers" }, "PARTNERCUSTOMERS_MAX_RETRIES",
          env { PARTNERCUSTOMERS_MAX_RETRIES = "99" } },
        { { "customers" }, "PARTNERCUSTOMERS_ENVIRONMENT",
          env { PARTNERCUSTOMERS_ENVIRONMENT = "moon" } },
        { { "customers" }, "PARTNERCUSTOMERS_BASE_URL",
          env { PARTNERCUSTOMERS_BASE_URL = "http://graph.example.com" } },
      }
      for _, case in ipairs(cases) do
        local args, needle, e = case[1], case[2], case[3]
        local rc, out, err = run(args, e)
        local what = table.concat(args, " ")
        assert.equal(2, rc, what)
        assert.equal("", out, what)
        assert.matches("^partnercustomers: ", err, what)
        if needle then assert.truthy(err:find(needle, 1, true), what .. ": " .. err) end
      end
      assert.equal(0, #sb:log()) -- no misuse reached the service
    end)

    it("1 when the service fails, with one line on stderr", function()
      sb:faults { { type = "status", status = 500, path = "^/partner/", times = -1 } }
      for _, args in ipairs { { "customers" }, { "customers", "--format", "ndjson" },
                              { "customers", "--source", "avepoint" } } do
        local rc, _, err = run(args)
        assert.equal(1, rc)
        assert.matches("^partnercustomers: http error 500[^\n]*\n$", err)
      end
    end)

    it("1 when the secret is refused, without printing it", function()
      local wrong = "wrong-secret-" .. sb.client_secret:sub(1, 8)
      local rc, out, err = run({ "customers" }, env { PARTNERCUSTOMERS_CLIENT_SECRET = wrong })
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("auth", err)
      assert.falsy((out .. err):find(wrong, 1, true))
    end)

    it("1 after what streamed before the failure", function()
      sb:faults { { type = "status", status = 500, path = "^/partner/", after = 1, times = -1 } }
      local rc, out, err = run { "customers", "--format", "ndjson", "--page-size", "10" }
      assert.equal(1, rc)
      assert.equal(10, #lines(out))
      assert.matches("^partnercustomers: http error 500", err)
    end)

    it("1 when the output cannot be written", function()
      local broken = { write = function() return nil, "No space left on device" end }
      local err = sink()
      local rc = cli.main({ "customers", "--format", "csv" }, env(), broken, err)
      assert.equal(1, rc)
      assert.matches("No space left on device", err.text())
    end)
  end)

  it("works with an access token from the environment", function()
    local token = sb:token("elements.customers.read.all")
    local rc, out, err = run({ "customers", "--format", "json" },
      env { PARTNERCUSTOMERS_CLIENT_ID = false, PARTNERCUSTOMERS_CLIENT_SECRET = false,
            PARTNERCUSTOMERS_ACCESS_TOKEN = token })
    assert.equal(0, rc, err)
    assert.equal(COUNT, #cjson.decode(out))
    assert.falsy((out .. err):find(token, 1, true))
  end)

  it("reports progress on stderr with --progress only", function()
    local rc, _, err = run { "customers", "--format", "csv", "--page-size", "10", "--progress" }
    assert.equal(0, rc)
    assert.equal("partnercustomers: page 1 of 3\npartnercustomers: page 2 of 3\n"
                 .. "partnercustomers: page 3 of 3\n", err)
    rc, _, err = run { "customers", "--page-size", "10", "--progress" }
    assert.equal(0, rc)
    assert.equal("partnercustomers: page 1 of 3\npartnercustomers: page 2 of 3\n"
                 .. "partnercustomers: page 3 of 3\n", err)
    rc, _, err = run { "customers", "--page-size", "10" }
    assert.equal(0, rc)
    assert.equal("", err)
  end)

  it("runs as bin/partnercustomers with the exit codes above", function()
    local function sh(cmd, vars)
      local prefix = {}
      for k, v in pairs(vars or {}) do prefix[#prefix + 1] = k .. "='" .. v .. "'" end
      local p = io.popen(table.concat(prefix, " ") .. " " .. cmd .. " 2>/dev/null")
      local out = p:read("a")
      local _, _, code = p:close()
      outputs[#outputs + 1] = out
      return code, out
    end
    local code, out = sh("lua5.4 bin/partnercustomers --version")
    assert.equal(0, code)
    assert.equal("partnercustomers 0.1.0\n", out)
    code = sh("lua5.4 bin/partnercustomers customers --format xml")
    assert.equal(2, code)
    code, out = sh("lua5.4 bin/partnercustomers sandbox --help") -- the sandbox's own help
    assert.equal(0, code)
    assert.matches("^usage: partnercustomers sandbox", out)
    code, out = sh("bin/partnercustomers customers --format ndjson", env())
    assert.equal(0, code)
    assert.equal(COUNT, #lines(out))
    code = sh("lua5.4 bin/partnercustomers customers", env { PARTNERCUSTOMERS_BASE_URL = "http://127.0.0.1:9" })
    assert.equal(1, code)
  end)
end)
