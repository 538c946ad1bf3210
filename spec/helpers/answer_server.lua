-- Test helper: an HTTP server on 127.0.0.1 that answers each request with the status, header
-- lines and body the case chooses, by path. Unlike the sandbox's fault rules (sent on a curl
-- command line), an answer can be megabytes long. It is the raw peer (spec/helpers/rawpeer.lua)
-- with one answer per role: requests to /token, and the rest.
--
--   local answer_server = require "spec.helpers.answer_server"
--   local srv = answer_server.start()      -- srv.url ("http://127.0.0.1:PORT")
--   srv:answer { ["/token"] = {400, {"Content-Type: application/json"}, body}, ["*"] = {...} }
--   srv:stop()
--
-- answers["*"] answers every path without an answer of its own; every answer closes the
-- connection after it.
local rawpeer = require "spec.helpers.rawpeer"

local M = {}

local function bytes(a) return a and rawpeer.then_close(rawpeer.response(a[1], a[2], a[3])) end

function M.start()
  local peer = rawpeer.start()
  local srv = { url = peer.url }
  function srv:answer(answers)
    local api = answers["*"]
    for path, a in pairs(answers) do
      if path ~= "*" and not path:find("^/token") then api = a end
    end
    peer:script { token = { bytes(answers["/token"] or answers["*"]) }, api = { bytes(api) } }
  end
  function srv:stop() peer:stop() end
  return srv
end

return M
