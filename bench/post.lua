-- wrk script of bench/wrk.py: POST one MCP request again and again, check every response.
--
-- Set by bench/wrk.py through the environment:
--   BENCH_BODY     request body; "{id}" is replaced by a fresh JSON-RPC id per request
--                  (a 2025-11-25 session must not see two requests in flight with one id)
--   BENCH_HEADERS  "Name: value" lines
--   BENCH_EXPECT   a response counts as good only with HTTP 200 and this text in its body
--   BENCH_DELAY_MS optional: each connection waits this many ms after a response (a paced load)
-- done() prints one line: "BENCH_RESULT " followed by a JSON object.

local threads = {}

-- Defined only for a paced load: wrk schedules a timer per request once the script has delay().
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms then
  function delay()
    return delay_ms
  end
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local body = os.getenv("BENCH_BODY")
  local at = string.find(body, "{id}", 1, true)
  body_head = string.sub(body, 1, at - 1)
  body_tail = string.sub(body, at + 4)
  expect = os.getenv("BENCH_EXPECT")
  headers = {Host = wrk.headers["Host"]}  -- wrk.format would drop the port
  for line in string.gmatch(os.getenv("BENCH_HEADERS"), "[^\n]+") do
    local name, value = string.match(line, "^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  next_id = 0
  responses = 0
  non_200 = 0
  bad_body = 0
end

function request()
  next_id = next_id + 1
  return wrk.format("POST", nil, headers, body_head .. next_id .. body_tail)
end

function response(status, response_headers, body)
  responses = responses + 1
  if status ~= 200 then
    non_200 = non_200 + 1
  elseif not string.find(body, expect, 1, true) then
    bad_body = bad_body + 1
  end
end

function done(summary, latency, requests)
  local counted, non200, bad = 0, 0, 0
  for _, thread in ipairs(threads) do
    counted = counted + thread:get("responses")
    non200 = non200 + thread:get("non_200")
    bad = bad + thread:get("bad_body")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"responses":%d,"duration_us":%d,"non_200":%d,"bad_body":%d,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, counted, summary.duration, non200, bad,
    e.connect, e.read, e.write, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
