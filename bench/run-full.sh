#!/bin/sh
# The whole comparison table in one command: every scenario x size x
# (floor, lapin, amqprs, amqp-tokio, amqp-async-std, amqp-blocking), first
# against RabbitMQ at 127.0.0.1:5672 (guest/guest), then against the fake
# broker (a separate process on loopback, no RabbitMQ sharing the cores).
#
#   ./run-full.sh                       R=3, N=200000 (16 B, 1 KiB) / 5000 (128 KiB)
#   R=1 COUNT_SMALL=20000 COUNT_LARGE=1000 ./run-full.sh
#   TAG=quiet-box ./run-full.sh         results/TAG-{rabbitmq,fake}.{md,jsonl,log}
#   BENCH_ARGS="--no-perf" ./run-full.sh   extra flags for both runs
#
# Needs cargo, and `perf` for the syscall columns (they stay empty without
# it). Writes results/TAG-*.md (the tables with load averages),
# results/TAG-*.jsonl (every measurement) and results/TAG-*.log (progress).
set -eu
cd "$(dirname "$0")"
R=${R:-3}
COUNT_SMALL=${COUNT_SMALL:-200000}
COUNT_LARGE=${COUNT_LARGE:-5000}
TAG=${TAG:-$(date -u +%F)-full}
cargo build --release
mkdir -p results
for broker in rabbitmq fake; do
    flag=""
    [ "$broker" = fake ] && flag="--fake"
    out="results/$TAG-$broker"
    rm -f "$out.jsonl"
    echo "== $broker: R=$R N=$COUNT_SMALL/$COUNT_LARGE, load: $(cut -d' ' -f1-3 /proc/loadavg); log in $out.log" >&2
    start=$(date +%s)
    # shellcheck disable=SC2086
    ./target/release/bench $flag --reps "$R" --count-small "$COUNT_SMALL" \
        --count-large "$COUNT_LARGE" --out "$out.jsonl" --markdown "$out.md" \
        ${BENCH_ARGS:-} 2> "$out.log"
    echo "== $broker took $(( $(date +%s) - start )) s" >&2
done
