/* backoff.h - capped exponential backoff with jitter (pure). */
#ifndef COMMON_BACKOFF_H
#define COMMON_BACKOFF_H

#include <stdint.h>

/* Delay before retry number `attempt` (1 = first retry): base * 2^(attempt-1)
 * capped at cap_ms, then "equal jitter": half fixed, half scaled by rand01
 * in [0,1). Always within [min(base,cap)/2, cap_ms]. */
int64_t backoff_delay_ms(int attempt, int64_t base_ms, int64_t cap_ms, double rand01);

/* A uniform random number in [0,1) (thread-safe). */
double backoff_rand01(void);

#endif
