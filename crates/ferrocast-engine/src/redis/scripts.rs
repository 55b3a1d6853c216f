//! Lua scripts: each is one atomic round trip, loaded once and invoked by SHA.

/// Publish: idempotency check, next offset, append to history, trim, expire, publish the
/// message (MessagePack offset + epoch + envelope) to the channel's pub/sub channel.
///
/// KEYS: history, meta, idempotency key, pub/sub channel.
/// ARGV: envelope, history size, history ttl (s), meta ttl (s), epoch candidate,
///       idempotency ttl (s, 0 = none), use history (1/0), publish command (`publish`, or
///       `spublish` on a Redis Cluster).
/// Returns {offset, epoch, fresh}: fresh is 0 for a repeat of an idempotent publish
/// (nothing published again).
pub const PUBLISH: &str = r#"
if ARGV[6] ~= '0' then
  local prev = redis.call('get', KEYS[3])
  if prev then
    local sep = string.find(prev, ':', 1, true)
    return {tonumber(string.sub(prev, 1, sep - 1)), string.sub(prev, sep + 1), 0}
  end
end
local offset = 0
local epoch = ''
if ARGV[7] == '1' then
  epoch = redis.call('hget', KEYS[2], 'e')
  if not epoch then
    epoch = ARGV[5]
    redis.call('hset', KEYS[2], 'e', epoch)
    redis.call('del', KEYS[1])
  end
  offset = redis.call('hincrby', KEYS[2], 's', 1)
  redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], offset .. '-1', 'd', ARGV[1])
  redis.call('expire', KEYS[1], ARGV[3])
  redis.call('expire', KEYS[2], ARGV[4])
end
redis.call(ARGV[8], KEYS[4], cmsgpack.pack(offset) .. cmsgpack.pack(epoch) .. ARGV[1])
if ARGV[6] ~= '0' then
  redis.call('set', KEYS[3], offset .. ':' .. epoch, 'EX', ARGV[6])
end
return {offset, epoch, 1}
"#;

/// History read with the stream position.
///
/// KEYS: history, meta.
/// ARGV: epoch candidate, meta ttl (s), since offset, limit (-1 all, 0 none), reverse (1/0),
///       use since (1/0).
/// Returns {epoch, top offset, entries}.
pub const HISTORY: &str = r#"
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('hset', KEYS[2], 'e', epoch)
  redis.call('expire', KEYS[2], ARGV[2])
  redis.call('del', KEYS[1])
end
local top = tonumber(redis.call('hget', KEYS[2], 's') or '0')
local limit = tonumber(ARGV[4])
local entries = {}
if limit ~= 0 then
  local args
  if ARGV[5] == '0' then
    local start = '-'
    if ARGV[6] == '1' then start = '(' .. ARGV[3] .. '-1' end
    args = {'xrange', KEYS[1], start, '+'}
  else
    local stop = '+'
    if ARGV[6] == '1' then stop = '(' .. ARGV[3] .. '-1' end
    args = {'xrevrange', KEYS[1], stop, '-'}
  end
  if limit > 0 then
    table.insert(args, 'COUNT')
    table.insert(args, limit)
  end
  entries = redis.call(unpack(args))
end
return {epoch, top, entries}
"#;

/// Presence read: drops expired entries, returns the rest (HGETALL).
///
/// KEYS: presence hash, presence expiry zset. ARGV: now (s).
pub const PRESENCE_GET: &str = r#"
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', ARGV[1])
if #expired > 0 then
  for i = 1, #expired, 1000 do
    redis.call('hdel', KEYS[1], unpack(expired, i, math.min(i + 999, #expired)))
  end
  redis.call('zremrangebyscore', KEYS[2], '-inf', ARGV[1])
end
return redis.call('hgetall', KEYS[1])
"#;

/// Registers a user connection under a limit.
///
/// KEYS: user connections zset, online zset (absent on a Redis Cluster). ARGV: user,
/// client, now (s), expiry (s), ttl (s), limit (0 none), track online (1/0).
/// Returns 1 when registered, 0 when over the limit.
pub const USER_ADD: &str = r#"
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[3])
local limit = tonumber(ARGV[6])
if limit > 0 and redis.call('zscore', KEYS[1], ARGV[2]) == false then
  if redis.call('zcard', KEYS[1]) >= limit then
    return 0
  end
end
redis.call('zadd', KEYS[1], ARGV[4], ARGV[2])
redis.call('expire', KEYS[1], ARGV[5])
if ARGV[7] == '1' then
  redis.call('zadd', KEYS[2], ARGV[4], ARGV[1])
end
return 1
"#;

/// Removes a user connection; the user goes offline when none is left.
///
/// KEYS: user connections zset, online zset (absent on a Redis Cluster).
/// ARGV: user, client, now (s), track online (1/0).
pub const USER_REMOVE: &str = r#"
redis.call('zrem', KEYS[1], ARGV[2])
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[3])
if ARGV[4] == '1' and redis.call('zcard', KEYS[1]) == 0 then
  redis.call('zrem', KEYS[2], ARGV[1])
end
return 1
"#;

/// Takes or renews the command stream lease.
///
/// KEYS: lease. ARGV: owner, ttl (ms). Returns 1 when `owner` holds the lease.
pub const LEASE: &str = r#"
local cur = redis.call('get', KEYS[1])
if cur == false then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Releases the command stream lease if `owner` holds it.
///
/// KEYS: lease. ARGV: owner.
pub const LEASE_RELEASE: &str = r#"
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"#;
