/*
 * sa_alloc.h — the one allocation wrapper.
 *
 * Every allocation in libsa_storage (and the programs built on it) goes
 * through these, so tests can make the Nth allocation fail and check that
 * out-of-memory paths return SA_ENOMEM cleanly instead of hoping they do.
 */
#ifndef SA_ALLOC_H
#define SA_ALLOC_H

#include <stddef.h>

void *sa_malloc(size_t n);
void *sa_calloc(size_t count, size_t size);
void *sa_realloc(void *p, size_t n);
char *sa_strdup(const char *s);
char *sa_strndup(const char *s, size_t n);
void sa_free(void *p); /* NULL is a no-op */

/*
 * Fault injection for tests: after `n` more successful allocations, every
 * allocation fails until sa_alloc_fail_reset().  n < 0 disables injection.
 * Thread-safe (atomic counter).
 */
void sa_alloc_fail_after(long n);
void sa_alloc_fail_reset(void);
/* Number of allocations that failed by injection since the last reset. */
long sa_alloc_failed_count(void);

#endif /* SA_ALLOC_H */
