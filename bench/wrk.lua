-- One wrk script for every scenario, configured by environment variables that load.py sets:
--   BENCH_METHOD, BENCH_PATH, BENCH_BODY, BENCH_CONTENT_TYPE: the request
--   BENCH_TOKENS: comma-separated bearer tokens (the first is used, or all in vote mode)
--   BENCH_VOTE_POSTS: in vote mode, how many seeded posts there are; every request then
--     votes with a (token, published post) pair no request of this run used before.
-- done() prints one JSON line with the counts and latency percentiles (microseconds).

local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY")
local content_type = os.getenv("BENCH_CONTENT_TYPE")
local vote_posts = tonumber(os.getenv("BENCH_VOTE_POSTS") or "")

local tokens = {}
for token in string.gmatch(os.getenv("BENCH_TOKENS") or "", "[^,]+") do
  tokens[#tokens + 1] = token
end

local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

-- args[1]: how many wrk threads there are, so vote pairs never repeat across threads.
function init(args)
  thread_count = tonumber(args[1] or "1")
  counter = 0
  headers = {}
  if content_type then headers["Content-Type"] = content_type end
  if #tokens > 0 then headers["Authorization"] = "Bearer " .. tokens[1] end
  fixed = wrk.format(method, path, headers, body)
end

-- Seeded post ids that are published: every id but multiples of 10 (see seed.py).
local function published_post(index)
  return index + math.floor(index / 9) + 1
end

function request()
  if not vote_posts then return fixed end
  local n = counter * thread_count + tid
  counter = counter + 1
  local pairs_available = #tokens * (vote_posts - math.floor(vote_posts / 10))
  n = n % pairs_available
  headers["Authorization"] = "Bearer " .. tokens[n % #tokens + 1]
  local vote = string.format('{"post_id": %d, "dir": 1}', published_post(math.floor(n / #tokens)))
  return wrk.format("POST", path, headers, vote)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
