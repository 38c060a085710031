#!/usr/bin/env bash
# The README's main command: measure publish -> RabbitMQ -> consume with `amqp perf`.
#   ./scripts/demo.sh [PERF ARGS...]     e.g. -z 30 -x 2 -y 2 -s 4096
#   ./scripts/demo.sh demo [URI] [MESSAGES]
# Makes sure the broker is up first (scripts/ensure-broker.sh). By default builds only the
# CLI (amqp-cli) in release and runs a short `amqp perf` against the local broker (10 s,
# confirms with a window of 1000, 1 KiB bodies; a live line each second, then a summary),
# then the same loop for 5 s against the in-process sink: the client's own ceiling.
# `demo` instead builds and runs the small demo crate (demo/: amqp-tokio without TLS):
#   cargo run --release -p amqp-demo -- [URI] [MESSAGES]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/ensure-broker.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    export PATH="${HOME:-/root}/.cargo/bin:${PATH}"
fi

if [[ ${1:-} == demo ]]; then
    shift
    exec cargo run --release -p amqp-demo -- "$@"
fi

cargo build --release -p amqp-cli
AMQP=${CARGO_TARGET_DIR:-target}/release/amqp

echo "== amqp perf against RabbitMQ at 127.0.0.1:5672"
"$AMQP" perf -z 10 -c 1000 -s 1024 "$@"
echo
echo "== amqp perf --sink: the same loop against an in-process fake broker (no RabbitMQ)"
"$AMQP" perf --sink -z 5 -c 1000 -s 1024 "$@"
