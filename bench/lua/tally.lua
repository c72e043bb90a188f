-- wrk script for every Tally scenario; the driver (bench/run.py) chooses one through the
-- environment, so there is one script to keep in step with the API instead of six.
--
--   BENCH_SCENARIO  award | hot | balance | mixed | ref
--   BENCH_KEY       a write key of the program            BENCH_MEMBERS  how many members exist
--   BENCH_PREFIX    member ids are PREFIX0 .. PREFIX(N-1)  BENCH_HOT      the `hot` member's id
--
-- done() prints one line `BENCH_RESULT {json}` that the driver parses: requests, duration,
-- latency percentiles (microseconds), socket errors and responses counted by status, with
-- the 422 insufficient_points answers (expected in `hot`) counted on their own.

local scenario = os.getenv("BENCH_SCENARIO") or "award"
local key = os.getenv("BENCH_KEY") or ""
local members = tonumber(os.getenv("BENCH_MEMBERS") or "10000")
local prefix = os.getenv("BENCH_PREFIX") or "m"
local hot = os.getenv("BENCH_HOT") or "hot"

local threads = {}
local counter = 0

local read_headers = { ["Authorization"] = "Bearer " .. key }
local write_headers = {
  ["Authorization"] = "Bearer " .. key,
  ["Content-Type"] = "application/json",
}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  insufficient = 0
  math.randomseed(os.time() * 100 + (thread_id or 0))
end

local function some_member()
  return prefix .. math.random(0, members - 1)
end

local function points_body(member, points)
  counter = counter + 1
  return string.format(
    '{"member_id":"%s","points":%d,"reason":"bench %s %d-%d"}',
    member, points, scenario, thread_id or 0, counter
  )
end

local function award(member)
  return wrk.format("POST", "/v1/points/award", write_headers, points_body(member, 10))
end

local function deduct(member)
  return wrk.format("POST", "/v1/points/deduct", write_headers, points_body(member, 10))
end

local function balance(member)
  return wrk.format("GET", "/v1/members/" .. member .. "/balance", read_headers)
end

local function history(member)
  return wrk.format("GET", "/v1/members/" .. member .. "/transactions", read_headers)
end

local makers = {
  award = function() return award(some_member()) end,
  ref = function() return award(some_member()) end,
  balance = function() return balance(some_member()) end,
  hot = function()
    if math.random() < 0.5 then return award(hot) end
    return deduct(hot)
  end,
  mixed = function()
    local r = math.random()
    if r < 0.7 then return balance(some_member()) end
    if r < 0.9 then return history(some_member()) end
    return award(some_member())
  end,
}

local make = makers[scenario]
if make == nil then
  error("unknown BENCH_SCENARIO " .. scenario)
end

function request()
  return make()
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 422 and body and string.find(body, "insufficient_points", 1, true) then
    insufficient = insufficient + 1
  end
end

local function statuses_json(totals)
  local parts = {}
  for status, count in pairs(totals) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local totals, expected = {}, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
    expected = expected + thread:get("insufficient")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"scenario":"%s","requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f},'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"statuses":%s,"insufficient_points":%d}\n',
    scenario, summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean,
    e.connect, e.read, e.write, e.timeout,
    statuses_json(totals), expected
  ))
end
