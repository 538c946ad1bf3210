-- Every ```lua block of README.md runs as it is, against a sandbox (bin/with-sandbox sets the
-- PARTNERCUSTOMERS_* variables the snippets read), in a directory holding the key.pem and cert.pem
-- the Certificates snippet names (made for this run; the sandbox trusts the certificate). A block
-- whose every print carries a `--> expected` note must print that (whitespace aside).
local helpers = require "spec.helpers.util"

local read = helpers.read

local function blocks_of(text)
  local out = {}
  for block in text:gmatch("\n```lua\n(.-)\n```") do out[#out + 1] = block end
  return out
end

-- Runs in the child: each block in its own environment (pc preloaded, print captured), one line
-- of result per block and per printed line.
local RUNNER = [[
local blocks = assert(load("return " .. io.read("a")))()
for i, block in ipairs(blocks) do
  local env = setmetatable({ pc = require "partnercustomers" }, { __index = _G })
  env.print = function(...)
    local parts = table.pack(...)
    for k = 1, parts.n do parts[k] = tostring(parts[k]) end
    io.write(("OUT %d %s\n"):format(i, (table.concat(parts, "\t"):gsub("\n", " "))))
  end
  local chunk, err = load(block, "=README.md lua block " .. i, "t", env)
  local ok
  if chunk then ok, err = pcall(chunk) end
  io.write(ok and ("OK %d\n"):format(i) or ("FAIL %d %s\n"):format(i, (tostring(err):gsub("\n", " "))))
end
]]

describe("README.md's Lua snippets", function()
  local root = (function() -- absolute: the snippets run in a directory of their own
    local p = assert(io.popen("cd " .. helpers.shell_quote(helpers.ROOT) .. " && pwd"))
    local dir = p:read("l")
    p:close()
    return dir
  end)()
  local blocks = blocks_of(read(root .. "/README.md"))
  local dir, results

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    local q = helpers.shell_quote
    helpers.sh("mkdir -m 700 " .. q(dir) .. " && cd " .. q(dir) .. " && openssl req -x509 -newkey rsa:2048"
               .. " -sha256 -days 1 -subj /CN=readme -noenc -keyout key.pem -out cert.pem 2>/dev/null")
    local f = assert(io.open(dir .. "/runner.lua", "w"))
    f:write(RUNNER)
    f:close()
    local quoted = {}
    for i, b in ipairs(blocks) do quoted[i] = ("%q"):format(b) end
    f = assert(io.open(dir .. "/blocks", "w"))
    f:write("{", table.concat(quoted, ",\n"), "}")
    f:close()
    local cmd = "cd " .. q(dir) .. " && env -u LD_PRELOAD"
      .. " LUA_PATH=" .. q(root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;")
      .. " LUA_CPATH=" .. q(root .. "/build/?.so;;")
      -- --approve-devices: the device login snippet has no one at a browser to approve its code
      .. " SANDBOX_ARGS=" .. q("--quiet --approve-devices --client-cert " .. dir .. "/cert.pem")
      .. " " .. q(root .. "/bin/with-sandbox") .. " lua5.4 runner.lua < blocks 2>&1"
    local p = assert(io.popen(cmd))
    results = p:read("a")
    p:close()
  end)
  teardown(function() os.execute("rm -rf " .. helpers.shell_quote(dir)) end)

  it("are found: the module's use, job status names, Partner Center and certificates", function()
    assert.is_true(#blocks >= 4, "lua blocks in README.md: " .. #blocks)
  end)

  it("each run without an error", function()
    for i = 1, #blocks do
      assert.matches("\nOK " .. i .. "\n", "\n" .. results, nil, true)
    end
  end)

  it("print what their --> notes say, and the listing prints the sandbox's customers", function()
    local printed = {}
    for i, line in results:gmatch("OUT (%d+) ([^\n]*)") do
      i = tonumber(i)
      printed[i] = printed[i] or {}
      table.insert(printed[i], (line:gsub("%s+", " ")))
    end
    local checked = 0
    for i, block in ipairs(blocks) do
      local notes, prints = {}, 0
      for line in block:gmatch("[^\n]+") do
        if line:find("^%s*print%(") then
          prints = prints + 1
          notes[#notes + 1] = line:match("%-%->%s*(.-)%s*$")
        end
      end
      if prints > 0 and #notes == prints then
        for k, note in ipairs(notes) do notes[k] = note:gsub("%s+", " ") end
        assert.same(notes, printed[i])
        checked = checked + 1
      end
    end
    assert.is_true(checked >= 1)
    assert.is_true(#(printed[1] or {}) >= 10, results) -- the sandbox has more customers than that
  end)
end)
