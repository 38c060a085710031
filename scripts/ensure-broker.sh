#!/usr/bin/env bash
# Make sure the things the test suite needs are present:
#   * a Rust toolchain (cargo) -- cannot be installed from here, so fail loudly;
#   * a RabbitMQ broker answering on ${AMQP_HOST}:${AMQP_PORT} (default
#     127.0.0.1:5672, guest/guest). If nothing answers, install Debian's
#     rabbitmq-server when it is missing, start it, and wait until it is up.
#
# Idempotent; when the broker already answers it returns in well under 1 s.
#
# Environment:
#   AMQP_HOST / AMQP_PORT        where the broker must answer (127.0.0.1 / 5672)
#   BROKER_STARTUP_TIMEOUT       seconds to wait for a started broker (120)
set -euo pipefail

HOST=${AMQP_HOST:-127.0.0.1}
PORT=${AMQP_PORT:-5672}
STARTUP_TIMEOUT=${BROKER_STARTUP_TIMEOUT:-120}

log() { printf '[ensure-broker] %s\n' "$*"; }
die() {
    printf '[ensure-broker] ERROR: %s\n' "$*" >&2
    exit 1
}

# Root's PATH normally has /usr/sbin, but be safe (rabbitmq-server lives there)
# and pick up a rustup install that is not on PATH yet.
case ":${PATH}:" in
*:/usr/sbin:*) ;;
*) PATH="${PATH}:/usr/sbin:/sbin" ;;
esac
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    PATH="${HOME:-/root}/.cargo/bin:${PATH}"
fi
export PATH

# --- Rust toolchain ----------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    printf '\n' >&2
    printf '[ensure-broker] ################################################\n' >&2
    printf '[ensure-broker] ERROR: no Rust toolchain: cargo is not on PATH.\n' >&2
    printf '[ensure-broker] Install Rust (rustup) first; it cannot be fetched\n' >&2
    printf '[ensure-broker] by this script.\n' >&2
    printf '[ensure-broker] ################################################\n' >&2
    exit 1
fi

# --- Broker ------------------------------------------------------------------
# True when something accepts a TCP connection on HOST:PORT (1 s timeout).
port_open() {
    timeout 1 bash -c "exec 3<>/dev/tcp/${HOST}/${PORT}" 2>/dev/null
}

if port_open; then
    log "broker answers on ${HOST}:${PORT}; cargo: $(command -v cargo)"
    exit 0
fi

log "nothing answers on ${HOST}:${PORT}"

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "rabbitmq-server is not installed and we are not root: cannot install it"
    log "rabbitmq-server is not installed; installing it from Debian's packages"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server
    command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server still missing after apt-get install"
    # The package's post-install step may already have started the service.
    sleep 1
    if port_open; then
        log "broker started by the package install; answers on ${HOST}:${PORT}"
        exit 0
    fi
fi

log "starting RabbitMQ: rabbitmq-server -detached"
if ! rabbitmq-server -detached; then
    # It may already be starting (or half-up); fall through to the wait below.
    log "warning: 'rabbitmq-server -detached' failed; waiting for a node that may already be starting"
fi

deadline=$((SECONDS + STARTUP_TIMEOUT))

# Right after -detached the Erlang node may not accept CLI connections yet,
# in which case await_startup fails at once: retry until the deadline.
log "waiting for the node: rabbitmqctl await_startup (timeout ${STARTUP_TIMEOUT}s)"
until timeout "$((deadline - SECONDS > 1 ? deadline - SECONDS : 1))" \
    rabbitmqctl --timeout "${STARTUP_TIMEOUT}" await_startup >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        die "RabbitMQ did not start within ${STARTUP_TIMEOUT}s (see /var/log/rabbitmq/)"
    fi
    sleep 1
done

log "node is up; waiting for ${HOST}:${PORT} to accept connections"
until port_open; do
    if ((SECONDS >= deadline)); then
        die "RabbitMQ started but ${HOST}:${PORT} did not answer within ${STARTUP_TIMEOUT}s (see /var/log/rabbitmq/)"
    fi
    sleep 0.5
done

log "broker answers on ${HOST}:${PORT} (after ${SECONDS}s)"
