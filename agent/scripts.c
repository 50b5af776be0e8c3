/*
 * scripts.c: the Lua scripts that make every change of a job's state one
 * atomic step in Redis.  Every key shares the "{namespace}:" hash tag, so
 * keys built inside a script from ARGV's prefix stay on one Cluster node.
 * Time always comes from Redis TIME, so agents' clocks may disagree.
 * Each script checks everything before its first write: Lua in Redis is
 * atomic but not transactional.
 */
#include "config.h"

#include "dispatchd.h"

#define CANCEL_TEXT	SCRIPTS_CANCEL_TEXT
#define NOW		SCRIPTS_NOW

/*
 * enqueue: fan one event out to its handlers, once per event id.
 * KEYS: seen:<eid>, delayed.
 * ARGV: P eid dedup_ms at_ms event data notify_channel, then per job:
 *   jid handler delay_ms max_attempts timeout_ms backoff_ms backoff_cap_ms
 *   (the backoff is kept so that lease recovery, on any agent, can use it)
 *   key per_key on_busy (key "" for a handler without one).
 * A keyed job due now is admitted through its key (key_admit); with the
 * key busy, on_busy decides: queue waits; coalesce and replace answer
 * with the job that waits already (replace gives it this event's data);
 * reject refuses the whole event, and nothing is written.  A delayed
 * keyed job is admitted when promote makes it due.
 * Returns {1, "jid handler ..."}, for a repeated id {0, first jobs}, or
 * for a rejection {2, "handler key"}.
 */
static const char script_enqueue[] = NOW SCRIPTS_KEY_LUA
"local P = ARGV[1]\n"
"local prev = redis.call('GET', KEYS[1])\n"
"if prev then return {0, prev} end\n"
"local n = (#ARGV - 7) / 10\n"
"local base, at = now, tonumber(ARGV[4])\n"
"if at > now then base = at end\n"
"local hit = {}\n"
"for i = 0, n - 1 do\n"
"  local o = 8 + i * 10\n"
"  local h, key, busy = ARGV[o + 1], ARGV[o + 7], ARGV[o + 9]\n"
"  if redis.call('EXISTS', P .. 'job:' .. ARGV[o]) == 1 then\n"
"    return redis.error_reply('ERR enqueue: job id already exists') end\n"
"  if key ~= '' and busy ~= 'queue' and base + tonumber(ARGV[o + 2]) <= now\n"
"      and tonumber(redis.call('HGET', P .. 'flow:' .. h .. ':keys', key)\n"
"      or 0) >= tonumber(ARGV[o + 8]) then\n"
"    if busy == 'reject' then return {2, h .. ' ' .. key} end\n"
"    hit[i] = redis.call('LINDEX', P .. 'flow:' .. h .. ':wait:' .. key, 0)\n"
"  end\n"
"end\n"
"local list, ready, delayed = {}, 0, 0\n"
"for i = 0, n - 1 do\n"
"  local o = 8 + i * 10\n"
"  local jid, h, key = ARGV[o], ARGV[o + 1], ARGV[o + 7]\n"
"  local due = base + tonumber(ARGV[o + 2])\n"
"  local state = 'ready'\n"
"  if due > now then state = 'delayed' end\n"
"  if hit[i] then\n"
"    jid = hit[i]\n"
"    if ARGV[o + 9] == 'replace' then\n"
"      redis.call('HSET', P .. 'job:' .. jid, 'data', ARGV[6],\n"
"        'event', ARGV[5], 'event_id', ARGV[2])\n"
"    end\n"
"  else\n"
"    local jk = P .. 'job:' .. jid\n"
"    redis.call('HSET', jk, 'id', jid, 'event_id', ARGV[2],\n"
"      'event', ARGV[5], 'handler', h, 'data', ARGV[6], 'state', state,\n"
"      'attempt', 0, 'failures', 0, 'max_attempts', ARGV[o + 3],\n"
"      'timeout_ms', ARGV[o + 4], 'backoff_ms', ARGV[o + 5],\n"
"      'backoff_cap_ms', ARGV[o + 6], 'created_ms', now, 'due_ms', due)\n"
"    if key ~= '' then\n"
"      redis.call('HSET', jk, 'key', key, 'per_key', ARGV[o + 8]) end\n"
"    if state == 'delayed' then\n"
"      redis.call('ZADD', KEYS[2], due, jid); delayed = delayed + 1\n"
"    elseif key ~= '' then\n"
"      if key_admit(P, jid, jk, h, key, tonumber(ARGV[o + 8])) then\n"
"        ready = ready + 1 end\n"
"    else\n"
"      redis.call('LPUSH', P .. 'ready:' .. h, jid); ready = ready + 1\n"
"    end\n"
"  end\n"
"  list[#list + 1] = jid .. ' ' .. h\n"
"end\n"
"local joined = table.concat(list, ' ')\n"
"redis.call('SET', KEYS[1], joined, 'PX', ARGV[3])\n"
"if ARGV[7] ~= '' then\n"
"  if ready > 0 then redis.call('PUBLISH', ARGV[7], 'r') end\n"
"  if delayed > 0 then redis.call('PUBLISH', ARGV[7], 'd') end\n"
"end\n"
"return {1, joined}\n";

/*
 * promote: move due delayed jobs to their ready lists; a keyed job that
 * holds no slot yet (delayed at enqueue, or retried by hand) is admitted
 * through its key, one that holds it (a retry) goes to its list.
 * KEYS: delayed.  ARGV: P limit notify_channel.
 * Returns {moved, next_due_ms or -1, now_ms}.
 */
static const char script_promote[] = NOW SCRIPTS_KEY_LUA
"local P = ARGV[1]\n"
"local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0,\n"
"  tonumber(ARGV[2]))\n"
"local moved = 0\n"
"for _, jid in ipairs(due) do\n"
"  redis.call('ZREM', KEYS[1], jid)\n"
"  local jk = P .. 'job:' .. jid\n"
"  local f = redis.call('HMGET', jk, 'handler', 'key', 'kslot', 'per_key')\n"
"  local h = f[1]\n"
"  if h and f[2] and not f[3] then\n"
"    if key_admit(P, jid, jk, h, f[2], tonumber(f[4]) or 1) then\n"
"      moved = moved + 1 end\n"
"  elseif h then\n"
"    redis.call('HSET', jk, 'state', 'ready')\n"
"    redis.call('LPUSH', P .. 'ready:' .. h, jid)\n"
"    moved = moved + 1\n"
"  end\n"
"end\n"
"if moved > 0 and ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], 'r') end\n"
"local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
"local nextdue = -1\n"
"if nxt[2] then nextdue = tonumber(nxt[2]) end\n"
"return {moved, nextdue, now}\n";

/*
 * extend: heartbeat and lease renewal for the jobs this agent runs.  With
 * reconcile set it also puts back jobs the agent's running set holds but
 * the agent does not know it runs: a fetch whose reply was lost with a
 * connection (the caller sets reconcile only when no fetch is in flight).
 * It also takes or keeps the events lead (lock:events, for leader_ttl_ms;
 * 0: the agent does not compete), which decides who enqueues pub/sub
 * events that carry no id.
 * KEYS: leases, agent:<name>, agents, agent:<name>:info,
 *   agent:<name>:running, results, lock:events.
 * ARGV: P agent lease_ms heartbeat_ttl_ms token version host reconcile
 *   results_max leader_ttl_ms, then pairs jid attempt.  Agents silent for
 *   a day are forgotten.
 * A job an administrator cancelled while it ran (the admin script marks
 * it) and whose lease this agent still holds is reported too: the
 * fallback when the notify hint was lost.  With reconcile, such a job is
 * deleted as cancelled rather than put back.
 * Returns {leader (0 or 1), {jids whose lease this agent no longer
 * holds}, {jids it holds that are marked cancelled}}.
 */
static const char script_extend[] = NOW SCRIPTS_KEY_LUA
"local P, agent = ARGV[1], ARGV[2]\n"
"redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[4])\n"
"redis.call('ZADD', KEYS[3], now, agent)\n"
"redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 86400000)\n"
"redis.call('HSET', KEYS[4], 'version', ARGV[6], 'host', ARGV[7])\n"
"redis.call('PEXPIRE', KEYS[4], 86400000)\n"
"local lost, lease, mine, cancel = {}, now + tonumber(ARGV[3]), {}, {}\n"
"local leader = 0\n"
"if tonumber(ARGV[10]) > 0 then\n"
"  local cur = redis.call('GET', KEYS[7])\n"
"  if not cur or cur == agent then\n"
"    redis.call('SET', KEYS[7], agent, 'PX', ARGV[10]); leader = 1\n"
"  end\n"
"end\n"
"for i = 11, #ARGV, 2 do\n"
"  local jid, att = ARGV[i], ARGV[i + 1]\n"
"  mine[jid] = true\n"
"  local jk = P .. 'job:' .. jid\n"
"  local f = redis.call('HMGET', jk, 'owner', 'attempt', 'state', 'cancel')\n"
"  if f[1] == agent and f[2] == att and f[3] == 'running' then\n"
"    redis.call('ZADD', KEYS[1], 'XX', lease, jid)\n"
"    redis.call('HSET', jk, 'lease_ms', lease)\n"
"    if f[4] then cancel[#cancel + 1] = jid end\n"
"  else lost[#lost + 1] = jid end\n"
"end\n"
"if ARGV[8] == '1' then\n"
"  for _, jid in ipairs(redis.call('SMEMBERS', KEYS[5])) do\n"
"    if not mine[jid] then\n"
"      local jk = P .. 'job:' .. jid\n"
"      local f = redis.call('HMGET', jk, 'owner', 'state', 'handler',\n"
"        'attempt', 'event', 'event_id', 'cancel', 'fleet', 'kslot')\n"
"      redis.call('SREM', KEYS[5], jid)\n"
"      if f[1] == agent and f[2] == 'running' then\n"
"        if f[8] then\n"
"          redis.call('SREM', P .. 'flow:' .. f[3] .. ':running', jid) end\n"
"        local st, err = 'released', 'fetched on a lost connection; put back'\n"
"        redis.call('ZREM', KEYS[1], jid)\n"
"        if f[7] then\n"
"          st = 'cancelled'\n"
"          err = 'cancelled by an administrator before it ran'\n"
"          if f[9] then key_free(P, jk, f[3]) end\n"
"          redis.call('DEL', jk)\n"
"        else\n"
"          redis.call('HSET', jk, 'state', 'ready', 'owner', '')\n"
"          redis.call('RPUSH', P .. 'ready:' .. f[3], jid)\n"
"        end\n"
"        redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[9], '*',\n"
"          'job', jid, 'event', f[5], 'event_id', f[6], 'handler', f[3],\n"
"          'attempt', f[4], 'outcome', st, 'agent', agent,\n"
"          'exit', '', 'signal', '', 'timed_out', '0', 'started_ms', '',\n"
"          'duration_ms', '', 'stdout', '', 'stderr', '',\n"
"          'output_bytes', '0', 'truncated', '0', 'host', '',\n"
"          'error', err)\n"
"      end\n"
"    end\n"
"  end\n"
"end\n"
"return {leader, lost, cancel}\n";

/*
 * recover: jobs whose lease expired (their agent died or lost Redis) are
 * retried with a failure counted, or sent to dead after max_attempts; the
 * count is what stops a job that kills its agent from looping forever.
 * A job an administrator cancelled while it ran is not retried: it is
 * deleted and recorded 'cancelled'.  A keyed job that ends so gives its
 * key's slot to the next waiting job (and "r" is published); a retried
 * one keeps it.
 * One agent at a time runs it: the lock key.
 * KEYS: leases delayed dead results lock:recover.
 * ARGV: P lock_ms limit grace_ms backoff_base_ms backoff_cap_ms
 *   results_max dead_ttl_s notify_channel; the backoff is a default for
 *   jobs that carry none of their own.
 * Also forgets dead jobs older than dead_ttl_s (their hashes expire then).
 * Returns the number of jobs recovered, or -1 when another agent holds
 * the lock.
 */
static const char script_recover[] = NOW SCRIPTS_KEY_LUA
"local P = ARGV[1]\n"
"if not redis.call('SET', KEYS[5], now, 'NX', 'PX', ARGV[2]) then\n"
"  return -1 end\n"
"local exp = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf',\n"
"  now - tonumber(ARGV[4]), 'LIMIT', 0, tonumber(ARGV[3]))\n"
"local n, adm = 0, 0\n"
"for _, jid in ipairs(exp) do\n"
"  redis.call('ZREM', KEYS[1], jid)\n"
"  local jk = P .. 'job:' .. jid\n"
"  local f = redis.call('HMGET', jk, 'owner', 'attempt', 'state',\n"
"    'failures', 'max_attempts', 'event', 'handler', 'event_id',\n"
"    'backoff_ms', 'backoff_cap_ms', 'cancel', 'fleet', 'kslot')\n"
"  if f[3] == 'running' then\n"
"    if f[12] then\n"
"      redis.call('SREM', P .. 'flow:' .. f[7] .. ':running', jid) end\n"
"    if f[1] and f[1] ~= '' then\n"
"      redis.call('SREM', P .. 'agent:' .. f[1] .. ':running', jid) end\n"
"    local failures, status = tonumber(f[4]) + 1, 'retry'\n"
"    local err = 'lease expired'\n"
"    if f[11] then\n"
"      status, err = 'cancelled', " CANCEL_TEXT " .. '; lease expired'\n"
"      if f[13] and key_free(P, jk, f[7]) then adm = adm + 1 end\n"
"      redis.call('DEL', jk)\n"
"    else\n"
"      redis.call('HSET', jk, 'failures', failures, 'owner', '',\n"
"        'last_error', err)\n"
"      if failures >= tonumber(f[5]) then status = 'dead' end\n"
"    end\n"
"    if status == 'dead' then\n"
"      redis.call('HSET', jk, 'state', 'dead', 'died_ms', now)\n"
"      if f[13] and key_free(P, jk, f[7]) then adm = adm + 1 end\n"
"      redis.call('ZADD', KEYS[3], now, jid)\n"
"      if tonumber(ARGV[8]) > 0 then redis.call('EXPIRE', jk, ARGV[8]) end\n"
"    elseif status == 'retry' then\n"
"      local base = tonumber(f[9] or ARGV[5]) or tonumber(ARGV[5])\n"
"      local cap = tonumber(f[10] or ARGV[6]) or tonumber(ARGV[6])\n"
"      local b = math.min(cap, base * 2 ^ (failures - 1))\n"
"      redis.call('HSET', jk, 'state', 'delayed', 'due_ms', now + b)\n"
"      redis.call('ZADD', KEYS[2], now + b, jid)\n"
"    end\n"
"    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'job', jid,\n"
"      'event', f[6] or '', 'event_id', f[8] or '', 'handler', f[7] or '',\n"
"      'attempt', f[2] or '', 'outcome', status, 'agent', f[1] or '',\n"
"      'exit', '', 'signal', '', 'timed_out', '0', 'started_ms', '',\n"
"      'duration_ms', '', 'stdout', '', 'stderr', '', 'output_bytes', '0',\n"
"      'truncated', '0', 'host', '', 'error', err)\n"
"    n = n + 1\n"
"  end\n"
"end\n"
"if n > 0 and ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[9], 'd') end\n"
"if adm > 0 and ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[9], 'r') end\n"
"redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf',\n"
"  now - tonumber(ARGV[8]) * 1000)\n"
"return n\n";

/*
 * claim: at start, take the agent's name.  A heartbeat key holding another
 * token means another live agent has this name: refuse.  Otherwise set
 * ours, and make the leases of whatever our previous life was running
 * expire now, so recover retries them (with a failure counted: the job may
 * be what killed the agent).
 * It also takes the events lead if nobody holds it (see extend).
 * KEYS: agent:<name> agent:<name>:running leases agents lock:events.
 * ARGV: token previous_tokens (blank-separated) heartbeat_ttl_ms name
 *   leader_ttl_ms.
 * Returns {jobs reclaimed, "", 0, leader} or {-1, the other token, its
 * remaining ms}.
 */
static const char script_claim[] = NOW
"local cur = redis.call('GET', KEYS[1])\n"
"if cur and cur ~= ARGV[1] and\n"
"    not string.find(' ' .. ARGV[2] .. ' ', ' ' .. cur .. ' ', 1, true) then\n"
"  return {-1, cur, redis.call('PTTL', KEYS[1])} end\n"
"redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])\n"
"redis.call('ZADD', KEYS[4], now, ARGV[4])\n"
"local jids = redis.call('SMEMBERS', KEYS[2])\n"
"for _, jid in ipairs(jids) do redis.call('ZADD', KEYS[3], 'XX', 0, jid) end\n"
"redis.call('DEL', KEYS[2])\n"
"local leader = 0\n"
"if tonumber(ARGV[5]) > 0 then\n"
"  local cur = redis.call('GET', KEYS[5])\n"
"  if not cur or cur == ARGV[4] then\n"
"    redis.call('SET', KEYS[5], ARGV[4], 'PX', ARGV[5]); leader = 1\n"
"  end\n"
"end\n"
"return {#jids, '', 0, leader}\n";

/*
 * status: queue depths per handler and the agents, read-only.  Sets are
 * scanned up to limit members; "truncated" says when counts are partial.
 * KEYS: delayed leases dead results agents paused.  ARGV: P limit
 * handler...
 * Returns {now, {{name, ready, delayed, running, dead, done_1h,
 * failed_1h, oldest_ready_created_ms or -1, paused_until_ms (-1: not
 * paused, 0: until resumed), busy keys, jobs waiting for a key, {{key,
 * slots held, waiting}...} (the 10 with most waiting), running
 * fleet-wide (max_running's count), rate tokens ("" for none)}...},
 * {{agent, heartbeat_ms,
 * alive, running, version, host}...}, truncated, delayed_total,
 * dead_total}.
 */
static const char script_status[] = NOW
"local P, limit, idx, trunc = ARGV[1], tonumber(ARGV[2]), {}, 0\n"
"for i = 3, #ARGV do\n"
"  local h = ARGV[i]\n"
"  local t = {redis.call('LLEN', P .. 'ready:' .. h), 0, 0, 0, 0, 0, -1}\n"
"  local last = redis.call('LINDEX', P .. 'ready:' .. h, -1)\n"
"  if last then\n"
"    local c = redis.call('HGET', P .. 'job:' .. last, 'created_ms')\n"
"    if c then t[7] = tonumber(c) end\n"
"  end\n"
"  idx[h] = t\n"
"end\n"
"local function count(key, slot)\n"
"  local ids = redis.call('ZRANGE', key, 0, limit - 1)\n"
"  if #ids >= limit then trunc = 1 end\n"
"  for _, jid in ipairs(ids) do\n"
"    local h = redis.call('HGET', P .. 'job:' .. jid, 'handler')\n"
"    if h and idx[h] then idx[h][slot] = idx[h][slot] + 1 end\n"
"  end\n"
"end\n"
"count(KEYS[1], 2); count(KEYS[2], 3); count(KEYS[3], 4)\n"
"local es = redis.call('XREVRANGE', KEYS[4], '+', now - 3600000,\n"
"  'COUNT', limit)\n"
"if #es >= limit then trunc = 1 end\n"
"for _, e in ipairs(es) do\n"
"  local f, h, o = e[2], nil, nil\n"
"  for i = 1, #f, 2 do\n"
"    if f[i] == 'handler' then h = f[i + 1]\n"
"    elseif f[i] == 'outcome' then o = f[i + 1] end\n"
"  end\n"
"  if h and idx[h] then\n"
"    if o == 'done' then idx[h][5] = idx[h][5] + 1\n"
"    elseif o == 'retry' or o == 'dead' then idx[h][6] = idx[h][6] + 1 end\n"
"  end\n"
"end\n"
"local hs, ag = {}, {}\n"
"for i = 3, #ARGV do\n"
"  local t = idx[ARGV[i]]\n"
"  local h = ARGV[i]\n"
"  local pu = tonumber(redis.call('HGET', KEYS[6], h) or -1)\n"
"  if pu > 0 and pu <= now then pu = -1 end\n"
"  local fk, top, waiting = P .. 'flow:' .. h .. ':', {}, 0\n"
"  local nk = redis.call('HLEN', fk .. 'keys')\n"
"  if nk > 0 then\n"
"    local kv = redis.call('HSCAN', fk .. 'keys', 0, 'COUNT', limit)[2]\n"
"    if nk > #kv / 2 then trunc = 1 end\n"
"    for j = 1, #kv, 2 do\n"
"      local w = redis.call('LLEN', fk .. 'wait:' .. kv[j])\n"
"      waiting = waiting + w\n"
"      top[#top + 1] = {kv[j], tonumber(kv[j + 1]), w}\n"
"    end\n"
"    table.sort(top, function(a, b) return a[3] > b[3] end)\n"
"    for j = #top, 11, -1 do top[j] = nil end\n"
"  end\n"
"  local tok = redis.call('HGET', fk .. 'rate', 'tokens') or ''\n"
"  hs[#hs + 1] = {h, t[1], t[2], t[3], t[4], t[5], t[6], t[7], pu, nk,\n"
"    waiting, top, redis.call('SCARD', fk .. 'running'), tok}\n"
"end\n"
"local a = redis.call('ZRANGE', KEYS[5], 0, -1, 'WITHSCORES')\n"
"for i = 1, #a, 2 do\n"
"  local n = a[i]\n"
"  local info = redis.call('HMGET', P .. 'agent:' .. n .. ':info',\n"
"    'version', 'host')\n"
"  ag[#ag + 1] = {n, tonumber(a[i + 1]),\n"
"    redis.call('EXISTS', P .. 'agent:' .. n),\n"
"    redis.call('SCARD', P .. 'agent:' .. n .. ':running'),\n"
"    info[1] or '', info[2] or ''}\n"
"end\n"
"return {now, hs, ag, trunc, redis.call('ZCARD', KEYS[1]),\n"
"  redis.call('ZCARD', KEYS[3])}\n";

/* The job hash fields the read-only scripts return, in this order. */
#define JOB_FIELDS \
	"'id', 'handler', 'event', 'event_id', 'state', 'attempt', " \
	"'failures', 'max_attempts', 'created_ms', 'due_ms', 'owner', " \
	"'lease_ms', 'died_ms', 'last_error', 'cancel', 'data'"

/*
 * jobs: list jobs in one state, oldest first, read-only.
 * KEYS: delayed leases dead.  ARGV: P state handler_or_empty limit
 * handler... (the handlers whose ready lists to read).
 * Returns a list of job field lists (JOB_FIELDS order).
 */
static const char script_jobs[] =
"local P, state, hf, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])\n"
"local ids = {}\n"
"if state == 'ready' then\n"
"  for i = 5, #ARGV do\n"
"    if hf == '' or hf == ARGV[i] then\n"
"      local l = redis.call('LRANGE', P .. 'ready:' .. ARGV[i], -limit, -1)\n"
"      for j = #l, 1, -1 do ids[#ids + 1] = l[j] end\n"
"    end\n"
"  end\n"
"else\n"
"  local key = KEYS[3]\n"
"  if state == 'delayed' then key = KEYS[1]\n"
"  elseif state == 'running' then key = KEYS[2] end\n"
"  for _, jid in ipairs(redis.call('ZRANGE', key, 0, limit * 20 - 1)) do\n"
"    ids[#ids + 1] = jid\n"
"  end\n"
"end\n"
"local out = {}\n"
"for _, jid in ipairs(ids) do\n"
"  if #out >= limit then break end\n"
"  local f = redis.call('HMGET', P .. 'job:' .. jid, " JOB_FIELDS ")\n"
"  if f[1] and (hf == '' or f[2] == hf) then\n"
"    for i = 1, #f do if not f[i] then f[i] = '' end end\n"
"    out[#out + 1] = f\n"
"  end\n"
"end\n"
"return out\n";

/*
 * job: one job's fields and its results (newest scanned first, up to
 * limit entries), read-only.
 * KEYS: results.  ARGV: P jid limit.
 * Returns {fields (JOB_FIELDS order, or empty), {{stream_id, {k, v...}}...}}.
 */
static const char script_job[] =
"local f = redis.call('HMGET', ARGV[1] .. 'job:' .. ARGV[2], " JOB_FIELDS ")\n"
"if not f[1] then f = {} end\n"
"for i = 1, #f do if not f[i] then f[i] = '' end end\n"
"local res = {}\n"
"for _, e in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT',\n"
"    tonumber(ARGV[3]))) do\n"
"  for i = 1, #e[2], 2 do\n"
"    if e[2][i] == 'job' and e[2][i + 1] == ARGV[2] then\n"
"      table.insert(res, 1, e)\n"
"    end\n"
"  end\n"
"end\n"
"return {f, res}\n";

/*
 * admin: change jobs on a person's request.
 *   cancel JID: delete a ready, delayed, waiting or dead job, with a
 *     'cancelled' entry in the results stream (a keyed job that holds its
 *     key's slot gives it to the next waiting job); a running one is marked (the field
 *     cancel, its state and lease unchanged) and "c JID" published on the
 *     notify channel, for its agent to stop it: its finish, or lease
 *     recovery, then deletes and records it;
 *   retry JID: a dead or delayed job goes to its ready list now, its
 *     failures reset (a dead keyed job through its key: it may wait);
 *   retry_dead HANDLER_OR_EMPTY: retry up to limit dead jobs;
 *   purge HANDLER_OR_EMPTY: delete up to limit dead jobs that died more
 *     than older_ms ago.
 * KEYS: delayed dead results.
 * ARGV: P action target older_ms limit results_max notify_channel.
 * Returns {count, message}; a running job cancelled: {1, "cancelling",
 * the agent that runs it}.
 */
static const char script_admin[] = NOW SCRIPTS_KEY_LUA
"local P, action, target = ARGV[1], ARGV[2], ARGV[3]\n"
"local older, limit = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
"local function requeue(jid)\n"
"  local jk = P .. 'job:' .. jid\n"
"  local f = redis.call('HMGET', jk, 'state', 'handler', 'key', 'kslot',\n"
"    'per_key')\n"
"  if f[1] == 'dead' then redis.call('ZREM', KEYS[2], jid)\n"
"  elseif f[1] == 'delayed' then redis.call('ZREM', KEYS[1], jid)\n"
"  else return false end\n"
"  redis.call('HSET', jk, 'state', 'ready', 'failures', 0, 'due_ms', now)\n"
"  redis.call('HDEL', jk, 'died_ms')\n"
"  redis.call('PERSIST', jk)\n"
"  if f[3] and not f[4] then\n"
"    key_admit(P, jid, jk, f[2], f[3], tonumber(f[5]) or 1)\n"
"  else redis.call('LPUSH', P .. 'ready:' .. f[2], jid) end\n"
"  return true\n"
"end\n"
"local n = 0\n"
"if action == 'cancel' then\n"
"  local jk = P .. 'job:' .. target\n"
"  local f = redis.call('HMGET', jk, 'state', 'handler', 'event',\n"
"    'event_id', 'attempt', 'owner', 'key', 'kslot')\n"
"  if not f[1] then\n"
"    return {0, 'no such job: it finished, was cancelled or never existed'}\n"
"  end\n"
"  if f[1] == 'running' then\n"
"    redis.call('HSET', jk, 'cancel', 1)\n"
"    if ARGV[7] ~= '' then redis.call('PUBLISH', ARGV[7], 'c ' .. target) end\n"
"    return {1, 'cancelling', f[6] or ''}\n"
"  end\n"
"  if f[1] == 'waiting' then\n"
"    redis.call('LREM', P .. 'flow:' .. f[2] .. ':wait:' .. f[7], 0, target)\n"
"  elseif f[8] then key_free(P, jk, f[2]) end\n"
"  redis.call('LREM', P .. 'ready:' .. f[2], 0, target)\n"
"  redis.call('ZREM', KEYS[1], target)\n"
"  redis.call('ZREM', KEYS[2], target)\n"
"  redis.call('DEL', jk)\n"
"  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'job', target,\n"
"    'event', f[3], 'event_id', f[4], 'handler', f[2], 'attempt', f[5],\n"
"    'outcome', 'cancelled', 'agent', '', 'exit', '', 'signal', '',\n"
"    'timed_out', '0', 'started_ms', '', 'duration_ms', '', 'stdout', '',\n"
"    'stderr', '', 'output_bytes', '0', 'truncated', '0', 'host', '',\n"
"    'error', 'cancelled by an administrator')\n"
"  return {1, 'cancelled'}\n"
"elseif action == 'retry' then\n"
"  if redis.call('EXISTS', P .. 'job:' .. target) == 0 then\n"
"    return {0, 'no such job'} end\n"
"  if not requeue(target) then\n"
"    return {0, 'only a dead or delayed job can be retried'} end\n"
"  n = 1\n"
"elseif action == 'retry_dead' or action == 'purge' then\n"
"  local ids\n"
"  if action == 'purge' then\n"
"    ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - older,\n"
"      'LIMIT', 0, limit * 20)\n"
"  else ids = redis.call('ZRANGE', KEYS[2], 0, limit * 20 - 1) end\n"
"  for _, jid in ipairs(ids) do\n"
"    if n >= limit then break end\n"
"    local jk = P .. 'job:' .. jid\n"
"    local h = redis.call('HGET', jk, 'handler')\n"
"    if target == '' or h == target then\n"
"      if action == 'purge' then\n"
"        redis.call('ZREM', KEYS[2], jid); redis.call('DEL', jk); n = n + 1\n"
"      elseif requeue(jid) then n = n + 1 end\n"
"    end\n"
"  end\n"
"else return redis.error_reply('ERR admin: unknown action') end\n"
"if n > 0 and action ~= 'purge' and ARGV[7] ~= '' then\n"
"  redis.call('PUBLISH', ARGV[7], 'r') end\n"
"return {n, 'ok'}\n";

/*
 * routes: the routes of every agent heard from within grace_ms, except
 * the caller's own, read-only.
 * KEYS: agents.  ARGV: P self grace_ms.
 * Returns {{agent, {handler, spec, ...}}...}.
 */
static const char script_routes[] = NOW
"local out = {}\n"
"for _, a in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1],\n"
"    now - tonumber(ARGV[3]), '+inf')) do\n"
"  if a ~= ARGV[2] then\n"
"    out[#out + 1] = {a, redis.call('HGETALL', ARGV[1] .. 'routes:' .. a)}\n"
"  end\n"
"end\n"
"return out\n";

/*
 * Each script's KEYS and ARGV by name, as its comment above states them;
 * a bracketed group at the end repeats.  call.c checks every call against
 * these, so an argument added, dropped or moved fails at its first use.
 */
const struct script scripts[SCRIPT_COUNT] = {
	[SCRIPT_ENQUEUE] = { "enqueue", script_enqueue,
	    "seen delayed",
	    "P eid dedup_ms at_ms event data notify_channel "
	    "[jid handler delay_ms max_attempts timeout_ms backoff_ms "
	    "backoff_cap_ms key per_key on_busy]" },
	[SCRIPT_PROMOTE] = { "promote", script_promote,
	    "delayed",
	    "P limit notify_channel" },
	[SCRIPT_FETCH] = { "fetch", scripts_flow_fetch,
	    "leases running paused",
	    "P agent lease_ms want [handler room flow]" },
	[SCRIPT_EXTEND] = { "extend", script_extend,
	    "leases agent agents info running results lock:events",
	    "P agent lease_ms heartbeat_ttl_ms token version host reconcile "
	    "results_max leader_ttl_ms [jid attempt]" },
	[SCRIPT_FINISH] = { "finish", scripts_flow_finish,
	    "job leases running delayed dead results ready fin paused",
	    "jid agent attempt outcome backoff_ms results_max dead_ttl_s "
	    "remember_ms P lease_ms want rooms [field value]" },
	[SCRIPT_RECOVER] = { "recover", script_recover,
	    "leases delayed dead results lock:recover",
	    "P lock_ms limit grace_ms backoff_base_ms backoff_cap_ms "
	    "results_max dead_ttl_s notify_channel" },
	[SCRIPT_CLAIM] = { "claim", script_claim,
	    "agent running leases agents lock:events",
	    "token previous_tokens heartbeat_ttl_ms name leader_ttl_ms" },
	[SCRIPT_STATUS] = { "status", script_status,
	    "delayed leases dead results agents paused",
	    "P limit [handler]" },
	[SCRIPT_JOBS] = { "jobs", script_jobs,
	    "delayed leases dead",
	    "P state handler_or_empty limit [handler]" },
	[SCRIPT_JOB] = { "job", script_job,
	    "results",
	    "P jid limit" },
	[SCRIPT_ADMIN] = { "admin", script_admin,
	    "delayed dead results",
	    "P action target older_ms limit results_max notify_channel" },
	[SCRIPT_ROUTES] = { "routes", script_routes,
	    "agents",
	    "P self grace_ms" },
	[SCRIPT_PAUSE] = { "pause", scripts_flow_pause,
	    "paused",
	    "action handler for_ms notify_channel" },
};
