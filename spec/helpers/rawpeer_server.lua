-- The raw hostile peer (see spec/helpers/rawpeer.lua, which starts it): a TCP server on
-- 127.0.0.1 that answers HTTP requests with whatever bytes the spec scripted, framing or not.
--
--   lua5.4 spec/helpers/rawpeer_server.lua [LIFETIME_SECONDS]
--
-- It listens on two ports chosen by the kernel (port 0), both on 127.0.0.1 only, and prints one
-- line: "rawpeer HTTP_PORT CONTROL_PORT". The spec connects once to the control port and sends
-- frames (decimal length, "\n", payload in rawpeer's codec):
--   {cmd = "case", script = {token = {answer...}, api = {answer...}}}  -> {ok = true}
--   {cmd = "log"}                                                     -> {log = {request...}}
--   {cmd = "quit"}
-- A request whose path starts with /token takes the next answer of script.token, any other one
-- the next of script.api; past the end of a list its last answer repeats. An answer is a list of
-- actions: {send = bytes} ("{{N}}" in the bytes becomes the request's number in its role, five
-- digits), {pause = seconds}, {close = true} (FIN), {reset = true} (RST), {hang = true} (never
-- answer again on this connection). After the last action the connection stays open and reads
-- the next request (keep-alive). A new case closes every connection of the previous one.
--
-- Bounded lifetime: the peer exits when the control connection closes (the spec ended or died),
-- on "quit", when no control connection came within 10 s, or after LIFETIME seconds (300).
local socket = require "socket"
local codec = require "spec.helpers.rawpeer"

local LIFETIME = tonumber(arg and arg[1]) or 300
local deadline = socket.gettime() + LIFETIME
local UNSCRIPTED = { { send = "HTTP/1.1 599 Unscripted\r\nContent-Length: 0\r\n\r\n" } }

local function listen()
  local s = assert(socket.tcp4())
  assert(s:setoption("reuseaddr", true))
  assert(s:bind("127.0.0.1", 0))
  assert(s:listen(128))
  return s
end

local server, control = listen(), listen()
io.stdout:write(("rawpeer %d %d\n"):format(select(2, server:getsockname()), select(2, control:getsockname())))
io.stdout:flush()
server:settimeout(0)
control:settimeout(10)
local ctl = control:accept()
control:close()
if not ctl then os.exit(1) end
ctl:settimeout(10)

-- What the current case does: its script, the requests received, the open connections.
local state = { script = {}, counters = {}, log = {}, conns = {}, next_id = 0 }

local function drop(c, how)
  if c.dead then return end
  c.dead = true
  if how == "reset" then c.sock:setoption("linger", { on = true, timeout = 0 }) end
  c.sock:close()
  state.conns[c] = nil
end

local function accept_all()
  while true do
    local s = server:accept()
    if not s then return end
    s:settimeout(0)
    state.next_id = state.next_id + 1
    state.conns[{ sock = s, id = state.next_id, inbuf = "", mode = "read", nreq = 0 }] = true
  end
end

-- One complete request from the connection's input (Content-Length bodies only, as the client
-- sends them), or nil while it is incomplete.
local function take_request(c)
  local head_end = c.inbuf:find("\r\n\r\n", 1, true)
  if not head_end then return nil end
  local head = c.inbuf:sub(1, head_end - 1)
  local len = tonumber(head:lower():match("\r\ncontent%-length:[ \t]*(%d+)")) or 0
  local total = head_end + 3 + len
  if #c.inbuf < total then return nil end
  local body = c.inbuf:sub(head_end + 4, total)
  c.inbuf = c.inbuf:sub(total + 1)
  local method, path = head:match("^(%S+) (%S+)")
  return { head = head, body = body, method = method, path = path or "" }
end

-- Logs the request and starts the scripted answer on the connection.
local function answer(c, req)
  local role = req.path:find("^/token") and "token" or "api"
  local n = (state.counters[role] or 0) + 1
  state.counters[role] = n
  c.nreq = c.nreq + 1
  req.role, req.n, req.conn, req.seq = role, n, c.id, c.nreq
  state.log[#state.log + 1] = req
  local list = state.script[role]
  c.actions = (list and #list > 0) and list[math.min(n, #list)] or UNSCRIPTED
  c.ai, c.n, c.mode = 1, n, "act"
end

local function flush(c)
  local last, err, partial = c.sock:send(c.out, c.outpos)
  if last then
    c.out = nil
  elseif err == "timeout" then
    c.outpos = partial + 1
  else
    drop(c) -- the client went away: nothing more to say
  end
end

-- Runs the connection's actions as far as it can without blocking.
local function advance(c, now)
  while not c.dead do
    if c.mode == "read" then
      local req = take_request(c)
      if not req then return end
      answer(c, req)
    elseif c.mode ~= "act" or c.out or (c.wake and now < c.wake) then
      return
    else
      c.wake = nil
      local a = c.actions[c.ai]
      c.ai = c.ai + 1
      if a == nil then
        c.mode = "read"
      elseif a.send then
        c.out, c.outpos = a.send:gsub("{{N}}", ("%05d"):format(c.n)), 1
        flush(c)
      elseif a.pause then
        c.wake = now + a.pause
      elseif a.close or a.reset then
        drop(c, a.reset and "reset")
      elseif a.hang then
        c.mode = "hang"
      end
    end
  end
end

local function read_from(c)
  local data, err, partial = c.sock:receive(65536)
  data = data or partial
  if data and #data > 0 and c.mode ~= "hang" then c.inbuf = c.inbuf .. data end
  if err == "closed" then drop(c) end
end

-- One round of waiting: reads, writes and timers of every connection (and, with_control, the
-- control connection's readiness). Returns select's table of readable sockets.
local function serve(wait, with_control)
  local readers, writers, soonest = { server, with_control and ctl or nil }, {}, wait
  for c in pairs(state.conns) do
    readers[#readers + 1] = c.sock
    if c.out then writers[#writers + 1] = c.sock end
    if c.wake then soonest = math.max(0, math.min(soonest, c.wake - socket.gettime())) end
  end
  local r, w = socket.select(readers, writers, soonest)
  if r[server] then accept_all() end
  for c in pairs(state.conns) do
    if r[c.sock] then read_from(c) end
    if not c.dead and w[c.sock] and c.out then flush(c) end
    if not c.dead then advance(c, socket.gettime()) end
  end
  return r, #r + #w
end

local function reply(msg)
  local payload = codec.encode(msg)
  assert(ctl:send(#payload .. "\n" .. payload))
end

-- Handles one control frame; false when the peer must stop.
local function command()
  local line = ctl:receive("*l")
  local payload = line and tonumber(line) and ctl:receive(tonumber(line))
  if not payload then return false end
  local msg = codec.decode(payload)
  if msg.cmd == "case" then
    for c in pairs(state.conns) do drop(c) end
    state.script, state.counters, state.log = msg.script or {}, {}, {}
    reply { ok = true }
  elseif msg.cmd == "log" then
    for _ = 1, 5 do -- what the client sent before its call returned is read first
      if select(2, serve(0.005)) == 0 then break end
    end
    reply { log = state.log }
  else
    return false
  end
  return true
end

while socket.gettime() < deadline do
  local r = serve(0.05, true)
  if r[ctl] and not command() then break end
end
for c in pairs(state.conns) do drop(c) end
ctl:close()
server:close()
