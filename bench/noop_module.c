/* The floor any keyspace module pays: subscribes to the events key_evt_amqp
 * subscribes to and returns at once. Built by `scripts/bench --only=cost`:
 *     cc -O2 -shared -fPIC -I<dir of redismodule.h> -o noop_module.so noop_module.c
 * Load argument: the event classes as key_evt_amqp takes them (default "A"). */
#include <string.h>
#include "redismodule.h"

static int on_event(RedisModuleCtx *ctx, int type, const char *event, RedisModuleString *key) {
    (void)ctx; (void)type; (void)event; (void)key;
    return REDISMODULE_OK;
}

static int classes(const char *s) {
    int t = 0;
    for (; *s; s++) {
        switch (*s) {
        case 'A': /* as key_evt_amqp's A: g$lshzxe */
            t |= REDISMODULE_NOTIFY_GENERIC | REDISMODULE_NOTIFY_STRING | REDISMODULE_NOTIFY_LIST |
                 REDISMODULE_NOTIFY_SET | REDISMODULE_NOTIFY_HASH | REDISMODULE_NOTIFY_ZSET |
                 REDISMODULE_NOTIFY_EXPIRED | REDISMODULE_NOTIFY_EVICTED;
            break;
        case 'g': t |= REDISMODULE_NOTIFY_GENERIC; break;
        case '$': t |= REDISMODULE_NOTIFY_STRING; break;
        case 'l': t |= REDISMODULE_NOTIFY_LIST; break;
        case 's': t |= REDISMODULE_NOTIFY_SET; break;
        case 'h': t |= REDISMODULE_NOTIFY_HASH; break;
        case 'z': t |= REDISMODULE_NOTIFY_ZSET; break;
        case 'x': t |= REDISMODULE_NOTIFY_EXPIRED; break;
        case 'e': t |= REDISMODULE_NOTIFY_EVICTED; break;
        case 't': t |= REDISMODULE_NOTIFY_STREAM; break;
        default: break;
        }
    }
    return t;
}

int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (RedisModule_Init(ctx, "noop_keyspace", 1, REDISMODULE_APIVER_1) == REDISMODULE_ERR)
        return REDISMODULE_ERR;
    int types = classes("A");
    if (argc > 0) {
        size_t len;
        const char *s = RedisModule_StringPtrLen(argv[0], &len);
        types = classes(s);
    }
    if (RedisModule_SubscribeToKeyspaceEvents(ctx, types, on_event) == REDISMODULE_ERR)
        return REDISMODULE_ERR;
    return REDISMODULE_OK;
}
