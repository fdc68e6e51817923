-- wrk script for Open Inference Protocol (V2) POST /v2/models/<m>/infer with a pre-built body.
--
-- Why a script: wrk alone cannot send a file as body. The body is read once per wrk thread in init()
-- and wrk's own wrk.init() then formats the request once, so the hot loop sends identical static
-- bytes (no Lua per request). There is deliberately no response() hook: it would make wrk parse and hand
-- every body to Lua; correctness is checked by bench/run.py before the load, and any non-2xx answer
-- shows up in errors_status below.
--
-- Usage: wrk -s bench/lua/infer.lua URL -- BODY_FILE CONTENT_TYPE [INFERENCE_HEADER_CONTENT_LENGTH]
--   The third argument is given for the Triton binary tensor extension (JSON header + raw bytes).
--
-- done() prints one line "WRK_RESULT {json}" with exact p50/p99 from wrk's latency histogram (microseconds),
-- the request count, the duration and every error class, which bench/run.py parses.

function init(args)
   local path = args[1]
   local f = assert(io.open(path, "rb"), "cannot open body file " .. tostring(path))
   local body = f:read("*a")
   f:close()
   wrk.method = "POST"
   wrk.body = body
   wrk.headers["Content-Type"] = args[2] or "application/json"
   if args[3] ~= nil and args[3] ~= "" then
      wrk.headers["Inference-Header-Content-Length"] = args[3]
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, '
         .. '"p99_us": %d, "mean_us": %.1f, "max_us": %d, "errors_connect": %d, "errors_read": %d, '
         .. '"errors_write": %d, "errors_status": %d, "errors_timeout": %d}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
      e.connect, e.read, e.write, e.status, e.timeout))
end
