-- Test helper: a raw hostile HTTP peer in a child process (spec/helpers/rawpeer_server.lua),
-- driven per case over a control connection. It writes bytes, not HTTP: a case can break
-- framing, status lines, headers and connections as it likes.
--
--   local rawpeer = require "spec.helpers.rawpeer"
--   local peer = rawpeer.start()            -- listens on 127.0.0.1, port 0; peer.url, peer.port
--   peer:script { token = {answer, ...}, api = {answer, ...} }
--   ... run the client against peer.url (token endpoint: peer.url .. "/token") ...
--   peer:log()   -- the requests received: {role, n, conn, seq, method, path, head, body}
--   peer:stop()  -- also on <close> and collection; the child stops by itself anyway
--
-- An answer is a list of actions (see the server); the builders below make the usual ones:
--   rawpeer.response(200, {"Content-Type: application/json"}, body) -> bytes (adds Content-Length)
--   rawpeer.send(bytes) rawpeer.then_close(bytes) rawpeer.then_reset(bytes) rawpeer.then_hang(bytes)
--   rawpeer.json(status, body, headers) rawpeer.chunked{...} rawpeer.drip(bytes, pause) rawpeer.HANG
-- The module also holds the codec of the control frames, which the server shares (it needs
-- nothing but LuaSocket at load time).
local socket = require "socket"

local M = {}

------------------------------------------------------------------------------------------------
-- Codec: plain data (strings of any bytes, numbers, booleans, tables) as a Lua literal.

local function encode(v, out)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = ("%q"):format(v)
  elseif t == "number" then
    out[#out + 1] = math.type(v) == "integer" and ("%d"):format(v) or ("%.17g"):format(v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif t == "table" then
    out[#out + 1] = "{"
    for k, x in pairs(v) do
      out[#out + 1] = "["
      encode(k, out)
      out[#out + 1] = "]="
      encode(x, out)
      out[#out + 1] = ","
    end
    out[#out + 1] = "}"
  else
    error("rawpeer codec: cannot send a " .. t, 2)
  end
end

function M.encode(v)
  local out = {}
  encode(v, out)
  return table.concat(out)
end

function M.decode(s)
  return assert(load("return " .. s, "=rawpeer frame", "t", {}))()
end

------------------------------------------------------------------------------------------------
-- Answers

local REASONS = {
  [200] = "OK", [204] = "No Content", [301] = "Moved Permanently", [302] = "Found",
  [303] = "See Other", [304] = "Not Modified", [307] = "Temporary Redirect",
  [308] = "Permanent Redirect", [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [429] = "Too Many Requests", [500] = "Internal Server Error",
  [503] = "Service Unavailable",
}

-- The bytes of a response: status is a number or a whole status line; headers are lines
-- ("Name: value"); Content-Length is added unless a header line frames the body already.
function M.response(status, headers, body)
  body = body or ""
  local lines = { type(status) == "number" and ("HTTP/1.1 %d %s"):format(status, REASONS[status] or "Status")
                  or status }
  local framed = false
  for _, h in ipairs(headers or {}) do
    lines[#lines + 1] = h
    local name = (h:match("^([^:]*):") or ""):lower()
    framed = framed or name == "content-length" or name == "transfer-encoding"
  end
  if not framed then lines[#lines + 1] = "Content-Length: " .. #body end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. body
end

-- A chunked body: each element of `chunks` is a chunk; the zero chunk ends it.
function M.chunked(chunks)
  local out = {}
  for _, c in ipairs(chunks) do out[#out + 1] = ("%x\r\n%s\r\n"):format(#c, c) end
  out[#out + 1] = "0\r\n\r\n"
  return table.concat(out)
end

function M.send(bytes) return { { send = bytes } } end
function M.then_close(bytes) return { { send = bytes }, { close = true } } end
-- the pause lets the client read what was sent before the reset arrives
function M.then_reset(bytes) return { { send = bytes }, { pause = 0.05 }, { reset = true } } end
function M.then_hang(bytes) return { { send = bytes }, { hang = true } } end
M.HANG = { { hang = true } }
M.CLOSE = { { close = true } }
M.RESET = { { reset = true } }

-- One byte at a time, `pause` seconds apart.
function M.drip(bytes, pause)
  local actions = {}
  for i = 1, #bytes do
    actions[#actions + 1] = { send = bytes:sub(i, i) }
    actions[#actions + 1] = { pause = pause }
  end
  return actions
end

-- A JSON answer (body is the JSON text, sent as it is).
function M.json(status, body, headers)
  local h = { "Content-Type: application/json" }
  for _, line in ipairs(headers or {}) do h[#h + 1] = line end
  return M.send(M.response(status, h, body))
end

------------------------------------------------------------------------------------------------
-- The child process

local Peer = {}
Peer.__index = Peer

function Peer:call(msg)
  local payload = M.encode(msg)
  assert(self.ctl:send(#payload .. "\n" .. payload))
  local line = assert(self.ctl:receive("*l"), "rawpeer: the peer did not answer")
  return M.decode(assert(self.ctl:receive(tonumber(line)), "rawpeer: the peer's answer was cut"))
end

-- Starts a case: every connection of the previous one is closed and the log is emptied.
function Peer:script(script)
  assert(self:call { cmd = "case", script = script }.ok)
end

function Peer:log()
  return self:call { cmd = "log" }.log
end

function Peer:stop()
  if self.stopped then return end
  self.stopped = true
  self.ctl:close() -- the peer exits when its control connection closes
  self.pipe:read("a")
  self.pipe:close()
end

Peer.__gc = function(self) pcall(Peer.stop, self) end
Peer.__close = Peer.__gc

-- opts.lifetime: seconds after which the child exits whatever happens (default 300).
function M.start(opts)
  local util = require "spec.helpers.util"
  local lua = os.getenv("LUA") or "lua5.4"
  local script = table.concat({
    "cd " .. util.shell_quote(util.ROOT),
    "unset LD_PRELOAD LUA_CPATH LUA_PATH_5_4 LUA_CPATH_5_4", -- the sanitizers are for the module only
    "export LUA_PATH='./?.lua;;'",
    "echo $$", -- the shell's pid is the peer's once it execs
    ("exec %s spec/helpers/rawpeer_server.lua %d"):format(lua, (opts and opts.lifetime) or 300),
  }, "; ")
  local pipe = assert(io.popen(script, "r"))
  local pid = tonumber(pipe:read("l"))
  local line = pipe:read("l")
  local port, cport = (line or ""):match("^rawpeer (%d+) (%d+)$")
  if not port then
    pipe:close()
    error("rawpeer: the peer did not start (first line: " .. tostring(line) .. ")", 2)
  end
  local ctl = assert(socket.connect("127.0.0.1", tonumber(cport)))
  ctl:settimeout(15)
  return setmetatable({ port = tonumber(port), url = "http://127.0.0.1:" .. port, pid = pid,
                        pipe = pipe, ctl = ctl }, Peer)
end

return M
