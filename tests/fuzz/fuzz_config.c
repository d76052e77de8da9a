/* fuzz_config.c - libFuzzer harness: the configuration parsers. The input
 * is lines "NAME=value" put into the environment (NAME from the service's
 * variables, by index, so that every parser is reached), then the whole
 * table is loaded; and the duration parser on its own. */
#include "config.h"
#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[] = {
    "PORT", "DATABASE_URL", "NATS_URL", "MIGRATIONS_DIR", "LOG_LEVEL", "JS_REPLICAS",
    "HTTP_THREADS", "RELAY_SWEEP_MS", "RELAY_BATCH", "RELAY_MAX_ATTEMPTS", "OUTBOX_RETENTION",
    "PROCESSED_RETENTION", "STREAM_MAX_AGE", "CONSUMER_BATCH", "CONSUMER_WORKERS", "REDRIVE_AFTER",
    "DB_REQUEST_TIMEOUT", "DB_WORK_TIMEOUT", "DB_IDLE_TX_TIMEOUT", "DB_TCP_TIMEOUT",
    "HTTP_MAX_CONNECTIONS", "HTTP_MAX_CONNECTIONS_PER_IP", "HTTP_REQUEST_TIMEOUT",
};
#define NNAMES (sizeof names / sizeof names[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = xmalloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    int64_t ms;
    config_parse_duration_ms(text, &ms);
    /* each line: one byte choosing the variable, then its value */
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        setenv(names[(unsigned char)line[0] % NNAMES], line + 1, 1);
    struct config_defaults d = {"8080", "postgresql://postgres@127.0.0.1:5432/orders",
                                "migrations/order"};
    struct config c;
    char msg[512];
    if (config_load(&d, &c, msg, sizeof msg) == ERR_OK)
        config_cleanup(&c);
    else if (!memchr(msg, '\0', sizeof msg) || strchr(msg, '\n'))
        abort(); /* the error is one line */
    for (size_t i = 0; i < NNAMES; i++)
        unsetenv(names[i]);
    free(text);
    return 0;
}
