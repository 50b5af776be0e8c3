/*
 * access.c: who may do what on the socket.  The [access] section lists
 * principals (a user name, a uid, or @group) allowed to emit, each with an
 * optional event glob, and those allowed the admin ops.  Peers are known by
 * the credentials the kernel recorded when they connected (SO_PEERCRED and
 * SO_PEERGROUPS), never by anything they say.
 *
 * Without emit lines, root, the agent's own user and members of the
 * socket's group may emit anything; without admin lines, root and the
 * agent's own user may use the admin ops.
 */
#include "config.h"

#include <fnmatch.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dispatchd.h"

/*
 * Parse "alice", "1001", "@web", each with ":GLOB" when globs is set, into
 * a rule.  -1 with why on an unknown user or group or a bad glob.
 */
static int
access_parse_one(const char *word, int globs, struct access_rule *r,
    const char **why)
{
	struct passwd	*pw;
	struct group	*gr;
	char		*name, *colon;
	long		 id;

	memset(r, 0, sizeof r[0]);
	name = xstrdup(word);
	if (globs && (colon = strchr(name, ':')) != NULL) {
		*colon++ = '\0';
		if (*colon == '\0') {
			*why = "empty event glob after ':'";
			goto fail;
		}
		r->glob = xstrdup(colon);
	} else if (!globs && strchr(name, ':') != NULL) {
		*why = "admin takes principals only, without event globs";
		goto fail;
	}
	if (name[0] == '@') {
		r->is_group = 1;
		if (util_parse_int(name + 1, 0, INT32_MAX, &id) == 0)
			r->id = (uint32_t)id;
		else if ((gr = getgrnam(name + 1)) != NULL)
			r->id = gr->gr_gid;
		else {
			*why = "no such group";
			goto fail;
		}
	} else if (util_parse_int(name, 0, INT32_MAX, &id) == 0)
		r->id = (uint32_t)id;
	else if ((pw = getpwnam(name)) != NULL)
		r->id = pw->pw_uid;
	else {
		*why = "no such user";
		goto fail;
	}
	free(name);
	return 0;
fail:
	free(r->glob);
	r->glob = NULL;
	free(name);
	return -1;
}

/*
 * Add the principals of one emit or admin line to rules; -1 with why and
 * the offending word in bad.
 */
int
access_parse(const char *value, int globs, struct access_rule **rules,
    size_t *n, const char **why, char *bad, size_t badlen)
{
	char	*copy, *tok, *save;
	int	 rc = 0;

	copy = xstrdup(value);
	for (tok = strtok_r(copy, ", \t", &save); tok != NULL;
	    tok = strtok_r(NULL, ", \t", &save)) {
		*rules = xreallocarray(*rules, *n + 1, sizeof **rules);
		if (access_parse_one(tok, globs, &(*rules)[*n], why) == -1) {
			snprintf(bad, badlen, "%s", tok);
			rc = -1;
			break;
		}
		(*n)++;
	}
	free(copy);
	return rc;
}

/* Free a rule list. */
void
access_free(struct access_rule *rules, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		free(rules[i].glob);
	free(rules);
}

/* Is the peer in group gid (primary or supplementary)? */
static int
access_in_group(const struct peer *p, uint32_t gid)
{
	int	i;

	if (p->gid == gid)
		return 1;
	for (i = 0; i < p->n_groups; i++)
		if (p->groups[i] == gid)
			return 1;
	return 0;
}

/* Does a rule name the peer (and, for emit rules, the event)? */
static int
access_rule_matches(const struct access_rule *r, const struct peer *p,
    const char *event)
{
	if (r->is_group ? !access_in_group(p, r->id) : p->uid != r->id)
		return 0;
	return event == NULL || r->glob == NULL ||
	    fnmatch(r->glob, event, 0) == 0;
}

/* May the peer emit this event? */
int
access_may_emit(const struct config *c, const struct peer *p,
    const char *event)
{
	size_t	i;

	if (c->n_emit == 0)
		return p->uid == 0 || p->uid == geteuid() ||
		    access_in_group(p, c->socket_gid);
	for (i = 0; i < c->n_emit; i++)
		if (access_rule_matches(&c->emit[i], p, event))
			return 1;
	return 0;
}

/* May the peer use the admin ops? */
int
access_may_admin(const struct config *c, const struct peer *p)
{
	size_t	i;

	if (c->n_admin == 0)
		return p->uid == 0 || p->uid == geteuid();
	for (i = 0; i < c->n_admin; i++)
		if (access_rule_matches(&c->admin[i], p, NULL))
			return 1;
	return 0;
}
