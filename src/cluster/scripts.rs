//! The Lua scripts that make multi-key steps atomic in Redis.
//!
//! Each runs as one command, so no other client sees it half done. Some read keys they compute
//! (the presence of each node of a room): fine on one Redis, not on Redis Cluster (see
//! docs/CLUSTER.md). They are loaded with `SCRIPT LOAD` on each new connection and run with
//! `EVALSHA`, so a line costs its arguments on the wire, not the script's text.

/// A script and the name used in errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Script {
    pub(crate) name: &'static str,
    pub(crate) source: &'static str,
}

/// Numbers a room line, appends it to the room's history and publishes it, in one step, so
/// history order equals publication order and a line's number tells a newcomer whether it was
/// already in the history it read. The history keeps the message as published (who sent it
/// included, so a newcomer's own lines can be left out of its replay). KEYS: history, counter. ARGV: channel, node, sender id or
/// `-`, line, lines kept, expiry of history and counter (ms). Returns the number of nodes that
/// received it.
pub(crate) const PUBLISH: Script = Script {
    name: "publish",
    source: r"
local seq = string.format('%d', redis.call('INCR', KEYS[2]))
redis.call('PEXPIRE', KEYS[2], ARGV[6])
local message = ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. seq .. ' ' .. ARGV[4]
local keep = tonumber(ARGV[5])
if keep > 0 then
  redis.call('RPUSH', KEYS[1], message)
  redis.call('LTRIM', KEYS[1], -keep, -1)
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
return redis.call('PUBLISH', ARGV[1], message)
",
};

/// Deletes a name only if it is still ours. KEYS: name. ARGV: our value. Returns 1 if deleted.
pub(crate) const RELEASE: Script = Script {
    name: "release",
    source: r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
};

/// Renews our names, and claims again those that expired meanwhile (Redis restarted, or was
/// unreachable longer than the expiry). KEYS: names. ARGV: expiry (ms), then our value for each
/// key. Returns the 1-based indexes of the names someone else holds now.
pub(crate) const RENEW: Script = Script {
    name: "renew",
    source: r"
local lost = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
  elseif not value then
    redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
  else
    lost[#lost + 1] = i
  end
end
return lost
",
};

/// Records a member of a room on this node. KEYS: presence, room nodes, rooms. ARGV: id,
/// name, presence expiry (ms), node, room.
pub(crate) const ENTER: Script = Script {
    name: "enter",
    source: r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
return 1
",
};

/// Forgets a member of a room on this node, and the room when nobody is left in it. KEYS:
/// presence, room nodes, rooms. ARGV: id, node, room.
pub(crate) const EXIT: Script = Script {
    name: "exit",
    source: r"
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
  if redis.call('SCARD', KEYS[2]) == 0 then
    redis.call('SREM', KEYS[3], ARGV[3])
  end
end
return 1
",
};

/// Names in a room on every live node; forgets nodes whose presence expired. KEYS: room
/// nodes. ARGV: room.
pub(crate) const WHO: Script = Script {
    name: "who",
    source: r"
local names = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local presence = 'smolchat:presence:' .. ARGV[1] .. ':' .. node
  if redis.call('EXISTS', 'smolchat:alive:' .. node) == 1 then
    for _, name in ipairs(redis.call('HVALS', presence)) do
      names[#names + 1] = name
    end
  elseif redis.call('EXISTS', presence) == 0 then
    redis.call('SREM', KEYS[1], node)
  end
end
return names
",
};

/// Every room with members on a live node, and how many: `room, count, room, count, ...`.
/// Forgets rooms and nodes that are gone. KEYS: rooms.
pub(crate) const ROOMS: Script = Script {
    name: "rooms",
    source: r"
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local nodes = 'smolchat:room-nodes:' .. room
  local count = 0
  for _, node in ipairs(redis.call('SMEMBERS', nodes)) do
    local presence = 'smolchat:presence:' .. room .. ':' .. node
    if redis.call('EXISTS', 'smolchat:alive:' .. node) == 1 then
      count = count + redis.call('HLEN', presence)
    elseif redis.call('EXISTS', presence) == 0 then
      redis.call('SREM', nodes, node)
    end
  end
  if redis.call('SCARD', nodes) == 0 then
    redis.call('SREM', KEYS[1], room)
  elseif count > 0 then
    out[#out + 1] = room
    out[#out + 1] = count
  end
end
return out
",
};

/// Every script, in the order of [`Shas`](super::link::Shas)' fields.
pub(crate) const ALL: [Script; 7] = [PUBLISH, RELEASE, RENEW, ENTER, EXIT, WHO, ROOMS];
