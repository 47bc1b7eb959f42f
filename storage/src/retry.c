/*
 * retry.c — exponential backoff with full jitter and Retry-After (sa_retry.h).
 *
 * The random source is xoshiro256** seeded through splitmix64 (the seeding
 * its authors recommend): small, fast, statistically sound, and reproducible
 * from one 64-bit seed so tests can pin a sequence.  It is not a
 * cryptographic generator, and need not be: it only spreads retries.
 */
#include "sa/sa_retry.h"

#include <inttypes.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Random numbers                                                           */
/* ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, max], both ends included, without modulo bias: draws in the
 * incomplete top slice of the 64-bit range are rejected and redrawn. */
static uint64_t uniform_upto(uint64_t s[4], uint64_t max)
{
    if (max == UINT64_MAX)
        return xoshiro_next(s);
    uint64_t range = max + 1;
    uint64_t limit = UINT64_MAX - UINT64_MAX % range; /* a multiple of range */
    uint64_t x;
    do
        x = xoshiro_next(s);
    while (x >= limit);
    return x % range;
}

/* A seed for "seed 0": the OS's entropy, or failing that whatever differs
 * between processes and moments, so two edges never share a sequence. */
static uint64_t os_seed(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed)
        return seed;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    seed = (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
    return seed ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&seed;
}

/* ------------------------------------------------------------------------ */
/* Policy and state                                                         */
/* ------------------------------------------------------------------------ */

sa_retry_policy sa_retry_policy_default(void)
{
    sa_retry_policy p = {
        .base_ms = 100,
        .cap_ms = 30 * 1000,
        .max_retry_after_ms = 5 * 60 * 1000,
        .max_attempts = 0,
    };
    return p;
}

uint64_t sa_retry_window(const sa_retry_policy *policy, uint32_t attempt)
{
    /* base * 2^attempt <= cap  <=>  base <= cap >> attempt (integers), which
     * never overflows; a shift of 64 or more is undefined, so saturate. */
    if (attempt >= 64 || policy->base_ms > (policy->cap_ms >> attempt))
        return policy->cap_ms;
    return policy->base_ms << attempt;
}

int sa_retry_init(sa_retry *r, const sa_retry_policy *policy, uint64_t seed, sa_err *err)
{
    if (policy == NULL)
        return sa_err_set(err, SA_EINVAL, "retry policy is NULL");
    if (policy->base_ms == 0)
        return sa_err_set(err, SA_EINVAL, "retry policy base_ms is 0: every delay would be 0");
    if (policy->cap_ms < policy->base_ms)
        return sa_err_set(err, SA_EINVAL,
                          "retry policy cap_ms %" PRIu64 " is below base_ms %" PRIu64,
                          policy->cap_ms, policy->base_ms);
    memset(r, 0, sizeof *r);
    r->policy = *policy;
    uint64_t x = seed != 0 ? seed : os_seed();
    for (int i = 0; i < 4; i++)
        r->rng[i] = splitmix64(&x); /* never all zero: splitmix64 is a bijection */
    return 0;
}

int sa_retry_next(sa_retry *r, uint64_t retry_after_ms, uint64_t *delay_ms_out, sa_err *err)
{
    if (r->policy.max_attempts != 0 && r->attempts >= r->policy.max_attempts)
        return sa_err_set(err, SA_ETIMEOUT, "giving up after %" PRIu32 " retries",
                          r->attempts);
    uint64_t delay = uniform_upto(r->rng, sa_retry_window(&r->policy, r->attempts));
    uint64_t floor = retry_after_ms < r->policy.max_retry_after_ms
                         ? retry_after_ms
                         : r->policy.max_retry_after_ms;
    if (delay < floor)
        delay = floor;
    if (r->attempts < UINT32_MAX) /* saturate: the window is at cap long before */
        r->attempts++;
    *delay_ms_out = delay;
    return 0;
}

void sa_retry_success(sa_retry *r) { r->attempts = 0; }

uint32_t sa_retry_attempts(const sa_retry *r) { return r->attempts; }
