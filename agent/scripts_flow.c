/*
 * scripts_flow.c: the scripts of the fetch path (fetch, and finish, which
 * fetches for the slot it frees) and of flow control: what may start, and
 * when.  Split from scripts.c, whose table declares their KEYS and ARGV;
 * the same rules hold: one atomic step each, time from Redis TIME, every
 * key under the namespace's hash tag.
 */
#include "config.h"

#include "dispatchd.h"

#define CANCEL_TEXT	SCRIPTS_CANCEL_TEXT
#define NOW		SCRIPTS_NOW
#define RATE_GRACE_MS	"5"	/* how early a token may be spent */

/*
 * The fetch loop, shared by fetch and finish: from rooms, an iterator of
 * handler names, their room and their flow ("-" for none, else its
 * limits joined by commas, flow.c), take up to want jobs into out.  Needs
 * P, agent, now, lease (the deadline), want, out, and KEYS[lk], KEYS[rk],
 * KEYS[pk] the leases, the agent's running set and the paused hash.
 * A paused handler is skipped before its list is touched (a pause that
 * has ended is deleted on the way); wake is set to the earliest end of a
 * pause that held a handler asked for, -1 if none, so the agent fetches
 * again then.  Without pauses the cost is one HGETALL of an empty hash.
 * "m<N>": at most N running fleet-wide.
 * A handler with a fleet limit counts flow:<h>:running, the jobs it runs
 * anywhere, each marked 'fleet' so that finish, recover and extend's
 * reconcile take it out; at the limit, members without a lease (lost to
 * a crash between two steps) are dropped, so the count heals.
 * A handler with a rate ("r<count>/<period ms>/<burst>") takes a token
 * per start from the bucket flow:<h>:rate (tokens, ts), refilled by
 * Redis's clock up to burst; the key expires once it would be full
 * again.  When the tokens run out before the list, wake is set to the
 * next token's time too.  A token may be spent RATE_GRACE_MS before it is
 * whole (the bucket then owes it): the agent woken for it arrives a few
 * ms late, and a bucket of one that is full again would lose that time
 * at every start, 5 % of 20/s.
 */
#define FETCH_LOOP(lk, rk, pk) \
"local held, wake = {}, -1\n" \
"local pz = redis.call('HGETALL', KEYS[" pk "])\n" \
"for i = 1, #pz, 2 do\n" \
"  local u = tonumber(pz[i + 1]) or 0\n" \
"  if u > 0 and u <= now then redis.call('HDEL', KEYS[" pk "], pz[i])\n" \
"  else held[pz[i]] = u end\n" \
"end\n" \
"for h, r, fl in rooms do\n" \
"  local room, u, fr, rt, tok, ts, rc, rp, rb = tonumber(r), held[h]\n" \
"  local taken, emptied = 0, false\n" \
"  if u then\n" \
"    room = 0\n" \
"    if u > 0 and (wake < 0 or u < wake) then wake = u end\n" \
"  elseif fl ~= '-' then\n" \
"    local mx = tonumber(string.match(fl, 'm(%d+)'))\n" \
"    if mx then\n" \
"      fr = P .. 'flow:' .. h .. ':running'\n" \
"      local n = redis.call('SCARD', fr)\n" \
"      if n >= mx then\n" \
"        for _, j in ipairs(redis.call('SMEMBERS', fr)) do\n" \
"          if not redis.call('ZSCORE', KEYS[" lk "], j) then\n" \
"            redis.call('SREM', fr, j); n = n - 1 end\n" \
"        end\n" \
"      end\n" \
"      if mx - n < room then room = mx - n end\n" \
"    end\n" \
"    rc, rp, rb = string.match(fl, 'r(%d+)/(%d+)/(%d+)')\n" \
"    if rc then\n" \
"      rc, rp, rb = tonumber(rc), tonumber(rp), tonumber(rb)\n" \
"      rt = P .. 'flow:' .. h .. ':rate'\n" \
"      local b = redis.call('HMGET', rt, 'tokens', 'ts')\n" \
"      tok, ts = tonumber(b[1]) or rb, tonumber(b[2]) or now\n" \
"      if now > ts then\n" \
"        tok = math.min(rb, tok + (now - ts) * rc / rp); ts = now\n" \
"      end\n" \
"      local can = math.min(rb, math.floor(tok + " RATE_GRACE_MS " * rc / rp))\n" \
"      if can < room then room = can end\n" \
"    end\n" \
"  end\n" \
"  while room > 0 and #out < want do\n" \
"    local jid = redis.call('RPOP', P .. 'ready:' .. h)\n" \
"    if not jid then emptied = true; break end\n" \
"    local jk = P .. 'job:' .. jid\n" \
"    local f = redis.call('HMGET', jk, 'state', 'attempt', 'data',\n" \
"      'max_attempts', 'event', 'event_id', 'created_ms')\n" \
"    if f[1] == 'ready' then\n" \
"      local attempt = (tonumber(f[2]) or 0) + 1\n" \
"      redis.call('HSET', jk, 'attempt', attempt, 'state', 'running',\n" \
"        'owner', agent, 'lease_ms', lease, 'started_ms', now)\n" \
"      redis.call('ZADD', KEYS[" lk "], lease, jid)\n" \
"      redis.call('SADD', KEYS[" rk "], jid)\n" \
"      if fr then\n" \
"        redis.call('SADD', fr, jid); redis.call('HSET', jk, 'fleet', 1)\n" \
"      end\n" \
"      out[#out + 1] = {jid, h, attempt, f[3], f[4], f[5], f[6], f[7]}\n" \
"      room = room - 1; taken = taken + 1\n" \
"    end\n" \
"  end\n" \
"  if rt then\n" \
"    tok = tok - taken\n" \
"    redis.call('HSET', rt, 'tokens', tostring(tok), 'ts', ts)\n" \
"    redis.call('PEXPIRE', rt, math.ceil((rb - tok) * rp / rc) + 1000)\n" \
"    local due = 1 - tok - " RATE_GRACE_MS " * rc / rp\n" \
"    if due > 0 and not emptied then\n" \
"      local at = now + math.ceil(due * rp / rc)\n" \
"      if wake < 0 or at < wake then wake = at end\n" \
"    end\n" \
"  end\n" \
"  if #out >= want then break end\n" \
"end\n"

/*
 * fetch: take up to want ready jobs, at most room of each handler, in the
 * order given (the agent rotates it for fairness); bump each one's attempt
 * (the fencing token) and register its lease.
 * KEYS: leases, agent:<name>:running, paused.
 * ARGV: P agent lease_ms want, then triples handler room flow (see
 * FETCH_LOOP).
 * Returns {now_ms, {{jid, handler, attempt, data, max_attempts, event,
 * event_id, created_ms}...}, wake_ms or -1}: wake is when a pause that
 * held one of the handlers ends.
 */
const char scripts_flow_fetch[] = NOW
"local P, agent = ARGV[1], ARGV[2]\n"
"local lease, want, out = now + tonumber(ARGV[3]), tonumber(ARGV[4]), {}\n"
"local i = 2\n"
"local function rooms()\n"
"  i = i + 3\n"
"  if ARGV[i] then return ARGV[i], ARGV[i + 1], ARGV[i + 2] end\n"
"end\n"
FETCH_LOOP("1", "2", "3")
"return {now, out, wake}\n";

/*
 * finish: record one attempt's outcome in the results stream, then mark
 * the job done, retry it after a backoff, send it to dead, or release it.
 * A finish from an agent that no longer holds the lease is 'stale' and
 * changes nothing but the stream.  A job an administrator cancelled while
 * it ran (marked by the admin script) is 'cancelled' and deleted whatever
 * the run's outcome, unless the run had succeeded: then it is done.  Each
 * run is recorded once: fin:<jid> remembers the last finish for
 * remember_ms, and the same finish sent again (its reply was lost with the
 * connection) gets the first answer and changes nothing.  A stale finish
 * leaves the owner's record alone.  A keyed job's final outcome (done,
 * cancelled, dead) gives its key's slot to the next waiting job, which
 * the fetch that follows may take; a retry or a release keeps the slot.
 * The slot the run frees can be filled in the same call: with want > 0
 * it then fetches as the fetch script does, from rooms, "handler room
 * flow" triples in one string, so a busy agent makes one call per job, not two.
 * KEYS: job:<jid> leases agent:<name>:running delayed dead results
 *   ready:<handler> fin:<jid> paused.
 * ARGV: jid agent attempt outcome(ok|fail|fatal|release) backoff_ms
 *   results_max dead_ttl_s remember_ms P lease_ms want rooms, then result
 *   fields as name value pairs.
 * Returns {outcome, stream_id, now_ms, {fetched jobs, as fetch's}, wake_ms
 * as fetch's}; a finish sent again gets its first answer without wake.
 */
const char scripts_flow_finish[] = NOW SCRIPTS_KEY_LUA
"local jid, agent, att, outcome = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
"local P, lease, want = ARGV[9], now + tonumber(ARGV[10]), tonumber(ARGV[11])\n"
"local rooms, out = string.gmatch(ARGV[12], '(%S+) (%d+) (%S+)'), {}\n"
"local seen = redis.call('GET', KEYS[8])\n"
"if seen then\n"
"  local a, g, st, sid = string.match(seen, '^(%S+) (%S+) (%S+) (%S+)$')\n"
"  if a == att and g == agent then return {st, sid, now, out} end\n"
"end\n"
"redis.call('SREM', KEYS[3], jid)\n"
"local f = redis.call('HMGET', KEYS[1], 'owner', 'attempt', 'state',\n"
"  'failures', 'max_attempts', 'event', 'handler', 'event_id', 'cancel',\n"
"  'fleet', 'kslot')\n"
"local status\n"
"if not (f[1] == agent and f[2] == att and f[3] == 'running') then\n"
"  status = 'stale'\n"
"else\n"
"  redis.call('ZREM', KEYS[2], jid)\n"
"  if f[10] then redis.call('SREM', P .. 'flow:' .. f[7] .. ':running', jid) end\n"
"  if outcome == 'ok' then status = 'done'\n"
"  elseif f[9] then status = 'cancelled'\n"
"  elseif outcome == 'release' then status = 'released'\n"
"  else\n"
"    local failures = tonumber(f[4]) + 1\n"
"    redis.call('HSET', KEYS[1], 'failures', failures)\n"
"    if outcome == 'fatal' or failures >= tonumber(f[5]) then\n"
"      status = 'dead' else status = 'retry' end\n"
"  end\n"
"end\n"
"local fields = {'job', jid, 'event', f[6] or '', 'event_id', f[8] or '',\n"
"  'handler', f[7] or '', 'attempt', att, 'outcome', status, 'agent', agent}\n"
"local why = status == 'cancelled' and " CANCEL_TEXT "\n"
"for i = 13, #ARGV - 1, 2 do\n"
"  local v = ARGV[i + 1]\n"
"  if why and ARGV[i] == 'error' then\n"
"    if v ~= '' then v = why .. '; ' .. v else v = why end\n"
"    why = nil\n"
"  end\n"
"  fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = v\n"
"end\n"
"if why then fields[#fields + 1] = 'error'; fields[#fields + 1] = why end\n"
"local id = redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*',\n"
"  unpack(fields))\n"
"if status ~= 'stale' then\n"
"  redis.call('SET', KEYS[8], att .. ' ' .. agent .. ' ' .. status .. ' ' ..\n"
"    id, 'PX', ARGV[8])\n"
"end\n"
"if f[11] and (status == 'done' or status == 'cancelled' or\n"
"    status == 'dead') then key_free(P, KEYS[1], f[7]) end\n"
"if status == 'done' or status == 'cancelled' then\n"
"  redis.call('DEL', KEYS[1])\n"
"elseif status == 'released' then\n"
"  redis.call('HSET', KEYS[1], 'state', 'ready', 'owner', '')\n"
"  redis.call('RPUSH', KEYS[7], jid)\n"
"elseif status == 'retry' then\n"
"  local due = now + tonumber(ARGV[5])\n"
"  redis.call('HSET', KEYS[1], 'state', 'delayed', 'owner', '', 'due_ms', due)\n"
"  redis.call('ZADD', KEYS[4], due, jid)\n"
"elseif status == 'dead' then\n"
"  redis.call('HSET', KEYS[1], 'state', 'dead', 'owner', '', 'died_ms', now)\n"
"  redis.call('ZADD', KEYS[5], now, jid)\n"
"  if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[7]) end\n"
"end\n"
FETCH_LOOP("2", "3", "9")
"return {status, id, now, out, wake}\n";

/*
 * pause: hold a handler's jobs, fleet-wide, or let them go again.  A
 * paused handler still takes jobs; the fetch loop starts none of them.
 * KEYS: paused.  ARGV: action(pause|resume) handler for_ms notify_channel.
 * pause: the handler is paused until now + for_ms, or until resumed when
 * for_ms is 0; resume deletes the pause and publishes "r", so the agents
 * fetch at once.
 * Returns {was paused (0 or 1), until_ms (0: until resumed), now_ms}.
 */
const char scripts_flow_pause[] = NOW
"local was, wasp = redis.call('HGET', KEYS[1], ARGV[2]), 0\n"
"if was and (tonumber(was) == 0 or tonumber(was) > now) then wasp = 1 end\n"
"if ARGV[1] == 'pause' then\n"
"  local u = 0\n"
"  if tonumber(ARGV[3]) > 0 then u = now + tonumber(ARGV[3]) end\n"
"  redis.call('HSET', KEYS[1], ARGV[2], u)\n"
"  return {wasp, u, now}\n"
"elseif ARGV[1] == 'resume' then\n"
"  redis.call('HDEL', KEYS[1], ARGV[2])\n"
"  if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], 'r') end\n"
"  return {wasp, 0, now}\n"
"end\n"
"return redis.error_reply('ERR pause: unknown action')\n";
