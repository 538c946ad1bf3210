-- Test helper: a forward-proxy peer in a child process (lua-socket), on 127.0.0.1 port 0.
-- It records the request line of every connection it accepts, answers 403 and closes; it stops
-- by itself after `lifetime` seconds.
--
--   local peer = proxy_peer.start()   -- peer.url ("http://127.0.0.1:PORT"), peer:lines(), peer:stop()

local helpers = require "spec.helpers.util"

local M = {}

local SERVER = [[
local socket = require "socket"
local out, lifetime = arg[1], tonumber(arg[2])
local srv = assert(socket.bind("127.0.0.1", 0))
srv:settimeout(0.2)
local _, port = srv:getsockname()
io.stdout:write(port, "\n")
io.stdout:flush()
local deadline = socket.gettime() + lifetime
while socket.gettime() < deadline do
  local c = srv:accept()
  if c then
    c:settimeout(2)
    local line = c:receive("*l")
    local f = io.open(out, "a")
    f:write((line or ""), "\n")
    f:close()
    c:send("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    c:close()
  end
end
]]

function M.start(lifetime)
  local file = os.tmpname()
  local script = os.tmpname()
  helpers.write(script, SERVER)
  local cmd = ("env -u LD_PRELOAD lua5.4 %s %s %d"):format(helpers.shell_quote(script),
                                                          helpers.shell_quote(file), lifetime or 20)
  local proc = assert(io.popen(cmd, "r"))
  local port = assert(tonumber(proc:read("l")), "the proxy peer did not start")
  local peer = { url = "http://127.0.0.1:" .. port, proc = proc, file = file, script = script }
  function peer:lines()
    local t = {}
    local f = io.open(self.file)
    if f then
      for l in f:lines() do t[#t + 1] = l end
      f:close()
    end
    return t
  end
  function peer:stop()
    -- the peer ends at its deadline; reading to the end waits for that, so close without it
    os.execute("env -u LD_PRELOAD pkill -f " .. helpers.shell_quote(self.script) .. " >/dev/null 2>&1")
    self.proc:close()
    os.remove(self.file)
    os.remove(self.script)
  end
  return peer
end

return M
