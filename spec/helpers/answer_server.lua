-- Test helper: an HTTP server on 127.0.0.1 (a child process, lua-socket) that answers each
-- request with bytes the case chooses: status, header lines and body, per path. Unlike the
-- sandbox's fault rules (sent on a curl command line), an answer can be megabytes long.
--
--   local answer_server = require "spec.helpers.answer_server"
--   local srv = answer_server.start()      -- srv.url ("http://127.0.0.1:PORT")
--   srv:answer { ["/token"] = {400, {"Content-Type: application/json"}, body}, ["*"] = {...} }
--   srv:stop()                             -- also stops by itself after two minutes
--
-- Every answer carries Content-Length and Connection: close; the request is read (headers and a
-- Content-Length body) and otherwise ignored.
local util = require "spec.helpers.util"

local M = {}

-- The server: answers[path] (or answers["*"]) from the Lua file the case writes, read anew for
-- each connection. It stops when the stop file appears, or after `lifetime` seconds.
local SERVER = [[
local socket = require "socket"
local file, lifetime = arg[1], tonumber(arg[2])
local srv = assert(socket.bind("127.0.0.1", 0))
srv:settimeout(0.05)
local _, port = srv:getsockname()
io.stdout:write(port, "\n")
io.stdout:flush()
local deadline = socket.gettime() + lifetime
local function stopped()
  local f = io.open(file .. ".stop", "rb")
  if f then f:close() end
  return f ~= nil
end
while socket.gettime() < deadline and not stopped() do
  local c = srv:accept()
  if c then
    c:settimeout(5)
    local path, len = "", 0
    repeat
      local line = c:receive("*l")
      path = (line and path == "" and line:match("^%u+ (%S+)")) or path
      len = tonumber(line and line:lower():match("^content%-length:%s*(%d+)")) or len
    until not line or line == ""
    if len > 0 then c:receive(len) end
    local answers = dofile(file)
    c:send(answers[path] or answers["*"] or "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    c:close()
  end
end
]]

function M.start()
  local file, script = os.tmpname(), os.tmpname()
  util.write(script, SERVER)
  util.write(file, "return {}")
  -- the sanitizer preload of `make asan` is for the module under test, not for its peers
  local cmd = ("env -u LD_PRELOAD lua5.4 %s %s 120"):format(util.shell_quote(script), util.shell_quote(file))
  local proc = assert(io.popen(cmd, "r"))
  local port = assert(tonumber(proc:read("l")), "the answer server did not start")
  local srv = { url = "http://127.0.0.1:" .. port }

  -- answers: path -> {status, header lines, body}
  function srv:answer(answers)
    local out = { "return {" }
    for path, a in pairs(answers) do
      local lines = { ("HTTP/1.1 %d Status"):format(a[1]) }
      for _, h in ipairs(a[2] or {}) do lines[#lines + 1] = h end
      lines[#lines + 1] = "Content-Length: " .. #(a[3] or "")
      lines[#lines + 1] = "Connection: close"
      local bytes = table.concat(lines, "\r\n") .. "\r\n\r\n" .. (a[3] or "")
      out[#out + 1] = ("[%q] = %q,"):format(path, bytes)
    end
    out[#out + 1] = "}"
    util.write(file, table.concat(out, "\n"))
  end

  function srv:stop()
    util.write(file .. ".stop", "")
    proc:read("a") -- returns once the server has seen the stop file and exited
    proc:close()
    for _, f in ipairs { file, file .. ".stop", script } do os.remove(f) end
  end
  return srv
end

return M
