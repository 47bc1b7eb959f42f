/*
 * hlc.c — hybrid logical clock: value packing, text form, and the clock.
 *
 * The layout is specified in sa_hlc.h.  Because the counter sits in the low
 * 16 bits, "last + 1" on the packed value is exactly the HLC rule "same
 * logical ms, counter + 1", and a counter overflow carries into the
 * milliseconds by itself.  That keeps both rules below to one line each:
 *
 *     now:     new = max(pack(wall, 0), last + 1)
 *     receive: new = max(pack(wall, 0), max(last, remote) + 1)
 *
 * Invariants (H1 is asserted in debug builds; H2 is how restore is written):
 *   H1. every value returned by now/update is > every value the clock held
 *       before the call;
 *   H2. last never decreases (restore included).
 */
#include "sa/sa_hlc.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sa/sa_alloc.h"

struct sa_hlc_clock {
    pthread_mutex_t mu;
    uint64_t (*now_ms)(void *ctx);
    void *ctx;
    uint64_t max_drift_ms;
    uint64_t last; /* guarded by mu */
};

/* ------------------------------------------------------------------------ */
/* Values                                                                   */
/* ------------------------------------------------------------------------ */

int sa_hlc_pack_checked(uint64_t ms, uint64_t counter, uint64_t *out, sa_err *err)
{
    if (ms > SA_HLC_MS_MAX)
        return sa_err_set(err, SA_ERANGE,
                          "hlc milliseconds %" PRIu64 " exceed the 48-bit maximum %" PRIu64, ms,
                          SA_HLC_MS_MAX);
    if (counter > SA_HLC_COUNTER_MAX)
        return sa_err_set(err, SA_ERANGE,
                          "hlc counter %" PRIu64 " exceeds the 16-bit maximum %" PRIu64, counter,
                          SA_HLC_COUNTER_MAX);
    *out = sa_hlc_pack(ms, (uint16_t)counter);
    return 0;
}

void sa_hlc_unpack(uint64_t hlc, uint64_t *ms, uint16_t *counter)
{
    if (ms != NULL)
        *ms = hlc >> SA_HLC_COUNTER_BITS;
    if (counter != NULL)
        *counter = (uint16_t)(hlc & SA_HLC_COUNTER_MAX);
}

int sa_hlc_format(uint64_t hlc, char *buf, size_t cap)
{
    char tmp[SA_HLC_FORMAT_MAX];
    uint64_t ms;
    uint16_t counter;
    sa_hlc_unpack(hlc, &ms, &counter);
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64 ".%u", ms, (unsigned)counter);
    /* Format into a scratch buffer first so a too-small buf stays unchanged. */
    if (n < 0 || (size_t)n >= cap)
        return SA_ERANGE;
    memcpy(buf, tmp, (size_t)n + 1);
    return 0;
}

/* Parse a run of decimal digits no greater than max; advance *p past it. */
static int parse_digits(const char **p, uint64_t max, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9')
        return SA_EINVAL;
    for (; *s >= '0' && *s <= '9'; s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (max - d) / 10)
            return SA_ERANGE;
        v = v * 10 + d;
    }
    *p = s;
    *out = v;
    return 0;
}

int sa_hlc_parse(const char *s, uint64_t *out, sa_err *err)
{
    const char *p = s;
    uint64_t ms, counter;
    int rc = parse_digits(&p, SA_HLC_MS_MAX, &ms);
    if (rc == 0 && *p++ != '.')
        rc = SA_EINVAL;
    if (rc == 0)
        rc = parse_digits(&p, SA_HLC_COUNTER_MAX, &counter);
    if (rc == 0 && *p != '\0')
        rc = SA_EINVAL;
    if (rc == SA_ERANGE)
        return sa_err_set(err, rc,
                          "hlc \"%.40s\" is out of range (at most %" PRIu64 ".%" PRIu64 ")", s,
                          SA_HLC_MS_MAX, SA_HLC_COUNTER_MAX);
    if (rc != 0)
        return sa_err_set(err, rc, "hlc \"%.40s\" is not of the form <milliseconds>.<counter>",
                          s);
    *out = sa_hlc_pack(ms, (uint16_t)counter);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The clock                                                                */
/* ------------------------------------------------------------------------ */

static uint64_t realtime_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    /* CLOCK_REALTIME cannot fail with a valid clock id and pointer; a 0
     * reading would merely make the clock run on its counter. */
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || ts.tv_sec < 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int sa_hlc_clock_new(const sa_hlc_options *opts, sa_hlc_clock **out, sa_err *err)
{
    int rc = 0;
    sa_hlc_clock *c = sa_calloc(1, sizeof *c);
    if (c == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "hlc clock: out of memory");
        goto done;
    }
    int e = pthread_mutex_init(&c->mu, NULL);
    if (e != 0) {
        rc = sa_err_set(err, SA_ESYS, "hlc clock: pthread_mutex_init: %s", strerror(e));
        goto done;
    }
    c->now_ms = opts != NULL && opts->now_ms != NULL ? opts->now_ms : realtime_ms;
    c->ctx = opts != NULL ? opts->ctx : NULL;
    c->max_drift_ms = opts != NULL ? opts->max_drift_ms : 0;
    *out = c;
    c = NULL;
done:
    sa_free(c);
    return rc;
}

void sa_hlc_clock_free(sa_hlc_clock *clock)
{
    if (clock == NULL)
        return;
    pthread_mutex_destroy(&clock->mu);
    sa_free(clock);
}

/* Read the wall clock as an HLC value (counter 0).  Caller holds mu. */
static int wall_hlc(sa_hlc_clock *c, uint64_t *wall_ms, sa_err *err)
{
    uint64_t ms = c->now_ms(c->ctx);
    if (ms > SA_HLC_MS_MAX)
        return sa_err_set(err, SA_ECLOCK,
                          "wall clock reads %" PRIu64 " ms, beyond the 48-bit HLC range", ms);
    *wall_ms = ms;
    return 0;
}

/*
 * The one advance rule shared by now and update: the new value is above
 * `floor` (the larger of last and any received value) and no earlier than the
 * wall clock.  Caller holds mu.
 */
static int advance(sa_hlc_clock *c, uint64_t floor, uint64_t wall_ms, uint64_t *out,
                   sa_err *err)
{
    if (floor == UINT64_MAX)
        return sa_err_set(err, SA_ERANGE, "hlc clock exhausted: no value above %" PRIu64, floor);
    uint64_t wall = sa_hlc_pack(wall_ms, 0);
    uint64_t next = wall > floor ? wall : floor + 1;
    assert(next > c->last); /* H1 */
    c->last = next;
    *out = next;
    return 0;
}

int sa_hlc_now(sa_hlc_clock *clock, uint64_t *out, sa_err *err)
{
    uint64_t wall_ms = 0; /* set by wall_hlc; the initialiser quiets -O2 */
    pthread_mutex_lock(&clock->mu);
    int rc = wall_hlc(clock, &wall_ms, err);
    if (rc == 0)
        rc = advance(clock, clock->last, wall_ms, out, err);
    pthread_mutex_unlock(&clock->mu);
    return rc;
}

int sa_hlc_update(sa_hlc_clock *clock, uint64_t remote, uint64_t *out, sa_err *err)
{
    uint64_t wall_ms = 0; /* set by wall_hlc; the initialiser quiets -O2 */
    uint64_t remote_ms = remote >> SA_HLC_COUNTER_BITS;
    pthread_mutex_lock(&clock->mu);
    int rc = wall_hlc(clock, &wall_ms, err);
    if (rc != 0)
        goto done;
    if (clock->max_drift_ms != 0 && remote_ms > wall_ms &&
        remote_ms - wall_ms > clock->max_drift_ms) {
        char rtext[SA_HLC_FORMAT_MAX];
        sa_hlc_format(remote, rtext, sizeof rtext);
        rc = sa_err_set(err, SA_ECLOCK,
                        "remote hlc %s is %" PRIu64 " ms ahead of the local wall clock %" PRIu64
                        " ms (max drift %" PRIu64 " ms)",
                        rtext, remote_ms - wall_ms, wall_ms, clock->max_drift_ms);
        goto done;
    }
    rc = advance(clock, remote > clock->last ? remote : clock->last, wall_ms, out, err);
done:
    pthread_mutex_unlock(&clock->mu);
    return rc;
}

uint64_t sa_hlc_last(sa_hlc_clock *clock)
{
    pthread_mutex_lock(&clock->mu);
    uint64_t v = clock->last;
    pthread_mutex_unlock(&clock->mu);
    return v;
}

void sa_hlc_clock_restore(sa_hlc_clock *clock, uint64_t last_persisted)
{
    pthread_mutex_lock(&clock->mu);
    if (last_persisted > clock->last) /* H2: never lower it */
        clock->last = last_persisted;
    pthread_mutex_unlock(&clock->mu);
}
