"""The job queue in Valkey or Redis >= 6.2, for workers on many hosts (`[queue] url = redis://…`).

Every state change is one Lua script, so it is atomic on the server and a worker that dies
between two commands leaves nothing half done. Keys, under the prefix `posterbot:`::

    job:<id>              hash: the job record (queue_common.JOB_FIELDS) + pool, seq, slot, entry
    idempotency           hash: idempotency key → job id
    queued:<pool>         sorted set, all scores 0, members "<priority>:<turn>:<seq>:<id>": the
                          fair order is the members' byte order (numbers zero-padded)
    stream:<pool>         stream, consumer group "workers": one entry per claimed job
    dead                  stream: dead-lettered jobs with their last error
    state:<state>         sorted set id → seq (counts, listings); jobs, user:<name>: id → seq
    finished              sorted set id → finished_at (metrics, retry-after)
    running:<pool>:<p>, turns:<pool>:<p>:<user>    id → turn (the round-robin bookkeeping)
    totals:<pool>         hash: reclaimed, dead_lettered (counters for /metrics)
    done_by:<pool>        hash: worker id → jobs it completed
    events                pub/sub channel: the id of every job that changed
    file:…, collect:<service>, collecting:<service>   pictures, outputs, datasets and LoRAs that
                          travel between hosts (shared_files.py)

Claiming (`claim`): a dispatcher inside the claim script takes the head of the pool's fair order
plus its batch partners, adds one stream entry per job, and reads them at once with XREADGROUP
as the claiming consumer, so the entries sit in that consumer's pending list: that is the lease.
The heartbeat re-claims its own entries (XCLAIM, idle time back to 0); a claim (and the service's
sweep) first takes over entries idle longer than the lease with XAUTOCLAIM and gives their jobs
back: queued again with the attempt spent, or dead-lettered when the attempts are used up. The
server's clock measures the lease, so hosts need no common clock for it. Ending a job checks
that it is still running under this worker and XACKs its entry in the same script: a worker that
overran its lease gets `LeaseLost` and records nothing, so a job is recorded exactly once.

Fairness is the SQLite queue's (see queue_sqlite.py): priority class, then the round (`turn`)
each user's next job is given at submit, then submit order, per pool.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import redis

from engine.service.queue_base import JobQueueBase
from engine.service.queue_common import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_QUEUE,
    JOB_FIELDS,
    THROUGHPUT_WINDOW_S,
    Job,
    JobNotFound,
    JobStateError,
    LeaseLost,
    PoolStats,
    Priority,
    QueueFull,
    State,
    check_at_least_one,
    check_claim,
    check_submit,
    retry_after_estimate,
)
from engine.service.shared_files import OUTPUT_TTL_S, service_id
from posterbot.config import Config

PREFIX = "posterbot"
GROUP = "workers"
DEFAULT_LEASE_S = 60.0  # as EngineConfig.lease_s: the service's sweep uses it
ANNOUNCE_TTL_S = 120  # a worker that has not announced itself for this long is gone
RECLAIM_BATCH = 100  # XAUTOCLAIM COUNT per round

# Lua shared by the scripts: key names, state moves, ending and giving back a job. ARGV[1] is
# the prefix; times arrive as strings (Python's repr) and are stored unchanged, never rounded.
_LIB = """
local P = ARGV[1]
local function key(...) return P .. ':' .. table.concat({...}, ':') end
local function jkey(id) return P .. ':job:' .. id end
local function hget(id, name) return redis.call('HGET', jkey(id), name) end
local function stream(pool) return key('stream', pool) end
local function touched(id) redis.call('PUBLISH', key('events'), id) end
-- a job became claimable: idle workers of its pool listen here (wait_for_work)
local function claimable(id) redis.call('PUBLISH', key('work', hget(id, 'pool')), id) end
local function set_fields(id, fields)
  for name, value in pairs(fields) do
    if value == cjson.null then redis.call('HDEL', jkey(id), name)
    else redis.call('HSET', jkey(id), name, value) end
  end
end
local function move_state(id, to)
  redis.call('ZREM', key('state', hget(id, 'state')), id)
  redis.call('ZADD', key('state', to), hget(id, 'seq'), id)
  redis.call('HSET', jkey(id), 'state', to)
end
local function running_key(id) return key('running', hget(id, 'pool'), hget(id, 'priority')) end
local function turns_key(id)
  return key('turns', hget(id, 'pool'), hget(id, 'priority'), hget(id, 'user'))
end
local function drop_entry(id)
  local entry = hget(id, 'entry')
  if entry then
    local s = stream(hget(id, 'pool'))
    redis.call('XACK', s, 'workers', entry)
    redis.call('XDEL', s, entry)
    redis.call('HDEL', jkey(id), 'entry')
  end
end
local function check_running(id, worker)
  if redis.call('EXISTS', jkey(id)) == 0 then return 'NOTFOUND ' .. id end
  local state = hget(id, 'state')
  if state ~= 'running' then return 'STATE ' .. state end
  local owner = hget(id, 'lease_owner')
  if worker ~= '' and owner ~= worker then return 'LOST ' .. (owner or '') end
  return nil
end
local function finish(id, state, now)
  local from = hget(id, 'state')
  if from == 'queued' then redis.call('ZREM', key('queued', hget(id, 'pool')), hget(id, 'slot')) end
  redis.call('ZREM', running_key(id), id)
  redis.call('ZREM', turns_key(id), id)
  drop_entry(id)
  if state == 'done' then
    redis.call('HINCRBY', key('done_by', hget(id, 'pool')), hget(id, 'lease_owner') or '?', 1)
  end
  move_state(id, state)
  redis.call('HSET', jkey(id), 'finished_at', now)
  redis.call('HDEL', jkey(id), 'lease_owner', 'lease_expires_at')
  redis.call('ZADD', key('finished'), now, id)
  touched(id)
end
local function give_back(id, attempts, err, now)
  local max = tonumber(hget(id, 'max_attempts'))
  local state = 'queued'
  if hget(id, 'cancel_requested') == '1' then state = 'cancelled'
  elseif attempts >= max then
    state = 'dead'
    redis.call('HINCRBY', key('totals', hget(id, 'pool')), 'dead_lettered', 1)
    err.error = (err.error or '') .. string.format(' (attempt %d of %d, none left)', attempts, max)
  end
  err.attempts = tostring(attempts)
  set_fields(id, err)
  if state == 'queued' then
    redis.call('ZREM', running_key(id), id)
    drop_entry(id)
    move_state(id, 'queued')
    redis.call('HDEL', jkey(id), 'started_at', 'progress', 'lease_owner', 'lease_expires_at')
    redis.call('ZADD', key('queued', hget(id, 'pool')), 0, hget(id, 'slot'))
    touched(id)
    claimable(id)
  else
    finish(id, state, now)
    if state == 'dead' then
      local entry = redis.call('XADD', key('dead'), '*', 'job', id, 'pool', hget(id, 'pool'),
        'error', hget(id, 'error') or '', 'at', now)
      redis.call('HSET', jkey(id), 'dead_entry', entry)
    end
  end
end
local function reclaim(pool, lease_ms, now)
  local s = stream(pool)
  local back = {}
  if redis.call('EXISTS', s) == 0 then return back end
  local cursor = '0-0'
  repeat
    local found = redis.call('XAUTOCLAIM', s, 'workers', 'reclaimer', lease_ms, cursor,
      'COUNT', 100, 'JUSTID')
    cursor = found[1]
    for _, entry in ipairs(found[2]) do
      local rows = redis.call('XRANGE', s, entry, entry)
      local id = rows[1] and rows[1][2][2]
      if id and hget(id, 'state') == 'running' and hget(id, 'entry') == entry then
        local owner = hget(id, 'lease_owner') or '?'
        redis.call('HINCRBY', key('totals', pool), 'reclaimed', 1)
        give_back(id, tonumber(hget(id, 'attempts')), {
          error = 'lease expired: worker ' .. owner .. ' stopped renewing it',
          error_code = 'worker_died', error_values = '{}'}, now)
        table.insert(back, id)
      else
        redis.call('XACK', s, 'workers', entry)
        redis.call('XDEL', s, entry)
      end
    end
  until cursor == '0-0'
  return back
end
"""

# ARGV: prefix, id, idempotency key ("" = none), max_queue, pool, priority, user, fields (JSON)
_SUBMIT = """
local id, idem, pool, p, user = ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7]
if idem ~= '' then
  local existing = redis.call('HGET', key('idempotency'), idem)
  if existing then return {'existing', existing} end
end
local depth = redis.call('ZCARD', key('state', 'queued'))
if depth >= tonumber(ARGV[4]) then return {'full', tostring(depth)} end
local queued = key('queued', pool)
local serving = 0
local head = redis.call('ZRANGEBYLEX', queued, '[' .. p .. ':', '(' .. p .. ';', 'LIMIT', 0, 1)
if #head > 0 then serving = tonumber(string.match(head[1], '^%d+:(%d+):'))
else
  local top = redis.call('ZREVRANGE', key('running', pool, p), 0, 0, 'WITHSCORES')
  if #top > 0 then serving = tonumber(top[2]) end
end
local turn = serving
local mine = redis.call('ZREVRANGE', key('turns', pool, p, user), 0, 0, 'WITHSCORES')
if #mine > 0 then turn = math.max(serving, tonumber(mine[2]) + 1) end
local seq = redis.call('INCR', key('seq'))
local slot = string.format('%s:%012d:%012d:%s', p, turn, seq, id)
set_fields(id, cjson.decode(ARGV[8]))
redis.call('HSET', jkey(id), 'turn', turn, 'seq', seq, 'slot', slot, 'state', 'queued')
redis.call('ZADD', queued, 0, slot)
redis.call('ZADD', key('state', 'queued'), seq, id)
redis.call('ZADD', key('jobs'), seq, id)
redis.call('ZADD', key('user', user), seq, id)
redis.call('ZADD', key('turns', pool, p, user), turn, id)
redis.call('SADD', key('pools'), pool)
if idem ~= '' then redis.call('HSET', key('idempotency'), idem, id) end
touched(id)
claimable(id)
return {'new', id}
"""

# ARGV: prefix, pool, worker, lease_ms, max_batch, now, lease expiry, kinds (JSON list or null)
_CLAIM = """
local pool, worker, max_batch, now = ARGV[2], ARGV[3], tonumber(ARGV[5]), ARGV[6]
reclaim(pool, ARGV[4], now)
local kinds = cjson.decode(ARGV[8])
local allowed = nil
if kinds ~= cjson.null then
  allowed = {}
  for _, kind in ipairs(kinds) do allowed[kind] = true end
end
local queued = key('queued', pool)
local chosen, head_kind, head_batch = {}, nil, nil
local start, done = 0, false
while not done do
  local members = redis.call('ZRANGE', queued, start, start + 99)
  if #members == 0 then break end
  for _, member in ipairs(members) do
    local id = string.match(member, '([^:]+)$')
    local kind, batch = unpack(redis.call('HMGET', jkey(id), 'kind', 'batch_key'))
    if head_kind == nil then
      if allowed == nil or allowed[kind] then
        table.insert(chosen, id)
        head_kind, head_batch = kind, batch
        if not batch or max_batch == 1 then done = true break end
      end
    elseif kind == head_kind and batch == head_batch then
      table.insert(chosen, id)
      if #chosen >= max_batch then done = true break end
    end
  end
  start = start + 100
end
if #chosen == 0 then return {} end
local s = stream(pool)
local entries = {}
for _, id in ipairs(chosen) do
  redis.call('ZREM', queued, hget(id, 'slot'))
  move_state(id, 'running')
  redis.call('ZADD', running_key(id), hget(id, 'turn'), id)
  redis.call('HINCRBY', jkey(id), 'attempts', 1)
  redis.call('HSET', jkey(id), 'started_at', now, 'lease_owner', worker,
    'lease_expires_at', ARGV[7])
  redis.call('HDEL', jkey(id), 'progress')
  local entry = redis.call('XADD', s, '*', 'job', id)
  redis.call('HSET', jkey(id), 'entry', entry)
  entries[entry] = true
  touched(id)
end
local read = redis.call('XREADGROUP', 'GROUP', 'workers', worker, 'COUNT', #chosen,
  'STREAMS', s, '>')
for _, row in ipairs(read[1][2]) do entries[row[1]] = nil end
if next(entries) ~= nil then return redis.error_reply('DISPATCH entries left unread') end
local rows = {}
for _, id in ipairs(chosen) do table.insert(rows, redis.call('HGETALL', jkey(id))) end
return rows
"""

# ARGV: prefix, worker, lease expiry, ids...
_HEARTBEAT = """
local worker, kept = ARGV[2], {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if check_running(id, worker) == nil then
    local renewed = redis.call('XCLAIM', stream(hget(id, 'pool')), 'workers', worker, 0,
      hget(id, 'entry'), 'JUSTID')
    if #renewed > 0 then
      redis.call('HSET', jkey(id), 'lease_expires_at', ARGV[3])
      table.insert(kept, id)
    end
  end
end
return kept
"""

# ARGV: prefix, id, worker ("" = any), final state, now, fields (JSON), file TTL (s), then a
# remote worker's output files as name, bytes, name, bytes ... (see shared_files.py)
_END = """
local id = ARGV[2]
local wrong = check_running(id, ARGV[3])
if wrong then return redis.error_reply(wrong) end
set_fields(id, cjson.decode(ARGV[6]))
local names = {}
for i = 8, #ARGV, 2 do
  redis.call('SET', key('file', 'outputs/' .. ARGV[i]), ARGV[i + 1], 'EX', ARGV[7])
  table.insert(names, ARGV[i])
end
if #names > 0 then
  redis.call('HSET', jkey(id), 'files', cjson.encode(names))
  local service = hget(id, 'service')  -- only the service that submitted the job collects
  redis.call('RPUSH', service and key('collect', service) or key('collect'), id)
end
finish(id, ARGV[4], ARGV[5])
return redis.call('HGETALL', jkey(id))
"""

# ARGV: prefix, id, worker ("" = any), attempts spent by this attempt (1 or 0), now, error JSON
_GIVE_BACK = """
local id = ARGV[2]
local wrong = check_running(id, ARGV[3])
if wrong then return redis.error_reply(wrong) end
local attempts = tonumber(hget(id, 'attempts')) - 1 + tonumber(ARGV[4])
give_back(id, attempts, cjson.decode(ARGV[6]), ARGV[5])
return redis.call('HGETALL', jkey(id))
"""

# ARGV: prefix, lease_ms, now
_SWEEP = """
local back = {}
for _, pool in ipairs(redis.call('SMEMBERS', key('pools'))) do
  for _, id in ipairs(reclaim(pool, ARGV[2], ARGV[3])) do table.insert(back, id) end
end
return back
"""

# ARGV: prefix, id, progress JSON
_PROGRESS = """
local id = ARGV[2]
if hget(id, 'state') == 'running' then
  redis.call('HSET', jkey(id), 'progress', ARGV[3])
  touched(id)
end
return 0
"""

# ARGV: prefix, id, now
_CANCEL = """
local id = ARGV[2]
if redis.call('EXISTS', jkey(id)) == 0 then return redis.error_reply('NOTFOUND ' .. id) end
local state = hget(id, 'state')
if state == 'queued' then
  redis.call('HSET', jkey(id), 'cancel_requested', '1')
  finish(id, 'cancelled', ARGV[3])
elseif state == 'running' then
  redis.call('HSET', jkey(id), 'cancel_requested', '1')
  touched(id)
end
return id
"""

# ARGV: prefix, id
_REQUEUE_DEAD = """
local id = ARGV[2]
if redis.call('EXISTS', jkey(id)) == 0 then return redis.error_reply('NOTFOUND ' .. id) end
local state = hget(id, 'state')
if state ~= 'dead' then return redis.error_reply('STATE ' .. state) end
local entry = hget(id, 'dead_entry')
if entry then redis.call('XDEL', key('dead'), entry) end
redis.call('HDEL', jkey(id), 'dead_entry', 'finished_at', 'started_at', 'progress')
redis.call('HSET', jkey(id), 'attempts', '0')
redis.call('ZREM', key('finished'), id)
move_state(id, 'queued')
redis.call('ZADD', key('queued', hget(id, 'pool')), 0, hget(id, 'slot'))
redis.call('ZADD', turns_key(id), hget(id, 'turn'), id)
touched(id)
claimable(id)
return id
"""


def _text(value: float) -> str:
    return repr(float(value))


def _drain_when_ready(channel: redis.client.PubSub, timeout_s: float) -> None:
    """Wait up to `timeout_s` for a message on `channel`, then take all that arrived."""
    if channel.get_message(timeout=timeout_s) is not None:
        while channel.get_message(timeout=0) is not None:
            pass


def _decode_flat(pairs: list[str]) -> Job:
    """A job record from a script's HGETALL reply (name, value, name, value ...)."""
    return _decode(dict(zip(pairs[::2], pairs[1::2], strict=True)))


def _decode(fields: dict[str, str]) -> Job:
    """A job record from its hash (absent fields are None)."""
    row: dict[str, Any] = {}
    for name, kind in JOB_FIELDS.items():
        value = fields.get(name)
        row[name] = None if value is None else kind(value)
    return Job.from_row(row)


class RedisQueue(JobQueueBase):
    """One process's handle on the queue in a Valkey/Redis server; thread-safe (the client's
    connection pool), open one per process."""

    def __init__(
        self,
        url: str,
        *,
        pool: str = "default",
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        workers: int = 1,
        lease_s: float = DEFAULT_LEASE_S,
        now: Callable[[], float] | None = None,
        prefix: str = PREFIX,
        service: str | None = None,
    ) -> None:
        """`pool`: the stream this process claims from and where jobs go unless an announced
        worker of another pool asks for them; `lease_s`: the lease `requeue_expired` applies;
        `workers` only feeds the retry_after estimate; `now` the clock of recorded times;
        `service`: the service its submits come from, whose collector alone files the outputs
        of remote workers (shared_files.service_id)."""
        check_at_least_one(max_queue=max_queue, max_attempts=max_attempts, workers=workers)
        self.url = url
        self.pool = pool
        self.max_queue = max_queue
        self.max_attempts = max_attempts
        self.workers = workers
        self.lease_s = lease_s
        self.prefix = prefix
        self.service = service
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.unavailable = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
        address = self.redis.connection_pool.connection_kwargs
        self.where = f"{address.get('host', '?')}:{address.get('port', '?')}"
        self.now = now or time.time
        self._events: redis.client.PubSub | None = None
        self._work: redis.client.PubSub | None = None
        self._scripts = {
            name: self.redis.register_script(_LIB + body)
            for name, body in (
                ("submit", _SUBMIT),
                ("claim", _CLAIM),
                ("heartbeat", _HEARTBEAT),
                ("end", _END),
                ("give_back", _GIVE_BACK),
                ("sweep", _SWEEP),
                ("progress", _PROGRESS),
                ("cancel", _CANCEL),
                ("requeue_dead", _REQUEUE_DEAD),
            )
        }
        self._grouped = False  # the pool's consumer group: made now, or (server away) at a claim
        with contextlib.suppress(*self.unavailable):
            self._ensure_group(pool)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _ensure_group(self, pool: str) -> None:
        try:
            self.redis.xgroup_create(self._key("stream", pool), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.redis.sadd(self._key("pools"), pool)
        self._grouped = True

    def _run(self, script: str, *args: Any, expected: str = "running") -> Any:
        """Run one of the scripts; its error replies become the queue's errors (`expected`: the
        state the job should have been in)."""
        try:
            return self._scripts[script](args=[self.prefix, *args])
        except redis.ResponseError as exc:
            kind, _, detail = str(exc).partition(" ")
            if kind == "NOTFOUND":
                raise JobNotFound(detail) from None
            if kind == "STATE":
                raise JobStateError(f"job {args[0]} is {detail}, not {expected}") from None
            if kind == "LOST":
                message = f"job {args[0]} is leased to {detail or None}, not {args[1]}"
                raise LeaseLost(message) from None
            raise

    def wait_for_changes(self, timeout_s: float) -> None:
        """Return when the `events` channel names a changed job (every script publishes the ids
        it touched), or after `timeout_s`; one caller at a time (the event watcher)."""
        if self._events is None:
            self._events = self.redis.pubsub(ignore_subscribe_messages=True)
            self._events.subscribe(self._key("events"))
        _drain_when_ready(self._events, timeout_s)  # one re-read covers every change so far

    def wait_for_work(self, timeout_s: float) -> None:
        """Return when a job of this queue's pool became claimable (its `work` channel), or
        after `timeout_s`. With the server away it just waits: the next claim notices the
        outage (and says so once), and the channel is subscribed afresh after it."""
        try:
            if self._work is None:
                self._work = self.redis.pubsub(ignore_subscribe_messages=True)
                self._work.subscribe(self._key("work", self.pool))
            _drain_when_ready(self._work, timeout_s)
        except self.unavailable:
            if self._work is not None:
                with contextlib.suppress(*self.unavailable):
                    self._work.close()
            self._work = None
            time.sleep(timeout_s)

    def close(self) -> None:
        for channel in (self._events, self._work):
            if channel is not None:
                channel.close()
        self.redis.close()

    # -- submitting and reading -------------------------------------------------------------

    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        user: str,
        *,
        priority: Priority = Priority.USER,
        idempotency_key: str | None = None,
        batch_key: str | None = None,
        max_attempts: int | None = None,
    ) -> Job:
        # 1. check inputs
        priority, max_attempts = check_submit(
            kind,
            params,
            user,
            priority,
            self.max_attempts if max_attempts is None else max_attempts,
        )
        # 2. one script: the idempotency key, the depth limit, the user's turn, the insert
        fields = {
            "id": secrets.token_hex(6),
            "kind": kind,
            "params": json.dumps(params),
            "user": user,
            "priority": str(int(priority)),
            "attempts": "0",
            "max_attempts": str(max_attempts),
            "idempotency_key": idempotency_key,
            "batch_key": batch_key,
            "created_at": _text(self.now()),
            "outputs": "[]",
            "cancel_requested": "0",
            "pool": self.route(kind, params),
            "service": self.service,
        }
        answer, value = self._run(
            "submit",
            fields["id"],
            idempotency_key or "",
            self.max_queue,
            fields["pool"],
            fields["priority"],
            user,
            json.dumps(fields),
        )
        if answer == "full":
            depth = int(value)
            raise QueueFull(depth, self._retry_after_s(depth))
        return self.get(value)

    def route(self, kind: str, params: dict[str, Any]) -> str:
        """The pool a new job goes to: one whose announced workers say they run its model (or,
        for a training, a pool called "train"); else this queue's own pool."""
        wanted = params.get("model")
        for worker in self.workers_announced():
            if kind == "train" and worker["pool"] == "train":
                return "train"
            if wanted and kind != "train" and wanted in worker.get("models", ()):
                return worker["pool"]
        return self.pool

    def get(self, job_id: str) -> Job:
        fields = self.redis.hgetall(self._key("job", job_id))
        if not fields:
            raise JobNotFound(job_id)
        return _decode(fields)

    def get_many(self, job_ids: list[str]) -> list[Job]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self._key("job", job_id))
        return [_decode(fields) for fields in pipe.execute() if fields]

    def list_jobs(
        self, *, user: str | None = None, state: State | str | None = None, limit: int = 50
    ) -> list[Job]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        state = None if state is None else State(state)
        if user is None:
            index = self._key("jobs") if state is None else self._key("state", state.value)
            return self.get_many(self.redis.zrevrange(index, 0, limit - 1))
        jobs = self.get_many(self.redis.zrevrange(self._key("user", user), 0, -1))
        return [job for job in jobs if state is None or job.state == state][:limit]

    def _queued_order(self, pool: str) -> list[str]:
        members = self.redis.zrange(self._key("queued", pool), 0, -1)
        return [member.rsplit(":", 1)[1] for member in members]

    def position(self, job_id: str) -> int | None:
        state, pool, slot = self.redis.hmget(self._key("job", job_id), "state", "pool", "slot")
        if state != State.QUEUED.value:
            return None
        rank = self.redis.zrank(self._key("queued", pool), slot)
        return None if rank is None else rank + 1

    def positions(self) -> dict[str, int]:
        """Each queued job's place in its pool's fair order."""
        places: dict[str, int] = {}
        for pool in self.redis.smembers(self._key("pools")):
            places.update({job_id: n for n, job_id in enumerate(self._queued_order(pool), 1)})
        return places

    def depth(self) -> int:
        return self.redis.zcard(self._key("state", State.QUEUED.value))

    def counts(self) -> dict[State, int]:
        pipe = self.redis.pipeline(transaction=False)
        for state in State:
            pipe.zcard(self._key("state", state.value))
        return dict(zip(State, pipe.execute(), strict=True))

    def pool_stats(self) -> list[PoolStats]:
        pools = sorted(self.redis.smembers(self._key("pools")))
        pipe = self.redis.pipeline(transaction=False)
        width = 3 + len(Priority)
        for pool in pools:
            pipe.zcard(self._key("queued", pool))
            pipe.hgetall(self._key("totals", pool))
            pipe.hgetall(self._key("done_by", pool))
            for priority in Priority:
                pipe.zcard(self._key("running", pool, str(int(priority))))
        replies = pipe.execute()
        stats = []
        for n, pool in enumerate(pools):
            queued, totals, done, *running = replies[width * n : width * (n + 1)]
            stats.append(
                PoolStats(
                    pool,
                    queued,
                    sum(running),
                    int(totals.get("reclaimed", 0)),
                    int(totals.get("dead_lettered", 0)),
                    {worker: int(count) for worker, count in done.items()},
                )
            )
        return stats

    def finished_since(self, since: float) -> list[Job]:
        ids = self.redis.zrangebyscore(self._key("finished"), since, "+inf")
        return self.get_many(ids)

    def _retry_after_s(self, depth: int) -> int:
        now = self.now()
        recent = self.get_many(
            self.redis.zrangebyscore(self._key("finished"), now - THROUGHPUT_WINDOW_S, "+inf")
        )
        starts = [job.started_at or job.created_at for job in recent]
        return retry_after_estimate(
            depth, len(recent), min(starts) if starts else None, now, self.workers
        )

    # -- worker side -------------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        lease_s: float,
        max_batch: int = 1,
        kinds: tuple[str, ...] | None = None,
    ) -> list[Job]:
        check_claim(lease_s, max_batch)
        if not self._grouped:
            self._ensure_group(self.pool)
        now = self.now()
        args = (
            self.pool,
            worker_id,
            max(1, round(lease_s * 1000)),
            max_batch,
            _text(now),
            _text(now + lease_s),
            json.dumps(None if kinds is None else list(kinds)),
        )
        try:
            rows = self._run("claim", *args)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ensure_group(self.pool)  # a server restarted without its data: start afresh
            rows = self._run("claim", *args)
        return [_decode_flat(row) for row in rows]  # the script returns the records: one trip

    def heartbeat(self, worker_id: str, job_ids: list[str], lease_s: float) -> list[str]:
        if not job_ids:
            return []
        return self._run("heartbeat", worker_id, _text(self.now() + lease_s), *job_ids)

    def set_progress(self, job_id: str, step: int, total: int, stage: str, **details: Any) -> None:
        progress = {"step": step, "total": total, "stage": stage, **details}
        self._run("progress", job_id, json.dumps(progress))

    def is_cancel_requested(self, job_id: str) -> bool:
        flag = self.redis.hget(self._key("job", job_id), "cancel_requested")
        if flag is None:
            raise JobNotFound(job_id)
        return flag == "1"

    def _end(
        self,
        job_id: str,
        worker_id: str | None,
        state: State,
        fields: dict[str, Any],
        files: dict[str, bytes] | None = None,
    ) -> Job:
        shipped = [part for name, data in (files or {}).items() for part in (name, data)]
        row = self._run(
            "end",
            job_id,
            worker_id or "",
            state.value,
            _text(self.now()),
            json.dumps(fields),
            OUTPUT_TTL_S,
            *shipped,
        )
        return _decode_flat(row)

    def complete(
        self,
        job_id: str,
        outputs: list[str],
        info: dict[str, Any] | None = None,
        *,
        worker_id: str | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Job:
        fields = {
            "outputs": json.dumps(outputs),
            "info": None if info is None else json.dumps(info),
        }
        return self._end(job_id, worker_id, State.DONE, fields, files)

    def mark_cancelled(
        self,
        job_id: str,
        *,
        worker_id: str | None = None,
        outputs: list[str] | None = None,
        info: dict[str, Any] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Job:
        kept = {} if outputs is None else {"outputs": json.dumps(outputs)}
        if info is not None:
            kept["info"] = json.dumps(info)
        return self._end(job_id, worker_id, State.CANCELLED, kept, files)

    def fail(
        self,
        job_id: str,
        error: str,
        *,
        retry: bool,
        worker_id: str | None = None,
        code: str = "internal",
        values: dict[str, Any] | None = None,
    ) -> Job:
        fields = {"error": error, "error_code": code, "error_values": json.dumps(values or {})}
        if not retry:
            return self._end(job_id, worker_id, State.FAILED, fields)
        return self._give_back(job_id, worker_id, 1, fields)

    def release(self, job_id: str, *, worker_id: str | None = None) -> Job:
        return self._give_back(job_id, worker_id, 0, {})

    def _give_back(
        self, job_id: str, worker_id: str | None, spent: int, error: dict[str, Any]
    ) -> Job:
        row = self._run(
            "give_back", job_id, worker_id or "", spent, _text(self.now()), json.dumps(error)
        )
        return _decode_flat(row)

    def requeue_expired(self, now: float | None = None) -> list[Job]:
        """Give back the jobs of every pool whose entries were idle past `lease_s` on the
        server's clock (`now` only dates what ends)."""
        ids = self._run(
            "sweep", max(1, round(self.lease_s * 1000)), _text(self.now() if now is None else now)
        )
        return self.get_many(ids)

    def cancel(self, job_id: str) -> Job:
        self._run("cancel", job_id, _text(self.now()))
        return self.get(job_id)

    # -- operations --------------------------------------------------------------------------

    def dead_letters(self, limit: int = 100) -> list[Job]:
        """The dead-letter stream, newest first."""
        entries = self.redis.xrevrange(self._key("dead"), count=limit)
        return self.get_many([fields["job"] for _, fields in entries])

    def requeue_dead(self, job_id: str) -> Job:
        self._run("requeue_dead", job_id, expected="dead")
        return self.get(job_id)

    def announce(self, worker_id: str, capabilities: dict[str, Any]) -> None:
        """Say what this worker runs (models, LoRAs, VRAM ...) in this queue's pool; a worker
        silent for ANNOUNCE_TTL_S is taken for gone."""
        entry = {**capabilities, "id": worker_id, "pool": self.pool, "seen_at": self.now()}
        self.redis.hset(self._key("workers"), worker_id, json.dumps(entry))

    def workers_announced(self) -> list[dict[str, Any]]:
        """What the workers on every host said they run, within the last ANNOUNCE_TTL_S."""
        now = self.now()
        workers = [json.loads(v) for v in self.redis.hvals(self._key("workers"))]
        return [worker for worker in workers if now - worker["seen_at"] < ANNOUNCE_TTL_S]


def open_redis_queue(config: Config, workers: int = 1, pool: str | None = None) -> RedisQueue:
    """The queue at `[queue] url`, with the [engine] limits."""
    return RedisQueue(
        config.queue.url,
        pool=pool or config.queue.pool,
        max_queue=config.engine.max_queue,
        max_attempts=config.engine.max_attempts,
        workers=workers,
        lease_s=config.engine.lease_s,
        service=service_id(config),
    )
