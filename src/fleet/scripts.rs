//! What the store does atomically for the session table: enter a session under its keys
//! (unless a cap is reached, or the user was moved meanwhile), renew, leave. Times are the
//! store's own clock (`TIME`), so that instances whose clocks differ still agree on what has
//! expired.

/// Enter a session. `KEYS`: the counts' keys, then (for a placed session) the user's
/// assignment. `ARGV`: the ttl (ms), the member, the number of counts, a cap per count, then
/// (placed) the host and the stickiness (ms); a placed session's last count is the user's
/// sessions. Answers 0 when entered, the (1-based) index of a key at its cap, or -1 when the
/// user's assignment names another host now (it was moved while this login was under way) and
/// none of its sessions is on this one. A key's expiry is only ever pushed later: an instance
/// with a shorter ttl does not cut short another's sessions.
pub const ENTER: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n = tonumber(ARGV[3])
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local cap = tonumber(ARGV[3 + i])
  if cap > 0 and redis.call('ZCARD', KEYS[i]) >= cap then return i end
end
local host = ARGV[4 + n]
if host then
  local current = redis.call('GET', KEYS[n + 1])
  if current and current ~= host then
    local here = false
    for _, m in ipairs(redis.call('ZRANGE', KEYS[n], 0, 63)) do
      if string.sub(m, -(#host + 1)) == '@' .. host then here = true end
    end
    if not here then return -1 end
  end
  redis.call('SET', KEYS[n + 1], host, 'PX', ARGV[5 + n])
end
local ttl = tonumber(ARGV[1])
for i = 1, n do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[2])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 0
";

/// Renew sessions. `KEYS`: a key per session and key; `ARGV`: the ttl (ms), `1` to renew only
/// members still there (the routine: a session that ended meanwhile is not brought back) or
/// `0` to put back what the store lost, then the member for each key.
pub const RENEW: &str = r"
local t = redis.call('TIME')
local ttl = tonumber(ARGV[1])
local expiry = t[1] * 1000 + math.floor(t[2] / 1000) + ttl
for i, k in ipairs(KEYS) do
  if ARGV[2] == '1' then
    redis.call('ZADD', k, 'XX', expiry, ARGV[2 + i])
  else
    redis.call('ZADD', k, expiry, ARGV[2 + i])
  end
  local left = redis.call('PTTL', k)
  if left ~= -2 and left < ttl then redis.call('PEXPIRE', k, ttl) end
end
return 0
";

/// Take a session out of its keys (`ARGV[1]` the member). For a placed session, the last two
/// keys are again the user's sessions and its assignment, `ARGV[2]` the host and `ARGV[3]`
/// the stickiness: when the user's last session ended, its assignment outlives it by that
/// long (unless it was moved meanwhile).
pub const LEAVE: &str = r"
local n = #KEYS
if ARGV[2] then n = n - 2 end
for i = 1, n do redis.call('ZREM', KEYS[i], ARGV[1]) end
if ARGV[2] and redis.call('ZCARD', KEYS[n + 1]) == 0 then
  local current = redis.call('GET', KEYS[n + 2])
  if not current or current == ARGV[2] then
    redis.call('SET', KEYS[n + 2], ARGV[2], 'PX', ARGV[3])
  end
end
return 0
";
