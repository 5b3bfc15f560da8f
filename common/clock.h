/* Monotonic time for deadlines, timeouts and measurements, and wall-clock time
 * where a value crosses processes (record deadlines). */
#ifndef MW_CLOCK_H
#define MW_CLOCK_H

#include <stdint.h>

/* Milliseconds / microseconds on CLOCK_MONOTONIC (never jumps). Thread-safe. */
int64_t mw_now_ms(void);
int64_t mw_now_us(void);

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t mw_unix_ms(void);

#endif
