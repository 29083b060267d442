#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, 127.0.0.1 only) for the
# demo, the tests and CI — installed from Maven Central, no Docker.
#
#   scripts/kafka.sh install|start|stop|restart|status|wipe|env
#
# Knobs: TIERSTREAM_CACHE (default ~/.cache/tierstream), KAFKA_VERSION,
# KAFKA_DATA, KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093),
# KAFKA_SASL_PORT (9094: SASL_PLAINTEXT/PLAIN, user tierstream /
# tierstream-secret, for testing pass-through of SASL settings).
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-3.9.1}"
CACHE="${TIERSTREAM_CACHE:-$HOME/.cache/tierstream}"
HOME_DIR="$CACHE/kafka-$KAFKA_VERSION"
LIBS="$HOME_DIR/libs"
DATA="${KAFKA_DATA:-$CACHE/kafka-data}"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
SASL_PORT="${KAFKA_SASL_PORT:-9094}"
TLS_PORT="${KAFKA_TLS_PORT:-9095}"
TLS="$DATA/tls"
PIDFILE="$DATA/kafka.pid"
LOG="$DATA/kafka.log"
PROPS="$DATA/server.properties"

log() { echo "kafka.sh: $*" >&2; }

install() {
  if [ -f "$LIBS/.complete" ]; then
    return 0
  fi
  command -v java >/dev/null || { log "java not found (need a JDK 17+)"; exit 1; }
  command -v mvn >/dev/null || { log "mvn not found (need Maven)"; exit 1; }
  log "installing Apache Kafka $KAFKA_VERSION from Maven Central into $HOME_DIR"
  local build="$HOME_DIR/pom"
  rm -rf "$LIBS" "$build"
  mkdir -p "$build"
  cat > "$build/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tierstream.local</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
EOF
  (cd "$build" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS")
  touch "$LIBS/.complete"
}

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

# A private CA and a broker certificate for 127.0.0.1 (for the TLS listener
# and its test), made once with openssl. Clients trust $TLS/ca.crt.
make_certs() {
  [ -f "$TLS/broker.p12" ] && return 0
  command -v openssl >/dev/null || { log "openssl not found (apt-get install openssl)"; exit 1; }
  mkdir -p "$TLS"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tierstream local CA" \
    -keyout "$TLS/ca.key" -out "$TLS/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$TLS/broker.key" -out "$TLS/broker.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$TLS/san.ext"
  openssl x509 -req -in "$TLS/broker.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
    -CAcreateserial -days 3650 -extfile "$TLS/san.ext" -out "$TLS/broker.crt" 2>/dev/null
  openssl pkcs12 -export -in "$TLS/broker.crt" -inkey "$TLS/broker.key" -certfile "$TLS/ca.crt" \
    -name broker -passout pass:tierstream-tls -out "$TLS/broker.p12"
}

write_config() {
  mkdir -p "$DATA/logs"
  make_certs
  cat > "$PROPS" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT,SSL://127.0.0.1:$TLS_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT,SSL://127.0.0.1:$TLS_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL
listener.name.ssl.ssl.keystore.type=PKCS12
listener.name.ssl.ssl.keystore.location=$TLS/broker.p12
listener.name.ssl.ssl.keystore.password=tierstream-tls
listener.name.ssl.ssl.key.password=tierstream-tls
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_tierstream="tierstream-secret";
log.dirs=$DATA/logs
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
transaction.max.timeout.ms=900000
log.retention.hours=-1
log.segment.bytes=67108864
EOF
  cat > "$DATA/log4j.properties" <<EOF
log4j.rootLogger=WARN, file
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$DATA/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exec 3>&- 3<&-
}

start() {
  install
  if running; then
    log "already running (pid $(cat "$PIDFILE"))"
    return 0
  fi
  write_config
  local cp="$LIBS/*"
  if [ ! -f "$DATA/logs/meta.properties" ]; then
    local cluster_id
    cluster_id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
    java -Dlog4j.configuration="file:$DATA/log4j.properties" -cp "$cp" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$PROPS" --ignore-formatted >/dev/null
  fi
  log "starting broker on 127.0.0.1:$PORT (SASL/PLAIN on $SASL_PORT, TLS on $TLS_PORT with CA $TLS/ca.crt), data in $DATA"
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$DATA/log4j.properties" \
    -cp "$cp" kafka.Kafka "$PROPS" >"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + 120))
  until port_open "$PORT" && grep -q "started" "$DATA/server.log" 2>/dev/null; do
    if ! running; then
      log "broker exited during start-up:"; tail -40 "$LOG" "$DATA/server.log" 2>/dev/null >&2; exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "broker not ready after 120 s:"; tail -40 "$LOG" "$DATA/server.log" 2>/dev/null >&2; exit 1
    fi
    sleep 0.5
  done
  log "ready"
}

stop() {
  if ! running; then
    rm -f "$PIDFILE"
    return 0
  fi
  local pid
  pid=$(cat "$PIDFILE")
  log "stopping broker (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; return 0; }
    sleep 0.5
  done
  log "broker did not stop in 30 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if running; then echo "running (pid $(cat "$PIDFILE"), 127.0.0.1:$PORT)"; else echo "stopped"; exit 1; fi ;;
  wipe) stop; rm -rf "$DATA"; log "data wiped" ;;
  env) echo "export KAFKA_BOOTSTRAP=127.0.0.1:$PORT"; echo "export KAFKA_SASL_BOOTSTRAP=127.0.0.1:$SASL_PORT"
       echo "export KAFKA_TLS_BOOTSTRAP=127.0.0.1:$TLS_PORT"; echo "export KAFKA_TLS_CA=$TLS/ca.crt" ;;
  *) echo "usage: $0 install|start|stop|restart|status|wipe|env" >&2; exit 2 ;;
esac
