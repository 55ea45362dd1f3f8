-- wrk script: POST /v1/orders (or another JSON body) with a bearer token, cycling users.
--
--   wrk -s bench/api_orders.lua http://127.0.0.1:8000 -- tokens.txt ack
--   wrk -s bench/api_orders.lua http://127.0.0.1:8000 -- logins.txt login
--   wrk -c 50 -s bench/api_orders.lua http://127.0.0.1:8000 -- tokens.txt result 50
--
-- A third argument paces each connection: it waits about that many
-- milliseconds (jittered, 0.5 to 1.5 times) before each request, so C
-- connections send about C * 1000 / pause a second (a little less, as each
-- also waits for its answer).
--
-- With "ack" or "result": limit buys far below the market (they rest, never
-- trade), prices spread over 10,000 ticks, each from the next user's token.
-- With "login": tokens.txt holds "email password" lines and each request logs in.

local tokens = {}
local count = 0
local next_index = 1
local mode = "ack"
local counter = 0
local pause = 0

function init(args)
  local path = args[1]
  mode = args[2] or "ack"
  pause = tonumber(args[3] or "0")
  for line in io.lines(path) do
    if #line > 0 then
      count = count + 1
      tokens[count] = line
    end
  end
  next_index = math.random(1, count)
end

function request()
  local token = tokens[next_index]
  next_index = next_index % count + 1
  counter = counter + 1
  if mode == "login" then
    local email, password = token:match("^(%S+) (.+)$")
    local body = '{"email":"' .. email .. '","password":"' .. password .. '"}'
    return wrk.format("POST", "/v1/sessions", { ["Content-Type"] = "application/json" }, body)
  end
  local price = string.format("%d.%02d", 1000 + math.floor((counter % 10000) / 100), counter % 100)
  local body = '{"symbol":"BTC-USDT","side":"buy","type":"limit","price":"' .. price
    .. '","quantity":"0.001","response_type":"' .. mode .. '"}'
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", "/v1/orders", headers, body)
end

function delay()
  -- jittered around the pause, so the connections do not fire in step
  return pause * (0.5 + math.random())
end
