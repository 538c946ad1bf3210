local job_status = require "partnercustomers.job_status"

describe("job_status", function()
  local LABELS = { [0] = "N/A", "Working", "Failed", "Waiting for Configuration",
                   "Multiple Issues Found", "Finished with Exception", "No Backup Update" }

  it("has the labels of doc/API.md, indexed from 0", function()
    for code = 0, 6 do assert.equal(LABELS[code], job_status.labels[code]) end
    assert.is_nil(job_status.labels[7])
    assert.equal(6, #job_status.labels)
    local n = 0
    for i, label in ipairs(job_status.labels) do
      n = n + 1
      assert.equal(LABELS[i], label)
    end
    assert.equal(6, n)
    local seen = {}
    for k, v in pairs(job_status.labels) do seen[k] = v end
    assert.same(LABELS, seen)
  end)

  it("refuses assignment to labels", function()
    assert.error_matches(function() job_status.labels[1] = "x" end, "read%-only")
    assert.error_matches(function() job_status.labels[7] = "x" end, "read%-only")
    assert.equal("Working", job_status.labels[1])
    assert.is_nil(job_status.labels[7])
    assert.error(function() setmetatable(job_status.labels, nil) end)
  end)

  it("maps integer codes", function()
    for code = 0, 6 do
      assert.equal(LABELS[code], job_status.name(code))
      local c = job_status.code(code)
      assert.equal(code, c)
      assert.equal("integer", math.type(c))
    end
  end)

  it("maps integral floats and numeric strings", function()
    assert.equal("Multiple Issues Found", job_status.name(4.0))
    assert.equal("integer", math.type(job_status.code(4.0)))
    assert.equal(3, job_status.code("3"))
    assert.equal(3, job_status.code(" 3 "))
    assert.equal("Waiting for Configuration", job_status.name("03"))
    assert.equal("N/A", job_status.name("0"))
  end)

  it("maps labels of both doc versions, in any case", function()
    local cases = {
      ["N/A"] = 0, ["n/a"] = 0, ["NA"] = 0, ["na"] = 0,
      ["Working"] = 1, ["WORKING"] = 1, ["working"] = 1,
      ["Failed"] = 2, ["failed"] = 2,
      ["Waiting for Configuration"] = 3, ["Waiting For Configuration"] = 3,
      ["waiting_for_configuration"] = 3, ["  waiting   for configuration "] = 3,
      ["Multiple Issues Found"] = 4, ["Multiple issues found"] = 4,
      ["Finished with Exception"] = 5, ["Finished With Exceptions"] = 5,
      ["No Backup Update"] = 6, ["No backup updates"] = 6, ["no backup update"] = 6,
      ["No Backup Updates"] = 6, ["no-backup-update"] = 6,
    }
    for label, code in pairs(cases) do
      assert.equal(code, job_status.code(label), label)
      assert.equal(LABELS[code], job_status.name(label), label)
    end
  end)

  it("gives nil for anything else", function()
    for _, x in ipairs { 7, -1, 3.5, "7", "-1", "3.5", "0x3", "3a", "", " ", "Workin",
                         "Working!", "No", "Backup", "unknown", true, false, {}, print,
                         0 / 0, math.huge, math.maxinteger } do
      assert.is_nil(job_status.name(x), tostring(x))
      assert.is_nil(job_status.code(x), tostring(x))
    end
    assert.is_nil(job_status.name(nil))
    assert.is_nil(job_status.code())
  end)
end)
