/* backoff.c - the retry schedule shared by the relay and the consumers.
 * Pure except backoff_rand01(), which reads the kernel's randomness. */
#include "backoff.h"

#include <sys/random.h>

int64_t backoff_delay_ms(int attempt, int64_t base_ms, int64_t cap_ms, double rand01)
{
    int64_t d = base_ms;
    for (int i = 1; i < attempt && d < cap_ms; i++)
        d = d > cap_ms / 2 ? cap_ms : d * 2; /* never past cap_ms: no overflow */
    if (d > cap_ms)
        d = cap_ms;
    if (rand01 < 0)
        rand01 = 0;
    if (rand01 >= 1)
        rand01 = 0.999999;
    return d / 2 + (int64_t)((double)(d - d / 2) * rand01);
}

double backoff_rand01(void)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (long)sizeof r)
        return 0.5;
    return (double)r / 4294967296.0;
}
