-- wrk script for `make bench`: POST /orders with valid orders.
--   WRK_TAG=t WRK_RATE=r WRK_MAX=m wrk ... -s bench/order.lua URL
-- WRK_TAG   prefix of customer_id, so that a run's orders can be found in the DB
-- WRK_RATE  requests/s of each wrk thread (0 or unset: as fast as possible)
-- WRK_MAX   requests each thread sends at most (a bound besides wrk's -d)
-- Environment, not script arguments: whether delay() exists must be known
-- when the script is loaded, and wrk passes arguments only to init().
-- Bodies: 4 distinct SKUs out of SKU-1..SKU-5, qty 1-3, as bench/js_publish.c
-- and bench/drain_rows.sql, so the OrderCreated events have the same size.
-- done() prints one machine-readable line, WRK_RESULT key=value ..., for scripts/bench.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local NBODIES = 64   -- distinct pre-built requests: building one per request costs wrk CPU
local requests = {}
local sent = 0
local tag = os.getenv("WRK_TAG") or "wrk"
local rate = tonumber(os.getenv("WRK_RATE") or "0") or 0
local max_sent = tonumber(os.getenv("WRK_MAX") or "0") or 0
if max_sent <= 0 then max_sent = math.huge end
local next_slot = nil

local function body(tag, n)
  local items = {}
  for k = 0, 3 do
    items[#items + 1] = string.format('{"sku":"SKU-%d","qty":%d}', (n + k) % 5 + 1, (n + k) % 3 + 1)
  end
  return string.format('{"customer_id":"%s-%06d","items":[%s]}', tag, n, table.concat(items, ","))
end

function init(_)
  local headers = { ["Content-Type"] = "application/json" }
  for n = 0, NBODIES - 1 do
    requests[n] = wrk.format("POST", "/orders", headers, body(tag, n))
  end
end

-- Pacing for a fixed offered rate (wrk2 is not in Debian): every request of
-- this thread takes the next slot of a fixed schedule, whichever connection
-- sends it. A late response does not push the schedule back: the following
-- requests go out at once to catch up (as wrk2 does), so the offered rate
-- stays fixed while the connections suffice. Defined only when pacing: with
-- a delay() wrk sends every request through a timer, which costs it CPU.
if rate > 0 then
  local interval_ms = 1000 / rate
  function delay()
    local now = now_ms()
    if not next_slot then next_slot = now end
    local slot = next_slot
    next_slot = next_slot + interval_ms
    if slot <= now then return 0 end
    return slot - now
  end
end

function request()
  sent = sent + 1
  if sent >= max_sent then wrk.thread:stop() end
  return requests[sent % NBODIES]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
