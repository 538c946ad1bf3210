-- The version is written once (PC_VERSION in csrc/pc.h): everything else that names it agrees.
local helpers = require "spec.helpers.util"

local function read(path) return helpers.read(helpers.ROOT .. "/" .. path) end

describe("the version", function()
  local core = require "partnercustomers.core"
  local version = read("csrc/pc.h"):match('\n#define PC_VERSION "([^"]+)"')

  it("is defined once in csrc/pc.h and is what the core and the module report", function()
    assert.matches("^%d+%.%d+%.%d+$", version)
    assert.equal("partnercustomers " .. version, core._VERSION)
    assert.equal(core._VERSION, require("partnercustomers")._VERSION)
  end)

  it("names the one rockspec, its version and its source tag", function()
    local p = assert(io.popen("cd " .. helpers.shell_quote(helpers.ROOT) .. " && ls *.rockspec"))
    local names = {}
    for name in p:lines() do names[#names + 1] = name end
    p:close()
    assert.same({ "partnercustomers-" .. version .. "-1.rockspec" }, names)
    local spec = {}
    assert(load(read(names[1]), names[1], "t", spec))()
    assert.equal(version .. "-1", spec.version)
    assert.equal("v" .. version, spec.source.tag)
  end)

  it("is the first entry of CHANGELOG.md", function()
    assert.equal(version, read("CHANGELOG.md"):match("\n## (%S+)"))
  end)
end)
