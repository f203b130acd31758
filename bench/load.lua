-- wrk script for bench/run.py: POST one JSON body again and again, then print the figures as JSON.
-- Usage: wrk -t1 -cN -dD -s bench/load.lua URL -- BODY_FILE BEARER_KEY [HEADERS_FILE]
-- HEADERS_FILE (optional, bench/perf.py): extra request headers, one "Name: value" a line.
-- The request is formatted once per thread (init), so wrk spends no Lua time per request.

local req

init = function(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. (args[2] or "none")
  if args[3] then
    for line in io.lines(args[3]) do
      local name, value = line:match("^([^:]+):%s*(.-)%s*$")
      if name then wrk.headers[name] = value end
    end
  end
  req = wrk.format()
end

request = function()
  return req
end

-- One line that run.py parses; latencies are in microseconds.
done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
