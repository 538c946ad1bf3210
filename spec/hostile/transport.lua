-- Transport faults on the API answer: framing, status lines, 1xx, headers, dropped connections.
-- Each fault makes its answers from the call's good JSON body `b`, and runs on the core with a
-- fixed token and on one of the Lua layer's calls (in rotation), whose token request goes first.
local R = require "spec.helpers.rawpeer"
local C = require "spec.hostile.common"

local CT = "Content-Type: application/json"
local NET = { kinds = { "network", "protocol" } }    -- broken HTTP: a network-level failure
local NET_OR_OK = { ok = true, kinds = { "network", "protocol" } }
local OK = { ok = true }
local TIMEOUT = { kind = "timeout", attempts = 1 }

local function status_line(line, b) return { R.then_close(R.response(line, { CT }, b)) } end
local function with_length(n, b, after) return { after(R.response(200, { CT, "Content-Length: " .. n }, b)) } end
local function raw_chunked(body_bytes, after)
  return { after(R.response(200, { CT, "Transfer-Encoding: chunked" }, body_bytes)) }
end
local function headers_then(lines, b)
  local h = { CT }
  for _, l in ipairs(lines) do h[#h + 1] = l end
  return { R.send(R.response(200, h, b)) }
end
local function many_headers(n)
  local h = {}
  for i = 1, n do h[i] = ("X-H%d: v"):format(i) end
  return h
end
local function bytes_of(s)
  local t = {}
  for i = 1, #s do t[i] = s:sub(i, i) end
  return t
end
local function informational(prefix, b) return { R.send(prefix .. R.response(200, { CT }, b)) } end

-- { name, answers(b), expectation, hang = true when it waits for the timeout }
local FAULTS = {
  -- Content-Length
  { "Content-Length larger than the body, then close", function(b) return with_length(#b + 100, b, R.then_close) end, NET },
  { "Content-Length larger than the body, then hang", function(b) return with_length(#b + 100, b, R.then_hang) end, TIMEOUT, hang = true },
  { "Content-Length smaller than the body (JSON cut)", function(b) return with_length(#b - 3, b, R.send) end, { kind = "decode" } },
  { "negative Content-Length", function(b) return with_length(-1, b, R.then_close) end, NET },
  { "Content-Length overflowing 64 bits", function(b) return with_length("99999999999999999999999", b, R.then_close) end,
    { kinds = { "network", "protocol", "limit" } } },
  { "Content-Length over max_response_bytes", function(b) return with_length("10737418240", b, R.then_close) end, { kind = "limit" } },
  { "two different Content-Lengths", function(b)
      return { R.then_close(R.response(200, { CT, "Content-Length: " .. #b, "Content-Length: " .. (#b + 7) }, b)) }
    end, { ok = true, kinds = { "network", "protocol", "decode" } } },
  -- chunked
  { "chunk size that is not hex", function(b) return raw_chunked("zz\r\n" .. b .. "\r\n0\r\n\r\n", R.then_close) end, NET },
  { "chunk larger than its data, then close", function(b) return raw_chunked(("%x\r\n%s"):format(#b + 50, b), R.then_close) end, NET },
  { "no last chunk, then close", function(b) return raw_chunked(("%x\r\n%s\r\n"):format(#b, b), R.then_close) end, NET },
  { "no last chunk, then hang", function(b) return raw_chunked(("%x\r\n%s\r\n"):format(#b, b), R.then_hang) end, TIMEOUT, hang = true },
  { "chunk size overflowing 64 bits", function(b) return raw_chunked("fffffffffffffffffffff\r\n" .. b, R.then_close) end,
    { kinds = { "network", "protocol", "limit" } } },
  { "chunk data without its CRLF", function(b) return raw_chunked(("%x\r\n%sXX0\r\n\r\n"):format(#b, b), R.then_close) end,
    { kinds = { "network", "protocol", "decode" } } },
  { "chunk extensions and trailers", function(b)
      return raw_chunked(("%x;ext=1\r\n%s\r\n0;last\r\nX-Trailer: t\r\n\r\n"):format(#b, b), R.send)
    end, OK },
  { "one-byte chunks", function(b) return raw_chunked(R.chunked(bytes_of(b)), R.send) end, OK },
  { "chunked and a Content-Length together", function(b)
      return { R.send(R.response(200, { CT, "Content-Length: 3", "Transfer-Encoding: chunked" }, R.chunked { b })) }
    end, NET_OR_OK },
  { "a body over max_response_bytes", function(b)
      return raw_chunked(R.chunked { b:sub(1, -2), (" "):rep(1024 * 1024), (" "):rep(1024 * 1024), b:sub(-1) }, R.send)
    end, { kind = "limit" } },
  { "Content-Encoding gzip on a plain body", function(b)
      return { R.send(R.response(200, { CT, "Content-Encoding: gzip" }, b)) }
    end, { kinds = { "decode", "network", "protocol" } } },
  { "an unknown Content-Encoding", function(b)
      return { R.send(R.response(200, { CT, "Content-Encoding: x-evil" }, b)) }
    end, { ok = true, kinds = { "decode", "network", "protocol" } } },
  -- connections
  { "reset before any byte", function() return { R.RESET } end, { kind = "network" } },
  { "closed before any byte (empty reply)", function() return { R.CLOSE } end, { kind = "network" } },
  { "reset in the middle of the headers", function() return { R.then_reset("HTTP/1.1 200 OK\r\nContent-Ty") } end, NET },
  { "closed in the middle of the headers", function() return { R.then_close("HTTP/1.1 200 OK\r\nContent-Ty") } end, NET },
  { "reset in the middle of the body", function(b)
      return { R.then_reset(R.response(200, { CT, "Content-Length: " .. #b }, b:sub(1, #b // 2))) }
    end, NET },
  { "body until close, no length", function(b) return { R.then_close("HTTP/1.1 200 OK\r\n" .. CT .. "\r\n\r\n" .. b) } end, OK },
  { "an HTTP/1.0 answer", function(b) return status_line("HTTP/1.0 200 OK", b) end, OK },
  -- status lines
  { "garbage status line", function(b) return { R.then_close("HELLO WORLD\r\n\r\n" .. b) } end, NET },
  { "HTTP/0.9: no status line at all", function(b) return { R.then_close(b) } end, NET },
  { "non-numeric status", function(b) return status_line("HTTP/1.1 abc OK", b) end, NET },
  { "two-digit status", function(b) return status_line("HTTP/1.1 20 OK", b) end, NET },
  { "four-digit status", function(b) return status_line("HTTP/1.1 2000 OK", b) end, { kinds = { "network", "protocol", "http" } } },
  { "status 999", function(b) return status_line("HTTP/1.1 999 Weird", b) end, { kinds = { "network", "protocol", "http" } } },
  { "status 000", function(b) return status_line("HTTP/1.1 000 Zero", b) end, { kinds = { "network", "protocol", "http" } } },
  { "HTTP/9.9 status line", function(b) return status_line("HTTP/9.9 200 OK", b) end, NET },
  { "HTTP/2 status line on HTTP/1.1", function(b) return status_line("HTTP/2 200", b) end, NET_OR_OK },
  { "status line without a reason phrase", function(b) return status_line("HTTP/1.1 200", b) end, OK },
  { "NUL in the status line", function(b) return status_line("HTTP/1.1 200 O\0K", b) end, NET_OR_OK },
  { "blank lines before the status line", function(b) return { R.then_close("\r\n\r\n" .. R.response(200, { CT }, b)) } end, NET_OR_OK },
  { "bare LF line ends", function(b)
      return { R.then_close(("HTTP/1.1 200 OK\n%s\nContent-Length: %d\n\n%s"):format(CT, #b, b)) }
    end, NET_OR_OK },
  -- 1xx before the answer
  { "100 Continue before the answer", function(b) return informational("HTTP/1.1 100 Continue\r\n\r\n", b) end, OK },
  { "fifty 102 Processing before the answer", function(b) return informational(("HTTP/1.1 102 Processing\r\n\r\n"):rep(50), b) end, OK },
  { "103 Early Hints with headers before the answer", function(b)
      return informational("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", b)
    end, OK },
  { "unsolicited 101 Switching Protocols", function(b)
      return { R.then_close("HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: Upgrade\r\n\r\n" .. b) }
    end, { kinds = { "network", "protocol", "http" } } },
  { "endless 100 Continue, then hang", function() return { R.then_hang(("HTTP/1.1 100 Continue\r\n\r\n"):rep(2000)) } end,
    TIMEOUT, hang = true },
  { "100 Continue, then close", function() return { R.then_close("HTTP/1.1 100 Continue\r\n\r\n") } end, NET },
  -- headers
  { "a header line over 256 KiB", function(b) return headers_then({ "X-Huge: " .. ("a"):rep(300 * 1024) }, b) end,
    { kinds = { "limit", "protocol" } } },
  { "20000 header lines", function(b) return headers_then(many_headers(20000), b) end, { ok = true, kinds = { "limit", "protocol" } } },
  { "a header line without a colon", function(b) return headers_then({ "this is not a header" }, b) end, NET_OR_OK },
  { "a NUL byte in a header value", function(b) return headers_then({ "X-Nul: a\0b" }, b) end, NET_OR_OK },
  { "obsolete line folding", function(b) return headers_then({ "X-Folded: a", " continued", "\tand more" }, b) end, NET_OR_OK },
  { "non-UTF-8 bytes in a header value", function(b) return headers_then({ "X-Bytes: \xff\xfe\xc3\x28" }, b) end, OK },
  { "a 64 KiB request-id header", function(b) return headers_then({ "request-id: " .. ("r"):rep(64 * 1024) }, b) end, OK },
}

-- The Lua layer's calls, in rotation: each fault runs on core_fixed and on one of these.
local ROTATION = { "ave_page", "pc_org", "ave_customers", "ave_each", "pc_customers", "ave_all", "core", "pc_refresh" }

local cases = {}
for i, f in ipairs(FAULTS) do
  for _, call in ipairs { "core_fixed", ROTATION[(i - 1) % #ROTATION + 1] } do
    local answers = f[2](C.GOOD[C.SHAPE[call]])
    cases[#cases + 1] = { name = f[1], call = call, api = answers, expect = f[3],
                          timeout = f.hang and 0.5 or nil }
  end
end

-- Answers whose outcome depends on the call.
local NO_BODY = R.response(204, {}, "")
cases[#cases + 1] = { name = "204 with no body where a body is needed", call = "core_fixed", api = { R.send(NO_BODY) }, expect = OK }
cases[#cases + 1] = { name = "204 with no body where a body is needed", call = "ave_customers", api = { R.send(NO_BODY) },
                      expect = { kinds = { "protocol", "decode" } } }
cases[#cases + 1] = { name = "204 with a body", call = "core_fixed",
                      api = { R.send("HTTP/1.1 204 No Content\r\n\r\n{\"late\":true}") }, expect = OK }
cases[#cases + 1] = { name = "304 Not Modified", call = "ave_page", api = { R.send(R.response(304, {}, "")) },
                      expect = { kinds = { "http", "protocol" } } }
return cases
