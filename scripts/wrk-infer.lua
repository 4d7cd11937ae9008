-- wrk script posting one KServe v2 inference request per call, for measuring the HTTP
-- layer's overhead.
--
--   wrk -t2 -c16 -d30s --latency -s scripts/wrk-infer.lua http://127.0.0.1:8000 \
--       -- [model=resnet50] [input=input] [shape=1,3,224,224] [mode=binary|json] [path=...]
--
-- Arguments are key=value, all optional. `mode=binary` (default) sends the tensor with
-- the binary tensor data extension (zeros, little-endian FP32) and asks for a binary
-- output; `mode=json` sends a JSON tensor. `path` replaces the request path (to hit a
-- ceiling route that answers at once). wrk reports non-2xx answers itself.

local settings = {
   model = "resnet50",
   input = "input",
   shape = "1,3,224,224",
   mode = "binary",
   path = nil,
}

local function elements(shape)
   local n = 1
   for dim in string.gmatch(shape, "%d+") do
      n = n * tonumber(dim)
   end
   return n
end

local function build()
   local n = elements(settings.shape)
   local shape = "[" .. settings.shape .. "]"
   local header, binary
   if settings.mode == "json" then
      local data = string.rep("0,", n - 1) .. "0"
      header = string.format(
         '{"inputs":[{"name":"%s","shape":%s,"datatype":"FP32","data":[%s]}]}',
         settings.input, shape, data)
      binary = ""
   elseif settings.mode == "binary" then
      header = string.format(
         '{"inputs":[{"name":"%s","shape":%s,"datatype":"FP32",'
            .. '"parameters":{"binary_data_size":%d}}],'
            .. '"parameters":{"binary_data_output":true}}',
         settings.input, shape, n * 4)
      binary = string.rep("\0", n * 4)
   else
      error("mode must be binary or json, got " .. settings.mode)
   end
   wrk.method = "POST"
   wrk.path = settings.path or ("/v2/models/" .. settings.model .. "/infer")
   wrk.body = header .. binary
   wrk.headers["Content-Type"] = "application/octet-stream"
   if binary ~= "" then
      wrk.headers["Inference-Header-Content-Length"] = tostring(#header)
   end
end

function init(args)
   for _, arg in ipairs(args) do
      local key, value = string.match(arg, "^(%w+)=(.*)$")
      if key == nil or settings[key] == nil and key ~= "path" then
         error("unknown argument " .. arg .. " (use model=, input=, shape=, mode=, path=)")
      end
      settings[key] = value
   end
   build()
end
