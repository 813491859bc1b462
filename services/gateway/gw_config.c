/* The settings of herald-gateway; deploy/herald.conf.example documents each. */
#include "gw_server.h"
#include "herald/hr_core.h"

#include <stddef.h>

const hr_cfg_field_t gw_config_fields[] = {
    {"gateway.host", HR_CFG_STR, offsetof(gw_config_t, host), "127.0.0.1", 0, 0},
    {"gateway.port", HR_CFG_INT, offsetof(gw_config_t, port), "8081", 0, 65535},
    {"gateway.reuseport", HR_CFG_BOOL, offsetof(gw_config_t, reuseport), "false", 0, 0},
    {"gateway.dev_user_query", HR_CFG_BOOL, offsetof(gw_config_t, dev_user_query), "false", 0, 0},
    {"gateway.node_id", HR_CFG_STR, offsetof(gw_config_t, node_id), "", 0, 0},
    {"gateway.max_frame", HR_CFG_INT, offsetof(gw_config_t, max_frame), "16384", 128, 1 << 24},
    {"gateway.queue_max_frames", HR_CFG_INT, offsetof(gw_config_t, queue_max_frames), "1024", 1,
     1 << 20},
    {"gateway.queue_max_bytes", HR_CFG_INT, offsetof(gw_config_t, queue_max_bytes), "1048576", 1024,
     1 << 30},
    {"gateway.ping_interval_s", HR_CFG_INT, offsetof(gw_config_t, ping_interval_s), "25", 1, 3600},
    {"gateway.idle_timeout_s", HR_CFG_INT, offsetof(gw_config_t, idle_timeout_s), "60", 2, 7200},
    {"gateway.drain_ms", HR_CFG_INT, offsetof(gw_config_t, drain_ms), "5000", 0, 600000},
    {"gateway.close_timeout_s", HR_CFG_INT, offsetof(gw_config_t, close_timeout_s), "5", 1, 600},
    {"gateway.max_rooms", HR_CFG_INT, offsetof(gw_config_t, max_rooms), "100", 1, 100000},
    {"gateway.publish_rate", HR_CFG_INT, offsetof(gw_config_t, publish_rate), "20", 1, 1000000},
    {"gateway.command_rate", HR_CFG_INT, offsetof(gw_config_t, command_rate), "50", 1, 1000000},
    {"gateway.max_sockets_per_user", HR_CFG_INT, offsetof(gw_config_t, max_sockets_per_user), "128",
     0, 1 << 30},
    {"gateway.max_sockets_per_ip", HR_CFG_INT, offsetof(gw_config_t, max_sockets_per_ip), "1000", 0,
     1 << 30},
    {"gateway.forwarded_for", HR_CFG_BOOL, offsetof(gw_config_t, forwarded_for), "false", 0, 0},
    {"gateway.presence_ttl_s", HR_CFG_INT, offsetof(gw_config_t, presence_ttl_s), "30", 3, 3600},
    {"gateway.presence_events_max", HR_CFG_INT, offsetof(gw_config_t, presence_events_max), "1000",
     0, 1 << 30},
    {"gateway.upgrade_rate", HR_CFG_INT, offsetof(gw_config_t, upgrade_rate), "50", 0, 1000000},
    {"gateway.upgrade_burst", HR_CFG_INT, offsetof(gw_config_t, upgrade_burst), "200", 0, 1000000},
    {"gateway.max_json_depth", HR_CFG_INT, offsetof(gw_config_t, max_json_depth), "16", 1, 1000},
    {"auth.revocation_ttl_s", HR_CFG_INT, offsetof(gw_config_t, revocation_ttl_s), "2592000", 1,
     1 << 30},
    {"redis.url", HR_CFG_STR, offsetof(gw_config_t, redis_url), "redis://127.0.0.1:6379", 0, 0},
    {"log.level", HR_CFG_STR, offsetof(gw_config_t, log_level), "info", 0, 0},
};
const size_t gw_config_nfields = HR_ARRAY_LEN(gw_config_fields);
