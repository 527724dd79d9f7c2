-- wrk script of 'python -m bench loadtest' (make loadtest): one scenario per run, chosen with
-- the SCENARIO variable.
--   upload        multipart uploads of a JPEG made unique per request (bytes after its end)
--   upload_12mp, upload_24mp, upload_png_camera
--                 the same with the camera-size photo IMAGE (of type IMAGE_TYPE): bytes after
--                 a JPEG's end or a PNG's IEND chunk are ignored by decoders, so it stays valid
--   content_hit   the same upload every time
--   url_miss      image_url of the loopback image server, a new URL (and new bytes) each time
--   url_hit       the same image_url every time
--   mix           50% url_hit, 20% content_hit, 20% upload, 10% url_miss
--   get           GET of the path wrk was given (the framework floor: /health/live)
-- 200 responses that arrive while os.time() is in [WINDOW_START, WINDOW_END) (epoch seconds)
-- are counted apart: the load test reads the server's CPU at both ends of that steady window, so
-- its CPU per request leaves out the ramp-up and the requests still unanswered at the end.
-- done() prints one JSON line that the load test reads.
local scenario = os.getenv("SCENARIO") or "get"
local image_path = os.getenv("IMAGE")
local image_base = os.getenv("IMAGE_BASE") or ""
local model = os.getenv("MODEL") or ""
local image_type = os.getenv("IMAGE_TYPE") or "image/jpeg"
local filename = image_type == "image/png" and "p.png" or "p.jpg"
local boundary = "loadtestboundary7d2f"
local jpeg = ""
if image_path then
  local file = assert(io.open(image_path, "rb"))
  jpeg = file:read("*a")
  file:close()
end

local threads = {}
local thread_id = 0
function setup(thread)
  thread_id = thread_id + 1
  thread:set("id", thread_id)
  table.insert(threads, thread)
end

local counter = 0
local function unique()
  counter = counter + 1
  return tostring(id) .. "-" .. tostring(counter) .. "-" .. tostring(math.random(1, 1e9))
end

local function multipart(bytes)
  local model_part = ""
  if model ~= "" then
    model_part = "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n" .. model .. "\r\n"
  end
  return model_part .. "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"" .. filename .. "\"\r\n" ..
    "Content-Type: " .. image_type .. "\r\n\r\n" .. bytes .. "\r\n--" .. boundary .. "--\r\n"
end

local upload_headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }
local json_headers = { ["Content-Type"] = "application/json" }

local function upload(bytes)
  return wrk.format("POST", "/classify-image", upload_headers, multipart(bytes))
end

local function by_url(url)
  local body = '{"image_url": "' .. url .. '"' .. (model ~= "" and (', "model": "' .. model .. '"') or "") .. "}"
  return wrk.format("POST", "/classify-image", json_headers, body)
end

local builders = {
  upload = function() return upload(jpeg .. unique()) end,
  content_hit = function() return upload(jpeg) end,
  url_miss = function() return by_url(image_base .. "/unique/" .. unique() .. ".jpg") end,
  url_hit = function() return by_url(image_base .. "/same.jpg") end,
}
builders.upload_12mp = builders.upload
builders.upload_24mp = builders.upload
builders.upload_png_camera = builders.upload
builders.mix = function()
  local roll = math.random()
  if roll < 0.5 then return builders.url_hit() end
  if roll < 0.7 then return builders.content_hit() end
  if roll < 0.9 then return builders.upload() end
  return builders.url_miss()
end

function init(args)
  math.randomseed(os.time() + (id or 0) * 7919)
end

if scenario ~= "get" then
  request = function() return builders[scenario]() end
end

local statuses = {}
local window_start = tonumber(os.getenv("WINDOW_START") or "0")
local window_end = tonumber(os.getenv("WINDOW_END") or "0")
window_requests = 0
function response(status, headers, body)
  if status ~= 200 then
    statuses[status] = (statuses[status] or 0) + 1
  end
  local now = os.time()
  if status == 200 and now >= window_start and now < window_end then
    window_requests = window_requests + 1
  end
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout
  local in_window = 0
  for _, thread in ipairs(threads) do
    in_window = in_window + (thread:get("window_requests") or 0)
  end
  io.write(string.format(
    '{"requests": %d, "duration_s": %.3f, "errors": %d, "non_200": %d, "window_requests": %d, ' ..
    '"p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, errors, summary.errors.status, in_window,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000))
end
