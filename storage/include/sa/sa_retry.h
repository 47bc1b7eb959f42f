/*
 * sa_retry.h — retry delays: exponential backoff with full jitter.
 *
 * After the n-th consecutive failure (n = 0, 1, 2, ... since the last
 * success) the delay is drawn uniformly from [0, window(n)], both ends
 * included, where
 *
 *     window(n) = min(cap_ms, base_ms * 2^n)        ("full jitter", as in the
 *                                                    AWS architecture blog)
 *
 * Full jitter spreads a crowd of edges that failed together (a bridge
 * restart) over the whole window instead of bringing them back in waves.
 *
 * Retry-After: when the server named a delay, the next delay is
 *
 *     max(jittered delay, min(retry_after_ms, max_retry_after_ms))
 *
 * so we never come back sooner than asked, but a hostile or broken server
 * cannot park us for longer than max_retry_after_ms.  The jittered part stays
 * bounded by cap_ms as always.
 *
 * A sa_retry is a small caller-allocated value, not thread-safe: one per
 * retrying loop.  It owns no memory (there is nothing to free).
 */
#ifndef SA_RETRY_H
#define SA_RETRY_H

#include <stdint.h>

#include "sa/sa_err.h"

/* --- the policy ---------------------------------------------------------- */

/* Caller-filled; start from sa_retry_policy_default() and change fields. */
typedef struct sa_retry_policy {
    uint64_t base_ms;            /* window of the first retry; > 0 */
    uint64_t cap_ms;             /* largest window; >= base_ms */
    uint64_t max_retry_after_ms; /* a server's Retry-After is clamped to this */
    uint32_t max_attempts;       /* retries allowed between successes; 0 = unlimited */
} sa_retry_policy;

/* base 100 ms, cap 30 s, Retry-After honoured up to 5 min, unlimited attempts. */
sa_retry_policy sa_retry_policy_default(void);

/*
 * window(attempt) as above, without overflow for any attempt (2^attempt is
 * never computed; the window saturates at cap_ms).  The policy is borrowed.
 */
uint64_t sa_retry_window(const sa_retry_policy *policy, uint32_t attempt);

/* --- the state ----------------------------------------------------------- */

/* Caller-allocated; fields are private, use the functions. */
typedef struct sa_retry {
    sa_retry_policy policy; /* a copy: the caller's policy need not outlive it */
    uint64_t rng[4];        /* xoshiro256** state */
    uint32_t attempts;      /* retries since the last success; saturates */
} sa_retry;

/*
 * Initialise r with a copy of *policy.  seed != 0 makes the delay sequence
 * reproducible (tests); seed 0 seeds from the OS (getrandom, or the time and
 * pid if that fails), which is what production code wants so that edges do
 * not share a sequence.  SA_EINVAL (message names the fields) if base_ms is 0
 * or cap_ms < base_ms; r is then untouched.
 */
int sa_retry_init(sa_retry *r /* out */, const sa_retry_policy *policy, uint64_t seed, sa_err *err);

/*
 * Count one more failure and return the delay to wait before the next try in
 * *delay_ms_out.  retry_after_ms is the server's Retry-After, 0 if none.
 * Once max_attempts retries were handed out since the last success, returns
 * SA_ETIMEOUT ("give up"), leaving *delay_ms_out and the state untouched; it
 * keeps returning that until sa_retry_success.
 */
int sa_retry_next(sa_retry *r, uint64_t retry_after_ms, uint64_t *delay_ms_out /* out */,
                  sa_err *err);

/* The operation succeeded: the next failure starts again at window(0). */
void sa_retry_success(sa_retry *r);

/* Retries handed out since the last success (for logs and metrics). */
uint32_t sa_retry_attempts(const sa_retry *r);

#endif /* SA_RETRY_H */
