-- wrk script of `make bench` (tests/bench/ceiling.py): one distinct registration per request.
-- Arguments after `--`: first index, requests per thread at most, run tag, bearer token,
-- captured_at, number of threads. Request g (0, 1, 2, ... over all threads) registers the man
-- born in 1950 + floor(g / 10^6) % 50 in birth province 092 with serial g % 10^6: personal
-- numbers and command ids never repeat within a run, nor across runs with first indexes 10^6
-- apart. The same script drives the no-op endpoint, so both pay the same client cost.

local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  first = tonumber(args[1])
  cap = tonumber(args[2])
  tag = args[3]
  captured = args[5]
  stride = tonumber(args[6])
  sent = 0
  communes = {"22420", "22453", "22528", "22408", "22432"}
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[4]
end

function request()
  if sent >= cap then
    wrk.thread:stop()
  end
  local g = first + sent * stride + id
  sent = sent + 1
  local year = 1950 + math.floor(g / 1000000) % 50
  local commune = communes[(g % #communes) + 1]
  local body = string.format(
    '{"command_id":"wrk-%s-%d","citizen_id":"0920%02d%06d","full_name":"Nguyễn Văn An",'
      .. '"date_of_birth":"%d-05-01","sex":"male","commune_code":"%s","station_id":"st-%s",'
      .. '"device_id":"dev-%02d","operator_id":"op-%02d","channel":"station","phone":"smart",'
      .. '"captured_at":"%s"}',
    tag, g, year % 100, g % 1000000, year, commune, commune, g % 20 + 1, g % 40 + 1, captured)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%d,"duration_us":%d,"status_errors":%d,"connect":%d,"read":%d,'
      .. '"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
