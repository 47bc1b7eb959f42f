/*
 * sa_hlc.h — hybrid logical clock (HLC) values and the clock that issues them.
 *
 * Value layout (DESIGN.md, "Operations"): one uint64_t,
 *
 *     bit 63 ................ 16 | 15 ........ 0
 *     milliseconds since the      counter
 *     Unix epoch (48 bits)        (16 bits)
 *
 * so HLC values order correctly as plain unsigned integers: compare them with
 * <, ==, >.  48 bits of milliseconds last until the year 10889.
 *
 * The clock (sa_hlc_clock) issues values that are strictly greater than every
 * value it issued or received before (invariant H1), whatever the wall clock
 * does: if the wall clock steps back, the logical time stays where it was and
 * the counter moves; if the counter would pass 0xFFFF, the carry advances the
 * logical milliseconds by one (the packed value is simply incremented).
 * Persist the last value (sa_hlc_last) with your data and hand it back to
 * sa_hlc_clock_restore after a restart, so a restarted process never goes
 * backwards either.
 */
#ifndef SA_HLC_H
#define SA_HLC_H

#include <stddef.h>
#include <stdint.h>

#include "sa/sa_err.h"

/* --- layout constants ---------------------------------------------------- */

#define SA_HLC_COUNTER_BITS 16
#define SA_HLC_MS_BITS 48
#define SA_HLC_COUNTER_MAX UINT64_C(0xFFFF)
#define SA_HLC_MS_MAX ((UINT64_C(1) << SA_HLC_MS_BITS) - 1)
/* Room for the longest sa_hlc_format output, "281474976710655.65535", + NUL. */
#define SA_HLC_FORMAT_MAX 24

/* --- values -------------------------------------------------------------- */

/*
 * Pack milliseconds and a counter.  Masking, never failing: bits of ms above
 * the 48th are dropped.  Use it for values known to be in range; use
 * sa_hlc_pack_checked for anything that came from outside.
 */
static inline uint64_t sa_hlc_pack(uint64_t ms, uint16_t counter)
{
    return ((ms & SA_HLC_MS_MAX) << SA_HLC_COUNTER_BITS) | (uint64_t)counter;
}

/*
 * Pack with range checks: SA_ERANGE (message names the value) if ms exceeds
 * SA_HLC_MS_MAX or counter exceeds SA_HLC_COUNTER_MAX.  *out untouched on error.
 */
int sa_hlc_pack_checked(uint64_t ms, uint64_t counter, uint64_t *out /* out */, sa_err *err);

/* Split a value into milliseconds and counter.  Either output may be NULL. */
void sa_hlc_unpack(uint64_t hlc, uint64_t *ms /* out */, uint16_t *counter /* out */);

/*
 * Write "ms.counter" (e.g. "1732575000000.3") into buf, NUL-terminated.
 * Returns 0, or SA_ERANGE if cap is too small (SA_HLC_FORMAT_MAX always
 * suffices); buf is then left unchanged.
 */
int sa_hlc_format(uint64_t hlc, char *buf /* out */, size_t cap);

/*
 * Parse the sa_hlc_format text form strictly: decimal digits, one '.', decimal
 * digits, nothing else; both parts in range.  SA_EINVAL / SA_ERANGE otherwise,
 * with *out untouched.
 */
int sa_hlc_parse(const char *s, uint64_t *out /* out */, sa_err *err);

/* --- the clock ----------------------------------------------------------- */

/* Opaque; create with sa_hlc_clock_new, release with sa_hlc_clock_free. */
typedef struct sa_hlc_clock sa_hlc_clock;

/*
 * Clock options; zero-initialised means "the defaults" (CLOCK_REALTIME,
 * unlimited drift).  Copied by sa_hlc_clock_new.
 */
typedef struct sa_hlc_options {
    /* Wall-clock source in milliseconds since the Unix epoch; NULL means
     * CLOCK_REALTIME.  Tests inject one to step time back or freeze it.  It is
     * called with the clock's mutex held, so it must not call into the clock. */
    uint64_t (*now_ms)(void *ctx);
    void *ctx; /* passed to now_ms; borrowed, must outlive the clock */
    /* sa_hlc_update refuses a remote value whose milliseconds are more than
     * this far ahead of our wall clock: a peer with a broken clock must not
     * drag every later timestamp into its future.  0 = unlimited. */
    uint64_t max_drift_ms;
} sa_hlc_options;

/*
 * Create a clock with last value 0.  opts may be NULL (defaults).  On success
 * *out owns a new clock the caller frees with sa_hlc_clock_free; SA_ENOMEM or
 * SA_ESYS (mutex) otherwise, with *out untouched.
 */
int sa_hlc_clock_new(const sa_hlc_options *opts, sa_hlc_clock **out /* out */, sa_err *err);

/* Free a clock; NULL is a no-op.  No other thread may still be using it. */
void sa_hlc_clock_free(sa_hlc_clock *clock);

/*
 * Issue a timestamp for a local event: max(wall, last + 1) in packed terms, so
 * strictly greater than anything issued or received before.  Thread-safe.
 * Errors, with *out and the clock untouched: SA_ECLOCK if the wall clock reads
 * beyond 48 bits of milliseconds; SA_ERANGE if the logical clock is exhausted
 * (last == UINT64_MAX).
 */
int sa_hlc_now(sa_hlc_clock *clock, uint64_t *out /* out */, sa_err *err);

/*
 * Receive a remote timestamp (the standard HLC receive rule): the new value is
 * max(wall, last + 1, remote + 1), so it is greater than both our last value
 * and the remote one, and *out is that new value.  Thread-safe.
 * SA_ECLOCK if the remote milliseconds are more than max_drift_ms ahead of our
 * wall clock (the message names both values); SA_ERANGE / SA_ECLOCK as for
 * sa_hlc_now.  On any error the clock and *out are untouched.
 */
int sa_hlc_update(sa_hlc_clock *clock, uint64_t remote, uint64_t *out /* out */, sa_err *err);

/* The last value issued, received or restored (0 for a fresh clock). */
uint64_t sa_hlc_last(sa_hlc_clock *clock);

/*
 * Raise the clock to at least last_persisted, the value a previous run
 * persisted, so this process never issues anything at or below it.  Never
 * lowers the clock.  Not drift-checked: our own persisted past is trusted, and
 * refusing it would leave no way to start.
 */
void sa_hlc_clock_restore(sa_hlc_clock *clock, uint64_t last_persisted);

#endif /* SA_HLC_H */
