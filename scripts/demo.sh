#!/usr/bin/env bash
# The README's main command: run the demo against the local RabbitMQ.
#   ./scripts/demo.sh [URI] [MESSAGES]
# Makes sure the broker is up first (scripts/ensure-broker.sh), then builds and runs the
# demo crate (demo/: amqp-tokio without TLS, tokio; nothing else):
#   cargo run --release -p amqp-demo -- ARGS...
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/ensure-broker.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    export PATH="${HOME:-/root}/.cargo/bin:${PATH}"
fi
exec cargo run --release -p amqp-demo -- "$@"
