-- The sandbox's HTTP side: lua-http's server on a cqueues loop, one coroutine per request,
-- so that a slow or hanging answer never holds up the others.

local cqueues = require "cqueues"
local http_server = require "http.server"
local http_headers = require "http.headers"
local service = require "partnercustomers.sandbox.service"

local server = {}

local IO_TIMEOUT = 30 -- seconds to read a request or to write an answer

local function report(state, fmt, ...)
  if not state.quiet then
    io.stderr:write(string.format(fmt, ...), "\n")
  end
end

-- The Host header when it is a plain host:port, so that absolute links point back to the
-- name the client used (a client that checks "same host" on next links must not trip).
local function sane_authority(authority)
  if authority and (authority:match("^[%w%.%-]+:%d+$") or authority:match("^%[[%x:%.]+%]:%d+$")) then
    return authority
  end
  return nil
end

local function read_request(stream, listen_base)
  local headers, err = stream:get_headers(IO_TIMEOUT)
  if not headers then return nil, err end
  -- lua-http does not answer "Expect: 100-continue" itself; curl would wait a second for it
  local expect = headers:get("expect")
  if expect and expect:lower() == "100-continue" then
    stream:write_continue(IO_TIMEOUT)
  end
  local body, body_err = stream:get_body_as_string(IO_TIMEOUT)
  if not body then return nil, body_err end
  local map = {}
  for name, value in headers:each() do
    if name:sub(1, 1) ~= ":" then
      map[name] = map[name] and (map[name] .. ", " .. value) or value
    end
  end
  -- lua-http turns Host into the :authority pseudo-header
  local authority = headers:get(":authority")
  map.host = map.host or authority
  local path, query = (headers:get(":path") or "/"):match("^([^?#]*)%??([^#]*)")
  local host = sane_authority(authority)
  return {
    method = headers:get(":method"), path = path, query = query,
    params = service.parse_query(query), headers = map, body = body,
    base_url = host and ("http://" .. host) or listen_base,
  }
end

local function send(stream, res, method)
  local headers = http_headers.new()
  headers:append(":status", tostring(res.status))
  for name, value in pairs(res.headers or {}) do
    headers:append(name, value)
  end
  local body = res.body or ""
  headers:append("content-length", tostring(#body))
  local no_body = body == "" or method == "HEAD"
  local ok, err = stream:write_headers(headers, no_body, IO_TIMEOUT)
  if ok and not no_body then
    ok, err = stream:write_chunk(body, true, IO_TIMEOUT)
  end
  return ok, err
end

-- Closes the connection without a byte of answer. Taking the socket away from lua-http
-- first keeps it from sending its automatic 503 for a stream left unanswered.
local function drop(stream)
  local socket = stream.connection:take_socket()
  if socket then
    socket:close()
  end
end

-- One form POST with lua-http's client, for token introspection. Called from a request's
-- coroutine, so its socket waits yield to the cqueues loop and other connections are served
-- meanwhile. No proxy, no redirects, no cookies. Returns the status and the body, or nil and a
-- message.
local function post(url, headers, body, timeout)
  local http_request = require "http.request"
  local deadline = cqueues.monotime() + timeout
  local req = http_request.new_from_uri(url)
  req.proxy = false
  req.follow_redirects = false
  req.cookie_store = false
  req.hsts = false
  req.version = 1.1
  req.headers:upsert(":method", "POST")
  for name, value in pairs(headers) do
    req.headers:upsert(name, value)
  end
  req:set_body(body)
  local res_headers, stream = req:go(timeout)
  if not res_headers then
    return nil, tostring(stream)
  end
  local text, err = stream:get_body_as_string(math.max(deadline - cqueues.monotime(), 0.001))
  stream:shutdown()
  if not text then
    return nil, tostring(err)
  end
  return tonumber(res_headers:get(":status")), text
end

-- The detail goes to stderr, not to the client.
local function internal_error()
  return {status = 500, headers = {["content-type"] = "application/json"},
          body = '{"error":"sandbox_error","error_description":"internal error, see the sandbox\'s stderr"}'}
end

local function serve(state, svc, stream)
  state.last_request = cqueues.monotime()
  local req = read_request(stream, state.base_url)
  if not req then return end
  local ok, res = pcall(svc.handle, svc, req)
  if not ok then
    report(state, "sandbox: error handling %s %s: %s", req.method, req.path, tostring(res))
    res = internal_error()
  end
  if res.delay then
    cqueues.sleep(res.delay)
  end
  if res.action == "hang" then
    cqueues.sleep(res.hang)
  end
  if res.action == "drop" or res.action == "hang" then
    drop(stream)
  else
    send(stream, res, req.method)
  end
  if req.log_entry then
    req.log_entry.answered = svc:elapsed() -- with `time`: how long the request was in the server
  end
  report(state, "%s %s%s -> %s", req.method, req.path, req.query ~= "" and "?" .. req.query or "",
    res.status or res.action)
  if res.action == "shutdown" then
    state.stopping = true
  end
end

local function write_port_file(path, port)
  -- write then rename, so that a reader never sees a partial file
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(port, "\n")
  f:close()
  assert(os.rename(tmp, path))
end

-- Listens on cq (a cqueues controller) and serves there, one coroutine per request: returns the
-- server's state {base_url, stopping, last_request}, the lua-http server and the service; or nil
-- and a message when it cannot listen. cfg: the validated options of partnercustomers.sandbox.run
-- plus client_secret, random_hex (and introspection_secret when introspection_url is set).
function server.listen(cfg, cq)
  local state = {quiet = cfg.quiet, last_request = cqueues.monotime(), stopping = false}
  local svc = service.new{
    count = cfg.count, seed = cfg.seed, client_id = cfg.client_id, client_secret = cfg.client_secret,
    token_ttl = cfg.token_ttl, odata_page_size = cfg.odata_page_size, v3_status = cfg.v3_status,
    pc_tenant = cfg.pc_tenant, client_cert = cfg.client_cert, approve_devices = cfg.approve_devices, clock = cqueues.monotime, random_hex = cfg.random_hex,
    introspection = cfg.introspection_url and {
      url = cfg.introspection_url, client_id = cfg.introspection_client_id,
      secret = cfg.introspection_secret, post = post,
    },
  }
  local srv = http_server.listen{
    cq = cq, host = "127.0.0.1", port = cfg.port, tls = false, version = 1.1, reuseaddr = true,
    onstream = function(_, stream) serve(state, svc, stream) end,
    onerror = function(_, _, op, err) report(state, "sandbox: %s: %s", op, tostring(err)) end,
  }
  local ok, err = srv:listen()
  if not ok then
    return nil, "cannot listen on 127.0.0.1:" .. cfg.port .. ": " .. tostring(err)
  end
  local _, _, port = srv:localname()
  state.base_url = "http://127.0.0.1:" .. port
  state.port = port
  svc.base_url = state.base_url
  return state, srv, svc
end

-- Serves until POST /_sandbox/shutdown or cfg.idle_timeout seconds without a request (cfg as
-- for server.listen). Returns true, or nil and a message when it cannot listen.
function server.run(cfg)
  local cq = cqueues.new()
  local state, srv = server.listen(cfg, cq)
  if not state then return nil, srv end
  if cfg.port_file then
    write_port_file(cfg.port_file, state.port)
  end
  io.stdout:write("partnercustomers sandbox listening on ", state.base_url, "\n")
  if cfg.on_listen then cfg.on_listen(state.base_url, cfg) end
  io.stdout:flush()

  while not state.stopping do
    local left = state.last_request + cfg.idle_timeout - cqueues.monotime()
    if left <= 0 then
      report(state, "sandbox: no request for %g s, stopping", cfg.idle_timeout)
      break
    end
    local stepped, step_err = cq:step(math.min(left, 1))
    if not stepped then
      report(state, "sandbox: %s", tostring(step_err))
    end
  end
  srv:close()
  return true
end

return server
