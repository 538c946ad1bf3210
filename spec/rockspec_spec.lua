-- The rockspec installs what the checkout has: every Lua module under lua/ by its module name, every
-- C source of the core, and the command. (.ci/check-rock installs it and runs it.)
local helpers = require "spec.helpers.util"

local function lines(cmd)
  local p = assert(io.popen("cd " .. helpers.shell_quote(helpers.ROOT) .. " && " .. cmd))
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

describe("the rockspec", function()
  local name = lines("ls partnercustomers-*.rockspec")[1]
  local spec = {}
  local f = assert(io.open(helpers.ROOT .. "/" .. name))
  assert(load(f:read("a"), name, "t", spec))()
  f:close()
  local modules = spec.build.modules

  it("maps every Lua file under lua/ to its module name", function()
    local want = {}
    for _, file in ipairs(lines("find lua -name '*.lua' | sort")) do
      local mod = file:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
      want[mod] = file
    end
    local got = {}
    for mod, file in pairs(modules) do
      if type(file) == "string" then got[mod] = file end
    end
    assert.same(want, got)
  end)

  it("compiles every C source of the core and installs the command", function()
    local sources = {}
    for _, s in ipairs(modules["partnercustomers.core"].sources) do sources[#sources + 1] = s end
    table.sort(sources)
    assert.same(lines("ls csrc/*.c | sort"), sources)
    assert.equal("bin/partnercustomers", spec.build.install.bin.partnercustomers)
  end)

  it("declares the license that LICENSE holds", function()
    local l = assert(io.open(helpers.ROOT .. "/LICENSE")):read("a")
    assert.equal("MIT", spec.description.license)
    assert.matches("^MIT License\n", l)
  end)
end)
