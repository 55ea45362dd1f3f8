-- wrk script: GET one path with a bearer token, cycling through many sessions.
--
--   wrk -s bench/api_bearer.lua http://127.0.0.1:8000 -- /v1/balances tokens.txt
--
-- tokens.txt holds one token a line. Each wrk thread builds every request once
-- in init and starts at its own place in the list, so consecutive requests on
-- the server come from different users (no two connections hammer one account).

local requests = {}
local count = 0
local next_index = 1

function init(args)
  local path, tokens = args[1], args[2]
  for token in io.lines(tokens) do
    if #token > 0 then
      count = count + 1
      requests[count] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
    end
  end
  next_index = (math.random(1, count) - 1) % count + 1
end

function request()
  local r = requests[next_index]
  next_index = next_index % count + 1
  return r
end
