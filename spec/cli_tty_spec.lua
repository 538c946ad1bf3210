-- The command line as a process (bin/partnercustomers) against the sandbox: Ctrl-C, progress and
-- table width in a pseudo-terminal (`script`), closed descriptors, an unwritable stdout, and the
-- environment a sandbox started by hand prints.
local sandbox = require "spec.helpers.sandbox"
local helpers = require "spec.helpers.util"
local format = require "partnercustomers.format"
local cjson = require "cjson"

local q = helpers.shell_quote
local COUNT = 23

-- The CLI as a child: the plain build, without `make asan`'s preload.
local CLI = "env -u LD_PRELOAD LUA_CPATH='./build/?.so;;' lua5.4 bin/partnercustomers"

describe("partnercustomers as a process", function()
  local sb

  setup(function() sb = sandbox.start { count = COUNT, seed = 5 } end)
  teardown(function() sb:stop() end)
  before_each(function() sb:faults {} end)

  local function exports(extra)
    local vars = {
      PARTNERCUSTOMERS_CLIENT_ID = sb.client_id, PARTNERCUSTOMERS_CLIENT_SECRET = sb.client_secret,
      PARTNERCUSTOMERS_BASE_URL = sb.url, PARTNERCUSTOMERS_TOKEN_URL = sb.token_url,
      PARTNERCUSTOMERS_PC_TENANT = sb.pc_tenant, PARTNERCUSTOMERS_PC_CLIENT_ID = sb.client_id,
      PARTNERCUSTOMERS_PC_CLIENT_SECRET = sb.client_secret, PARTNERCUSTOMERS_PC_BASE_URL = sb.url,
      PARTNERCUSTOMERS_PC_TOKEN_URL = sb.pc_token_url_v2, PARTNERCUSTOMERS_MAX_RETRIES = "0",
    }
    for k, v in pairs(extra or {}) do vars[k] = v end
    local parts = {}
    for k, v in pairs(vars) do parts[#parts + 1] = "export " .. k .. "=" .. q(v) end
    return table.concat(parts, "; ") .. "; "
  end

  -- Runs a shell script; returns its stdout.
  local function sh(script)
    local p = assert(io.popen("sh -c " .. q(script), "r"))
    local out = p:read("a")
    p:close()
    return out
  end

  -- Runs `cmd` in a pseudo-terminal of `cols` columns; returns what the terminal received.
  local function in_terminal(cmd, cols, extra)
    local inner = exports(extra) .. "stty cols " .. cols .. " rows 50; " .. cmd
    return sh("env -u LD_PRELOAD script -qec " .. q("sh -c " .. q(inner)) .. " /dev/null </dev/null")
  end

  it("ends on Ctrl-C within about half a second: exit 130, one line, no traceback", function()
    sb:faults { { type = "hang", max = 20, path = "^/partner/external/", times = 1 } }
    local errfile = os.tmpname()
    local out = sh(exports() .. ([[
      %s customers --format csv 2>%s &
      pid=$!
      sleep 1
      start=$(date +%%s%%N)
      kill -INT $pid
      wait $pid
      echo "$? $(( ($(date +%%s%%N) - start) / 1000000 ))"]]):format(CLI, q(errfile)))
    local rc, ms = out:match("(%d+) (%d+)")
    local err = helpers.read(errfile)
    os.remove(errfile)
    assert.equal("130", rc, err)
    assert.equal("partnercustomers: interrupted\n", err)
    assert.is_true(tonumber(ms) < 1000, "exited " .. ms .. " ms after SIGINT")
  end)

  it("shows progress on a terminal, never inside the rows it streams there", function()
    local text = in_terminal(CLI .. " customers --format ndjson --page-size 5", 120)
    assert.truthy(text:find("\r[^\n]-partnercustomers: 5 of 23 customers"), text)
    assert.truthy(text:find("23 of 23 customers", 1, true))
    local rows = 0
    for line in text:gmatch("[^\n]+") do
      if line:find('{"id"', 1, true) then
        rows = rows + 1
        -- what is left on screen of the line: after its last carriage return and erasure
        local shown = line:gsub("\r$", ""):match("([^\r]*)$"):gsub("^\27%[K", "")
        assert.matches('^{"id"', shown, 1, false)
        assert.not_matches("partnercustomers:", shown)
      end
    end
    assert.equal(COUNT, rows)
  end)

  it("says so on a terminal while the service makes it wait (Retry-After)", function()
    sb:faults { { type = "status", status = 429, retry_after = 2, path = "^/partner/external/",
                  after = 1, times = 1 } }
    local text = in_terminal(CLI .. " customers --format csv --page-size 5 >/dev/null", 120,
                             { PARTNERCUSTOMERS_MAX_RETRIES = "2" })
    assert.truthy(text:find("throttled, waiting 2 s", 1, true), text)
    assert.truthy(text:find("23 of 23 customers", 1, true), text)
  end)

  it("fits the table to the terminal's width, cells cut with …", function()
    local text = in_terminal(CLI .. " customers --no-progress", 60)
    local lines = {}
    for line in text:gmatch("([^\n]*)\n") do lines[#lines + 1] = (line:gsub("\r", "")) end
    assert.equal(COUNT + 2, #lines, text)
    local cut = 0
    for _, l in ipairs(lines) do
      assert.is_true(format.width(l) <= 60, l)
      if l:find("…", 1, true) then cut = cut + 1 end
    end
    assert.is_true(cut > 0)
    -- the same table to a pipe is not cut
    local piped = sh(exports() .. CLI .. " customers")
    assert.falsy(piped:find("…", 1, true))
  end)

  it("exits 1 with a message when stdout cannot be written (a full disk)", function()
    local errfile = os.tmpname()
    local out = sh(exports() .. CLI .. " customers --format csv >/dev/full 2>" .. q(errfile) .. "; echo $?")
    local err = helpers.read(errfile)
    os.remove(errfile)
    assert.equal("1\n", out)
    assert.matches("^partnercustomers: cannot write the output: No space left on device\n$", err)
  end)

  it("writes nothing into a socket when started with 0-2 closed", function()
    -- stdout closed: the rows go to /dev/null, not into libcurl's sockets, and the run succeeds
    local out = sh(exports() .. CLI .. " customers --format csv 1>&- 2>&- 0<&-; echo $?")
    assert.equal("0\n", out)
    -- what fd 1 is once the module loaded and a client made its sockets
    local probe = "local core = require 'partnercustomers.core'; core.reopen_std(); " ..
      "local c = core.new {}; os.execute('readlink /proc/$PPID/fd/1 >&3'); c:close()"
    out = sh("exec 3>&1; env -u LD_PRELOAD LUA_CPATH='./build/?.so;;' lua5.4 -e " .. q(probe)
             .. " 0<&- 1>&- 2>&-")
    assert.equal("/dev/null\n", out)
  end)

  it("a sandbox started by hand (on a terminal) prints the environment that points the command line at it", function()
    local pipe = assert(io.popen("env -u LD_PRELOAD script -qec " .. q("env -u LD_PRELOAD LUA_CPATH='./build/?.so;;' "
      .. "PARTNERCUSTOMERS_SANDBOX_SECRET= lua5.4 bin/partnercustomers sandbox --port 0 --quiet "
      .. "--count 7 --idle-timeout 20") .. " /dev/null </dev/null", "r"))
    local function read_line()
      local l = pipe:read("l")
      return l and (l:gsub("\r$", ""))
    end
    local first = read_line()
    local url = first:match("^partnercustomers sandbox listening on (http://127%.0%.0%.1:%d+)$")
    assert.is_string(url)
    local lines, vars = {}, {}
    repeat
      local l = read_line()
      lines[#lines + 1] = l
    until not l or l:find("^export PARTNERCUSTOMERS_PC_TOKEN_URL=")
    for _, l in ipairs(lines) do
      local k, v = l:match("^export (PARTNERCUSTOMERS_[%w_]+)=(.*)$")
      if k then vars[k] = v end
    end
    assert.equal(url, vars.PARTNERCUSTOMERS_BASE_URL)
    assert.equal(url .. "/connect/token", vars.PARTNERCUSTOMERS_TOKEN_URL)
    assert.equal(url, vars.PARTNERCUSTOMERS_PC_BASE_URL)
    assert.matches("^" .. url:gsub("%p", "%%%0") .. "/", vars.PARTNERCUSTOMERS_PC_TOKEN_URL)
    assert.matches("^%x+$", vars.PARTNERCUSTOMERS_CLIENT_SECRET) -- the random one, shown
    -- those lines alone, in a clean environment, list the sandbox's customers
    local script = {}
    for _, l in ipairs(lines) do script[#script + 1] = l end
    local out = sh("env -i PATH=\"$PATH\" LUA_PATH=\"$LUA_PATH\" sh -c "
      .. q(table.concat(script, "\n") .. "\n" .. CLI .. " customers --format json; "
           .. CLI .. " customers --source partnercenter --format json"))
    local ave, rest = out:match("^(%b[])%s*(.*)$")
    assert.equal(7, #cjson.decode(ave))
    assert.is_true(#cjson.decode(rest) >= 7) -- every customer has a tenant or more
    sandbox.curl { method = "POST", url = url .. "/_sandbox/shutdown" }
    pipe:close()
  end)
end)
