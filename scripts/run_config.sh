# Sourced by demo.sh, backlog_bench.sh and latency_bench.sh: writes a config for a fresh run,
# every topic and the consumer group named after the run, so runs never
# share state.  Usage: write_run_config RUN_ID FILE STATE_DIR
# KAFKA_SETTINGS adds lines to the [kafka] table, to compare settings in
# one sitting, e.g. KAFKA_SETTINGS='batch_max_records = 50000'.
# RUN_PARTITIONS is the partition count of the topics the run creates (the
# default config's, or KAFKA_SETTINGS' topic_partitions), which
# `replay --partitions` must match.
RUN_DEFAULTS="$(dirname "${BASH_SOURCE[0]}")/../config/default.toml"
write_run_config() {
  local id="$1" file="$2" state="$3"
  cat > "$file" <<TOML
[kafka]
group_id = "$id"
input_topics = ["$id-purchases", "$id-complaints", "$id-service-events"]
tier_topic = "$id-tier-changes"
warning_topic = "$id-churn-warnings"
dlq_topic = "$id-dlq"
${KAFKA_SETTINGS:-}
[state]
dir = "$state"
TOML
  RUN_PARTITIONS="$(awk -F' *= *' '/^topic_partitions/ {print $2; exit}' "$file" "$RUN_DEFAULTS")"
}
