-- wrk script for bench/ingest_bench.sh: POST /notifications, one user of
-- 10,000 per request, a short message and a small data object.
wrk.method = "POST"
wrk.path = "/notifications"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer herald-bench-key" -- bench/ingest_bench.sh configures it
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"user_id":"user%d","type":"comment","message":"bench message %d","data":{"n":%d}}',
    n % 10000, n, n)
  return wrk.format(nil, nil, nil, body)
end
