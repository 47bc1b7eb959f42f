/* alloc.c — the allocation wrapper with test-controlled failure injection. */
#include "sa/sa_alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* < 0: injection off; otherwise allocations left before failing. */
static atomic_long fail_budget = -1;
static atomic_long fail_count = 0;

static int should_fail(void)
{
    long b = atomic_load(&fail_budget);
    while (b >= 0) {
        if (b == 0) {
            atomic_fetch_add(&fail_count, 1);
            return 1;
        }
        if (atomic_compare_exchange_weak(&fail_budget, &b, b - 1))
            return 0;
    }
    return 0;
}

void sa_alloc_fail_after(long n) { atomic_store(&fail_budget, n < 0 ? -1 : n); }
void sa_alloc_fail_reset(void)
{
    atomic_store(&fail_budget, -1);
    atomic_store(&fail_count, 0);
}
long sa_alloc_failed_count(void) { return atomic_load(&fail_count); }

void *sa_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *sa_calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *sa_realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

char *sa_strndup(const char *s, size_t n)
{
    char *d = sa_malloc(n + 1);
    if (d == NULL)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *sa_strdup(const char *s) { return sa_strndup(s, strlen(s)); }

void sa_free(void *p) { free(p); }
