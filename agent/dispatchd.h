/*
 * dispatchd.h: the one project header.  Shared types first, then the
 * prototypes of every module under its file's name, layer by layer from
 * the bottom, as doc/ARCHITECTURE.md draws them (tests/layers/check holds
 * the code to it): a module may use what is declared above its block.
 *
 * Conventions: int functions return 0 or -1; pointer functions return NULL
 * on failure; x* allocators never fail (they abort).  const char * arguments
 * are borrowed; a callee that keeps a string copies it.  A reload frees
 * the configuration in force, so nothing keeps a pointer into it (cfg)
 * past the call that read it: a module copies what it keeps, and a
 * running job holds its handler with handler_hold.
 */
#ifndef DISPATCHD_H
#define DISPATCHD_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

struct capture;
struct config;
struct event;
struct handler;
struct json_t;
struct request;
struct rconn;
struct run;
struct redisReply;

#define DISPATCHD_VERSION	PACKAGE_VERSION
#define EVENT_NAME_MAX		200
#define HANDLER_NAME_MAX	100

/* Exit codes from <sysexits.h>, spelled out where the contract uses them. */
#define EXIT_USAGE		64
#define EXIT_UNAVAILABLE	69
#define EXIT_CANTCREAT		73
#define EXIT_TEMPFAIL		75
#define EXIT_CONFIG		78

/* What a job may use: [agent] defaults, [handler] values (limits.c). */
enum limit_kind {
	LIMIT_MEMORY,			/* memory_max */
	LIMIT_SWAP,			/* memory_swap_max */
	LIMIT_TASKS,			/* tasks_max */
	LIMIT_CPU,			/* cpu_max */
	LIMIT_IO,			/* io_weight */
	LIMIT_LEFTOVERS,		/* leftovers = kill | wait */
	LIMIT_COUNT
};
struct job_limits {
	unsigned	 set;		/* 1 << kind for each key given */
	char		*at[LIMIT_COUNT];	/* "file:line" of each */
	size_t		 memory_max;	/* bytes */
	size_t		 swap_max;
	long		 tasks_max;
	int		 cpu_pct;	/* 100: one whole CPU */
	int		 io_weight;	/* 1-10000 */
	int		 leftovers_wait; /* let the handler's children finish */
};

/* flow.c: a handler's start rate, fleet-wide. */
struct flow_rate {
	long		 count;		/* starts per period; 0: no rate */
	int64_t		 period_ms;
	long		 burst;		/* starts that may come at once */
};
int	 flow_parse_rate(const char *, struct flow_rate *, char *, size_t);
char	*flow_word(int, const struct flow_rate *);
/* What a keyed handler does with an event whose key is busy. */
enum flow_busy {
	BUSY_QUEUE,		/* the job waits its turn */
	BUSY_COALESCE,		/* at most one waits; later emits get its id */
	BUSY_REPLACE,		/* one waits, with the newest event's data */
	BUSY_REJECT		/* the emit is answered busy */
};
extern const char *const flow_busy_words[];
#define FLOW_KEY_MAX	512	/* bytes of an expanded key */
struct flow_key;
struct flow_key	*flow_key_parse(const char *, char *, size_t);
int		 flow_key_expand(const struct flow_key *, const char *,
		    const struct json_t *, char **, char *, size_t);
const char	*flow_key_text(const struct flow_key *);
void		 flow_key_free(struct flow_key *);
char		*flow_signature(const struct flow_key *, int, enum flow_busy,
		    const char *);

/* One [handler NAME] section. */
struct handler {
	char		 *name;
	char		**on;		/* event names or fnmatch globs */
	size_t		  n_on;
	char		 *exec;		/* the exec line as written */
	char		**argv;		/* exec split into words, NULL-ended */
	char		**env;		/* KEY=value lines, NULL-ended */
	size_t		  n_env;
	char		 *workdir;
	int64_t		  timeout_ms;
	int64_t		  delay_ms;
	int64_t		  backoff_base_ms;
	int64_t		  backoff_cap_ms;
	int		  attempts;
	int		  concurrency;	/* 0: as many as workers */
	int		  max_running;	/* fleet-wide; 0: no limit */
	struct flow_rate  rate;		/* fleet-wide starts; count 0: none */
	struct flow_key	 *key;		/* key = TEMPLATE, or NULL */
	int		  per_key;	/* jobs of one key at once (1) */
	enum flow_busy	  on_busy;
	char		 *flow_sig;	/* all flow settings, to compare */
	char		 *flow;		/* the fetch's flow word, "-": none */
	char		 *file;		/* where the section was declared */
	int		  line;
	char		 *exec_file;	/* where exec was set */
	int		  exec_line;
	char		 *user;		/* as written, or NULL */
	char		 *group;
	uid_t		  uid;		/* resolved: who runs it */
	gid_t		  gid;
	gid_t		 *groups;	/* supplementary groups */
	int		  n_groups;
	int		  set_user;	/* switch to uid/gid in the child */
	char		 *home;
	long		  limit_nofile;	/* 0: inherit */
	long		  limit_nproc;
	size_t		  limit_as;
	int64_t		  limit_cpu_ms;
	struct job_limits limits;	/* enforced by the job's cgroup */
	int		  refs;		/* the config, plus each running job */
};

/* One [access] principal: a uid or a gid, and an event glob for emit. */
struct access_rule {
	int		 is_group;
	uint32_t	 id;
	char		*glob;		/* NULL: every event */
};

/* A socket peer, as the kernel saw it connect. */
struct peer {
	uint32_t	 uid;
	uint32_t	 gid;
	uint32_t	*groups;
	int		 n_groups;
};

/* The whole configuration: [agent] keys and the handlers. */
struct config {
	char		 *path;
	char		 *name;
	char		 *redis;
	char		 *redis_at;	/* "file:line" of the redis key */
	char		 *password_file;
	char		 *redis_user;	/* ACL user, or NULL for default */
	char		 *namespace;
	char		 *prefix;	/* "{namespace}:", every key's start */
	char		 *socket;
	char		 *subscribe;
	char		 *inbox;	/* stream, or empty when off */
	int64_t		  inbox_claim_ms;
	int		  socket_mode;
	size_t		  max_message;
	int		  max_clients;
	int64_t		  client_timeout_ms;
	size_t		  output_max;
	int		  workers;
	int64_t		  lease_ms;
	int64_t		  drain_ms;
	int64_t		  kill_grace_ms;
	int64_t		  dedup_ms;
	int64_t		  route_grace_ms;
	long		  results_max;
	int		  log_level;
	char		 *user;		/* default user for handlers */
	char		 *group;
	char		 *socket_group;
	uint32_t	  socket_gid;	/* resolved: the socket's group */
	struct access_rule *emit;	/* [access] emit, or none: defaults */
	size_t		  n_emit;
	struct access_rule *admin;
	size_t		  n_admin;
	char		 *spool;	/* directory, or NULL when off */
	char		 *metrics_listen;	/* ADDR:PORT, or NULL */
	size_t		  spool_max;
	int		  cgroup;	/* 1: a cgroup per job where possible */
	struct job_limits limits;	/* the handlers' defaults */
	struct handler	**handlers;
	size_t		  n_handlers;
};

/* An event envelope, as accepted from the socket or pub/sub. */
struct event {
	char		*name;
	char		*data;		/* compact JSON text */
	char		*id;		/* producer's id, or NULL */
	int64_t		 delay_ms;
	int64_t		 at_ms;		/* Unix ms, 0 when absent */
};

/*
 * The ops of the socket protocol, and dispatchctl's commands: the index of
 * each in proto_ops (proto.c), which says everything else about it.
 */
enum request_op {
	OP_EMIT,
	OP_PING,
	OP_STATUS,
	OP_JOBS,
	OP_JOB,
	OP_CANCEL,
	OP_RETRY,
	OP_PURGE,
	OP_RESULTS,
	OP_HANDLERS,
	OP_CHECK,	/* dispatchctl's own: never sent (PROTO_LOCAL) */
	OP_RUN,
	OP_METRICS,
	OP_PAUSE,
	OP_RESUME,
	OP_COUNT
};

/* One parsed request line; each op uses the fields it needs. */
struct request {
	enum request_op	 op;
	int		 admin;		/* the op changes jobs or runs one */
	struct event	 ev;		/* emit; run: event and data */
	char		*id;		/* job, cancel, retry */
	char		*handler;	/* a filter, or run's handler */
	char		*state;		/* jobs */
	char		*event;		/* results filter */
	char		*after;		/* results: continue after this id */
	long		 limit;		/* jobs, results, retry, purge */
	int		 limit_given;	/* else a per-op default */
	int64_t		 older_ms;	/* purge */
	int64_t		 for_ms;	/* pause: 0 until resumed */
	int		 dead;		/* retry, purge: the dead jobs */
};

/* How a handler's exit maps onto the job's fate. */
enum exit_class {
	EXIT_CLASS_OK,		/* done */
	EXIT_CLASS_FAIL,	/* retry with backoff until attempts */
	EXIT_CLASS_FATAL,	/* dead at once */
};

/* ---- base: every module may use these ---- */

/* log.c */
void	 log_init(int);
void	 log_set_level(int);
int	 log_level_parse(const char *);
void	 log_msg(int, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
void	 log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_notice(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_errx(const char *, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void fatalx(const char *, ...)
	    __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void fatal(const char *, ...)
	    __attribute__((format(printf, 1, 2)));

/* xmalloc.c */
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
int	 xasprintf(char **, const char *, ...)
	    __attribute__((format(printf, 2, 3)));

/* util.c */
int	 util_parse_duration(const char *, int64_t *);
int	 util_parse_size(const char *, size_t *);
int	 util_parse_int(const char *, long, long, long *);
int	 util_split_words(const char *, char ***, const char **);
void	 util_free_words(char **);
int64_t	 util_mono_ms(void);
int64_t	 util_wall_ms(void);
void	 util_random_hex(char *, size_t);
int64_t	 util_backoff_ms(int64_t, int64_t, int, double);
double	 util_random01(void);
char	*util_utf8_clean(const char *, size_t, size_t *);
size_t	 util_utf8_trim(const char *, size_t);
int	 util_valid_event_name(const char *);
int	 util_valid_handler_name(const char *);
int	 util_parse_redis_addr(const char *, char **, char **, int *, int *,
	    char *, size_t);
int	 util_read_secret(const char *, char **, char *, size_t);
char	*util_client_name(const char *, const char *);
int	 util_set_cloexec(int);
int	 util_set_nonblock(int);
const char *util_hostname(void);
enum exit_class util_exit_class(int, int, int, int);

/* ---- pure: parsing and data; no Redis, no libev (libcommon.a) ---- */

/* access.c */
int	 access_parse(const char *, int, struct access_rule **, size_t *,
	    const char **, char *, size_t);
void	 access_free(struct access_rule *, size_t);
int	 access_may_emit(const struct config *, const struct peer *,
	    const char *);
int	 access_may_admin(const struct config *, const struct peer *);

/* limits.c */
const char	*limits_name(enum limit_kind);
int		 limits_set(struct job_limits *, const char *, const char *,
		    const char *, int, char *, size_t);
void		 limits_inherit(struct job_limits *, const struct job_limits *);
void		 limits_free(struct job_limits *);

/* handler.c */
struct handler	*handler_new(const char *, const char *, int);
int		 handler_set(struct handler *, const char *, const char *,
		    const char *, int, char *, size_t);
int		 handler_finish(struct handler *, const struct config *,
		    char *, size_t);
void		 handler_hold(struct handler *);
void		 handler_release(struct handler *);
struct handler	*handler_find(const struct config *, const char *);
size_t		 handler_match(const struct config *, const char *,
		    struct handler **, size_t);

/* config.c */
/*
 * The configuration in force.  main.c sets it at start and replaces it on
 * a reload, which frees the old one: copy what you keep (see above).
 */
extern struct config	*cfg;
struct config	*config_load(const char *, char *, size_t);
void		 config_free(struct config *);
void		 config_keep_fixed(struct config *, const struct config *);

/* proto.c */
#define PROTO_ADMIN	0x1	/* [access] admin decides who may use it */
#define PROTO_ENVELOPE	0x2	/* the request is an event envelope (emit) */
#define PROTO_EVENT	0x4	/* its event and data fill req->ev (run) */
#define PROTO_LOCAL	0x8	/* dispatchctl's own command: not on the wire */
/* One op: its request fields, and its dispatchctl command line. */
struct proto_op {
	const char	*name;		/* the op, and the command */
	int		 flags;		/* PROTO_* */
	const char	*fields;	/* its request fields, space-separated */
	const char	*required;	/* "a b|c": a, and one of b and c */
	int		 min_args;	/* dispatchctl: its arguments */
	int		 max_args;	/* -1: no limit */
	const char	*options;	/* its long options, space-separated */
	const char	*synopsis;	/* after the name; \n: a new line */
	const char	*help;		/* one line for --help */
};
extern const struct proto_op proto_ops[OP_COUNT];
int	 proto_parse(const char *, size_t, struct request *, char *, size_t);
int	 proto_parse_event(const char *, size_t, struct event *, char *,
	    size_t);
void	 proto_event_clear(struct event *);
void	 proto_request_clear(struct request *);
char	*proto_reply(struct json_t *, size_t *);
char	*proto_reply_ok(struct json_t *, size_t *);
char	*proto_reply_error(const char *, const char *, const char *, size_t *);

/* job.c */
/* What a handler is told of its job; the strings belong to the caller. */
struct job_info {
	char		*id;
	char		*event;
	char		*event_id;
	struct handler	*h;
	long		 attempt;
	long		 max_attempts;
};
/* How a run ended, as the agent asks the finish script to record it. */
enum job_outcome {
	JOB_OK,			/* done */
	JOB_FAIL,		/* retry with backoff until attempts */
	JOB_FATAL,		/* dead at once */
	JOB_RELEASE,		/* stopped by the agent: put back */
	JOB_NOUTCOMES
};
/* What the finish script made of it (its reply; the metrics' labels). */
enum job_fate {
	FATE_DONE,
	FATE_RETRY,
	FATE_DEAD,
	FATE_STALE,		/* the lease had gone to another agent */
	FATE_RELEASED,
	FATE_CANCELLED,		/* by an administrator while it ran */
	JOB_NFATES
};
struct run_spec;
struct run_result;
char	*job_input(const struct job_info *, const char *, double, double,
	    size_t *);
char	**job_envp(const struct job_info *);
void	 job_spec(struct run_spec *, const struct job_info *, char **,
	    const char *, size_t, int64_t, size_t);
void	 job_setup_error(const struct job_info *, const struct run_result *,
	    char *, size_t);
enum job_outcome job_outcome(const struct run_result *, int);
const char *job_outcome_name(enum job_outcome);
const char *job_outcome_said(enum job_outcome);
const char *job_outcome_run_now(enum job_outcome);
int	 job_fate_parse(const char *, enum job_fate *);
const char *job_fate_name(enum job_fate);

/* schema.c */
enum schema_key {
	KEY_LEASES,		/* zset: running jobs by lease expiry */
	KEY_DELAYED,		/* zset: jobs by due time */
	KEY_DEAD,		/* zset: dead jobs by time of death */
	KEY_RESULTS,		/* stream: the results table */
	KEY_AGENTS,		/* zset: agents by last heartbeat */
	KEY_NOTIFY,		/* channel: wake-up hints */
	KEY_LOCK_EVENTS,	/* who queues pub/sub events without an id */
	KEY_LOCK_RECOVER,	/* who runs recovery now */
	KEY_JOB,		/* hash job:<jid> */
	KEY_READY,		/* list ready:<handler> */
	KEY_FIN,		/* fin:<jid>: the finish recorded */
	KEY_SEEN,		/* seen:<event id>: dedup */
	KEY_AGENT,		/* agent:<name>: the heartbeat, its token */
	KEY_RUNNING,		/* set agent:<name>:running */
	KEY_INFO,		/* hash agent:<name>:info */
	KEY_ROUTES,		/* hash routes:<name> */
	KEY_PAUSED,		/* hash: handler -> paused until (ms) */
	KEY_COUNT
};
#define SCHEMA_DEAD_TTL_S	(7 * 86400)	/* how long dead jobs are kept */
const char	*schema_name(enum schema_key);
size_t		 schema_format(char *, size_t, enum schema_key, const char *);
char		*schema_key(enum schema_key, const char *);

/* scripts.c */
enum script_id {
	SCRIPT_ENQUEUE,
	SCRIPT_PROMOTE,
	SCRIPT_FETCH,
	SCRIPT_EXTEND,
	SCRIPT_FINISH,
	SCRIPT_RECOVER,
	SCRIPT_CLAIM,
	SCRIPT_STATUS,
	SCRIPT_JOBS,
	SCRIPT_JOB,
	SCRIPT_ADMIN,
	SCRIPT_ROUTES,
	SCRIPT_PAUSE,
	SCRIPT_COUNT
};
struct script {
	const char	*name;
	const char	*body;
	const char	*keys;		/* KEYS by name, in order */
	const char	*args;		/* ARGV by name; [a b] repeats */
};
extern const struct script scripts[SCRIPT_COUNT];
/* Redis's clock in ms as the Lua local now; every script that needs it. */
#define SCRIPTS_NOW \
	"local t = redis.call('TIME')\n" \
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
/*
 * Lua: a keyed job's admission and its slot's release, for every script
 * that makes a job ready or ends it.  key_admit(P, jid, jk, h, key, per):
 * the job takes a slot of its key (flow:<h>:keys, key -> slots held) and
 * goes to its ready list, or, with none free, to the end of the key's
 * waiting list (flow:<h>:wait:<key>); true when it is ready.  key_free(P,
 * jk, h): the job's final outcome gives its slot back and admits the
 * next waiting job of the key; true when it admitted one.  A job holds
 * its slot (field kslot) from admission to its final outcome, through
 * retries, so a retry keeps its place at the head of its key.
 */
#define SCRIPTS_KEY_LUA \
	"local function key_admit(P, jid, jk, h, key, per)\n" \
	"  local kk = P .. 'flow:' .. h .. ':keys'\n" \
	"  if tonumber(redis.call('HGET', kk, key) or 0) < per then\n" \
	"    redis.call('HINCRBY', kk, key, 1)\n" \
	"    redis.call('HSET', jk, 'state', 'ready', 'kslot', 1)\n" \
	"    redis.call('LPUSH', P .. 'ready:' .. h, jid)\n" \
	"    return true\n" \
	"  end\n" \
	"  redis.call('HSET', jk, 'state', 'waiting')\n" \
	"  redis.call('LPUSH', P .. 'flow:' .. h .. ':wait:' .. key, jid)\n" \
	"  return false\n" \
	"end\n" \
	"local function key_free(P, jk, h)\n" \
	"  local k = redis.call('HMGET', jk, 'key', 'per_key')\n" \
	"  if not k[1] then return false end\n" \
	"  redis.call('HDEL', jk, 'kslot')\n" \
	"  local kk, per = P .. 'flow:' .. h .. ':keys', tonumber(k[2]) or 1\n" \
	"  local left = redis.call('HINCRBY', kk, k[1], -1)\n" \
	"  if left <= 0 then redis.call('HDEL', kk, k[1]) end\n" \
	"  if left >= per then return false end\n" \
	"  local wl = P .. 'flow:' .. h .. ':wait:' .. k[1]\n" \
	"  while true do\n" \
	"    local nx = redis.call('RPOP', wl)\n" \
	"    if not nx then return false end\n" \
	"    local nk = P .. 'job:' .. nx\n" \
	"    if redis.call('HGET', nk, 'state') == 'waiting' then\n" \
	"      return key_admit(P, nx, nk, h, k[1], per)\n" \
	"    end\n" \
	"  end\n" \
	"end\n"
/* The error of a results entry for a job cancelled while it ran. */
#define SCRIPTS_CANCEL_TEXT	"'cancelled by an administrator while running'"

/* scripts_flow.c: the fetch path's scripts, and flow control's */
extern const char scripts_flow_fetch[];
extern const char scripts_flow_finish[];
extern const char scripts_flow_pause[];

/* ctl_print.c (dispatchctl only) */
const char	*ctl_cell(struct json_t *, const char *, char *, size_t);
const char	*ctl_when(struct json_t *, const char *, char *, size_t);
void		 ctl_print_result(struct json_t *);

/* ctl_args.c (dispatchctl only) */
#define CTL_DEFAULT_SOCKET	"/run/dispatchd/dispatchd.sock"
/* A dispatchctl command line, checked; NULL or 0: the option was not given. */
struct ctl_args {
	enum request_op	  cmd;
	const char	 *name;		/* the command's name */
	char		**argv;		/* its arguments, without the options */
	int		  argc;
	const char	 *socket;	/* -s */
	const char	 *config;	/* -c */
	int		  json;		/* --json */
	const char	 *data;		/* --data: JSON text, or "-" */
	const char	 *id;		/* --id */
	const char	 *delay;	/* --delay as given ... */
	double		  delay_s;	/* ... in seconds */
	const char	 *state;	/* --state */
	const char	 *handler;	/* --handler */
	const char	 *event;	/* --event */
	long		  limit;	/* --limit, -n: 1-10000 */
	double		  older_than;	/* --older-than, in seconds */
	double		  for_s;	/* --for, in seconds */
	int		  dead;		/* --dead */
	int		  follow;	/* --follow, -f */
};
void	 ctl_args_parse(int, char **, struct ctl_args *);
__attribute__((noreturn, format(printf, 4, 5)))
void	 ctl_args_fail(int, const struct proto_op *, int, const char *, ...);

/*
 * The agent's runtime modules below use libev's default loop and hiredis;
 * their structs stay private to their files.
 */

/* ---- local: state of this process ---- */

/* counters.c */
/* What the agent counts (ping, status and metrics show them). */
struct counters {
	uint64_t	emitted;	/* events accepted */
	uint64_t	unrouted;	/* events no handler matched */
	uint64_t	rejected;	/* bad socket requests */
	uint64_t	pubsub_bad;	/* bad pub/sub messages */
	uint64_t	spooled;	/* events written to the spool */
	uint64_t	recovered;	/* jobs whose lease expired */
	uint64_t	inbox_read;	/* inbox entries taken */
	uint64_t	inbox_bad;	/* inbox entries dropped */
	uint64_t	redis_lost;	/* Redis connections lost */
	uint64_t	replayed;	/* spooled events queued since */
	uint64_t	jobs_started;
	uint64_t	jobs_finished;
};
#define COUNTERS_BUCKETS	12
/* One handler's finished attempts. */
struct handler_stats {
	char		*name;
	uint64_t	 fate[JOB_NFATES];
	uint64_t	 bucket[COUNTERS_BUCKETS];	/* not cumulative */
	uint64_t	 count;
	double		 sum_s;
};
extern struct counters	 counters;
extern const double	 counters_bucket_s[COUNTERS_BUCKETS];
void	 counters_job(const char *, enum job_fate, int64_t);
const struct handler_stats *counters_handlers(size_t *);

/* cgroup.c */
/* The hierarchies a job's cgroup can live in: v2, then v1 controllers. */
enum cgroup_hier {
	CG_V2,
	CG_MEMORY,
	CG_PIDS,
	CG_CPU,
	CG_BLKIO,
	CG_COUNT
};
int		 cgroup_read(int, const char *, char *, size_t);
int		 cgroup_write(int, const char *, const char *);
long long	 cgroup_keyed(const char *, const char *);
int		 cgroup_init(const char *, const char *, int, int);
const char	*cgroup_mode(void);
int		 cgroup_on(void);
int		 cgroup_tree(enum cgroup_hier, const char **);
int		 cgroup_in_v2(enum limit_kind);
enum cgroup_hier cgroup_where(enum limit_kind);
int		 cgroup_check(const struct job_limits *, const char *, char *,
		    size_t);
void		 cgroup_exit(void);

/* jobcg.c */
struct jobcg;
/* What the kernel counted for one run; -1 for what it did not count. */
struct job_usage {
	int64_t		 cpu_user_us;
	int64_t		 cpu_system_us;
	int64_t		 memory_peak;	/* bytes */
	int64_t		 oom_kills;
	int64_t		 tasks_peak;
};
struct jobcg	*jobcg_new(const char *, const struct job_limits *, char *,
		    size_t);
int		 jobcg_procs(const struct jobcg *, int *, int);
void		 jobcg_started(struct jobcg *);
void		 jobcg_signal(struct jobcg *, int);
int		 jobcg_on_empty(struct jobcg *, void (*)(void *), void *);
void		 jobcg_usage(const struct jobcg *, struct job_usage *);
int		 jobcg_done(struct jobcg *, struct job_usage *);
void		 jobcg_free(struct jobcg *);

/* runner.c */
struct run_spec {
	char *const	*argv;
	char *const	*envp;
	const char	*workdir;
	const char	*input;		/* the job JSON, given on stdin */
	size_t		 input_len;
	int64_t		 timeout_ms;
	int64_t		 kill_grace_ms;
	size_t		 output_max;	/* per stream */
	int		 set_user;	/* switch to uid, gid and groups */
	uid_t		 uid;
	gid_t		 gid;
	const gid_t	*groups;
	int		 n_groups;
	long		 limit_nofile;	/* 0: inherit */
	long		 limit_nproc;
	size_t		 limit_as;
	int64_t		 limit_cpu_ms;
	const struct job_limits *limits;	/* for the job's cgroup */
	char		 cgroup_name[128];	/* job-ID-ATTEMPT */
};
struct run_result {
	int		 exited;	/* exited normally, with code */
	int		 code;
	int		 signaled;	/* killed by signo */
	int		 signo;
	int		 timed_out;
	int		 stopped;	/* runner_stop was called */
	int		 setup_errno;	/* chdir or exec failed in the child */
	const char	*setup_stage;
	int64_t		 started_ms;	/* wall clock */
	int64_t		 duration_ms;
	const char	*out;		/* captured stdout, not NUL-safe */
	size_t		 out_len;
	const char	*err;
	size_t		 err_len;
	uint64_t	 output_bytes;	/* all bytes written, kept or not */
	int		 truncated;
	int		 leftovers;	/* processes outlived the handler */
	struct job_usage usage;		/* from its cgroup */
};
typedef void (*run_done_cb)(const struct run_result *, void *);
void		 runner_init(void);
struct run	*runner_start(const struct run_spec *, run_done_cb, void *,
		    char *, size_t);
void		 runner_stop(struct run *);
int		 runner_pid(const struct run *);

/* state.c */
unsigned long long state_start_time(int);
unsigned long long state_ticks_now(void);
int	 state_add(int, unsigned long long);
int	 state_lock(const char *, const char *, char *, size_t);
int	 state_open(const char *, const char *, const char *, char *,
	    size_t);
void	 state_claim_done(void);
void	 state_save(const int *, const unsigned long long *, size_t);

/* spool.c */
extern ssize_t	(*spool_write_fn)(int, const void *, size_t);
int	 spool_open(const char *, size_t, char *, size_t);
void	 spool_set_max(size_t);
int	 spool_enabled(void);
size_t	 spool_count(void);
int	 spool_put(const char *, size_t, char *, size_t);
char	*spool_oldest(const char **, size_t *, int *);
void	 spool_reject(const char *);
void	 spool_remove(const char *);

/* notify.c */
void	 notify_init(void);
void	 notify_send(const char *, ...) __attribute__((format(printf, 1, 2)));
int	 notify_listen_fd(void);

/* ---- redis: the connections and the script calls ---- */

/* sentinel.c */
struct sentinel_ask;
typedef void (*sentinel_cb)(const char *, int, void *);	/* host NULL: none */
typedef void (*sentinel_moved_cb)(void);
int	 sentinel_setup(const char *, const char *, char *, size_t);
int	 sentinel_enabled(void);
struct sentinel_ask *sentinel_locate(sentinel_cb, void *);
void	 sentinel_cancel(struct sentinel_ask *);
void	 sentinel_watch(sentinel_moved_cb);
void	 sentinel_stop(void);

/* redirect.c */
#define REDIRECT_HEAD_ROOM	64	/* a script's sha and key count */
struct rconn;
struct redirect_queue;
/* A command in flight, with a copy of its argv to send it again. */
struct redirect_req {
	struct redirect_req	*next;		/* in its queue, waiting */
	struct redirect_queue	*queue;
	struct rconn		*rc;		/* the queue's connection */
	unsigned		 gen;		/* its context, when sent */
	void	(*cb)(const struct redisReply *, void *);	/* a redis_cb */
	void			*arg;
	int			 script;	/* enum script_id, or -1 */
	int			 argc;
	const char		**argv;
	size_t			*lens;
	char			*data;		/* what argv points into */
	int64_t			 deadline_ms;	/* sent again until then */
};
/* How a queue reaches its connection (redis.c). */
struct redirect_ops {
	int	(*can_send)(struct rconn *);	/* ready, and staying */
	int	(*send)(struct redirect_req *);	/* now: 0, or -1 */
	void	(*give_up)(struct rconn *);	/* one expired: reconnect */
};
struct redirect_queue *redirect_queue_new(const struct redirect_ops *,
	    struct rconn *);
void	 redirect_queue_free(struct redirect_queue *);
struct redirect_req *redirect_req_new(struct redirect_queue *, int, int, int,
	    const char **, const size_t *);
void	 redirect_req_free(struct redirect_req *);
int	 redirect_submit(struct redirect_req *);
void	 redirect_answer(struct redirect_req *, const struct redisReply *);
void	 redirect_flush(struct redirect_queue *);

/* redis.c */
typedef void (*redis_cb)(const struct redisReply *, void *);
typedef void (*redis_msg_cb)(const char *, const char *, size_t);
typedef void (*redis_state_cb)(int);
int	 redis_setup(const struct config *, char *, size_t);
struct rconn *redis_open(const char *, redis_state_cb);
void	 redis_subscribe(struct rconn *, const char *const *, size_t,
	    redis_msg_cb);
int	 redis_ready(const struct rconn *);
int	 redis_command(struct rconn *, redis_cb, void *, int, const char **,
	    const size_t *);
int	 redis_script(struct rconn *, enum script_id, redis_cb, void *, int,
	    int, const char **, const size_t *);
int64_t	 redis_silence_ms(const struct rconn *);
void	 redis_check_durability(struct rconn *);
void	 redis_reconnect(struct rconn *, const char *);
void	 redis_close(struct rconn *);
extern struct rconn	*rcmd;		/* commands and scripts */
extern struct rconn	*rsub;		/* pub/sub */

/* call.c */
struct call;
struct call	*call_start(enum script_id);
void	 call_key(struct call *, enum schema_key, const char *);
void	 call_arg(struct call *, const char *, const char *);
void	 call_argn(struct call *, const char *, const char *, size_t);
void	 call_int(struct call *, const char *, long long);
void	 call_key_arg(struct call *, const char *, enum schema_key,
	    const char *);
int	 call_send(struct call *, redis_cb, void *);
int	 call_send_free(struct call *, redis_cb, void *);
void	 call_free(struct call *);
int	 call_reply_is(const struct redisReply *, const char *);
int	 call_reply_strings(const struct redisReply *);

/* ---- services: one kind of Redis work each ---- */

/* routes.c */
struct json_t;
void	 routes_publish(void);
void	 routes_refresh(void);
size_t	 routes_match(const char *, struct handler **, size_t, size_t);
size_t	 routes_remote_names(const char **, size_t);
struct json_t *routes_agents(const char *, int *);
int	 routes_flow_mismatch(const char *, const char **, const char **);

/* enqueue.c */
typedef void (*enqueue_cb)(int, const char *, size_t, void *);
void	 enqueue_init(void (*)(void));
void	 enqueue_event(struct event *, int, enqueue_cb, void *);
void	 enqueue_replay(void);
void	 enqueue_answer(enqueue_cb, void *, struct json_t *);
void	 enqueue_refuse(enqueue_cb, void *, const char *, const char *);

/* promote.c */
void	 promote_start(void (*)(void));
void	 promote_kick(void);
void	 promote_stop(void);

/* inbox.c */
void	 inbox_start(void);
void	 inbox_claim_start(void);
void	 inbox_reconfigure(void);
void	 inbox_stop(void);

/* finish.c */
/* What the outbox asks of the loop above it (dispatch). */
struct finish_hooks {
	void	(*recorded)(void);		/* a finish is in Redis */
	char	*(*fill)(long *);		/* rooms to fill, or NULL */
	void	(*fetched)(int64_t, const struct redisReply *, int64_t, long);
					/* now, jobs, wake (-1), asked */
};
void	 finish_init(const struct finish_hooks *);
void	 finish_queue(const struct job_info *, const struct run_result *,
	    enum job_outcome, const char *, size_t);
void	 finish_flush(void);
size_t	 finish_pending(void);
void	 finish_each(void (*)(const char *, long, void *), void *);

/* ---- work: the loop that starts jobs ---- */

/* dispatch.c */
void	 dispatch_start(void);
void	 dispatch_open(void);
void	 dispatch_kick(void);
void	 dispatch_drain(void (*)(void));
int	 dispatch_running(void);
int	 dispatch_fetching(void);
void	 dispatch_each_lease(void (*)(const char *, long, void *), void *);
void	 dispatch_lease_lost(const char *);
void	 dispatch_cancel(const char *, const char *);
void	 dispatch_leases_renewed(int64_t);
void	 dispatch_guard_leases(void);
typedef void (*run_now_cb)(const struct run_result *, const char *,
	    const char *, const char *, void *);
int	 dispatch_run_now(struct handler *, const char *, const char *,
	    run_now_cb, void *, char *, size_t);

/* ---- life: the agent in Redis ---- */

/* heartbeat.c */
/* What main decides when the claim is answered, and what rides the beat. */
struct heartbeat_hooks {
	void	(*claimed)(void);	/* the name is ours: work */
	void	(*refused)(long long);	/* a live agent has it, for ms */
	void	(*beat)(void);		/* each heartbeat */
};
void	 heartbeat_start(const char *, const struct heartbeat_hooks *);
void	 heartbeat_claim(void);
void	 heartbeat_beat(void);
void	 heartbeat_reconfigure(void);
void	 heartbeat_goodbye(void (*)(void));
int	 heartbeat_claimed(void);
int	 heartbeat_is_leader(void);

/* ---- surface: what the outside talks to ---- */

/* subscribe.c */
void	 subscribe_start(void);

/* metrics.c */
typedef void (*metrics_cb)(const char *, size_t, void *);
void	 metrics_job(const char *, const char *, int64_t);
void	 metrics_render(metrics_cb, void *);
int	 metrics_listen(const char *);

/* admin.c */
int	 admin_serves(enum request_op);
void	 admin_request(const struct request *, enqueue_cb, void *);

/* admin_flow.c */
void	 admin_flow_request(const struct request *, enqueue_cb, void *);
void	 admin_flow_status(struct json_t *, const struct redisReply *);

/* control.c */
int	 control_listen(const char *, int, size_t);
int	 control_adopt(int, const char *, size_t);
void	 control_set_max(size_t);
void	 control_close(void);

#endif
