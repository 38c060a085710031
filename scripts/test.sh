#!/usr/bin/env bash
# The project's one test command:  ./scripts/test.sh
#
# Steps (stops at the first failure, exit status non-zero):
#   1. scripts/ensure-broker.sh  -- RabbitMQ on 127.0.0.1:5672 + a Rust toolchain
#   2. cargo fmt --all --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   -. rustdoc                    -- cargo doc --no-deps --workspace with warnings
#                                    as errors (broken intra-doc links, missing docs)
#   -. self-contained checks      -- no tracked file names a path outside the
#                                    repository; an isolated copy is made for step 4
#   -. packaging + MSRV          -- `cargo package --no-verify` of every crate (the
#                                    manifests are complete); every crate states the
#                                    workspace's rust-version, and a build with that
#                                    toolchain when it is installed
#   4. cargo test --workspace     -- unit, doc and integration tests (the
#                                    integration tests need the broker), run from
#                                    a copy of the repository that sits alone in
#                                    its own directory (see "self-contained" below)
#   -. feature metrics            -- clippy and the exporter test of amqp-client's
#                                    optional `metrics` feature (off by default)
#   5. fuzz smoke                 -- every target of `cargo fuzz list` in fuzz/,
#                                    FUZZ_SECONDS (default 30) seconds each,
#                                    without a sanitizer (FUZZ_SANITIZER);
#                                    FUZZ_SECONDS=0 skips this step
#
# The last line printed is "tests: N passed, N failed, N skipped", summed over
# every `cargo test` result line.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
[[ $FUZZ_SECONDS =~ ^[0-9]+$ ]] || {
    echo "FUZZ_SECONDS must be a whole number of seconds, got '${FUZZ_SECONDS}'" >&2
    exit 2
}

if [[ -n ${CI:-} ]]; then
    export CARGO_TERM_COLOR=never
fi

# Pick up a rustup install that is not on PATH yet.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    export PATH="${HOME:-/root}/.cargo/bin:${PATH}"
fi

TMP=$(mktemp -d)
TEST_LOG=$TMP/cargo-test.log

START=$SECONDS
SUMMARY=()
CURRENT_STEP=

banner() {
    printf '\n==================================================================\n'
    printf '== %s\n' "$*"
    printf '==================================================================\n'
}

loud() {
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
    printf '!!! %s\n' "$*"
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n'
}

# step NAME CMD ARGS... : run one step with a header and its wall time; on
# failure report it and exit with the command's status.
step() {
    local name=$1
    shift
    CURRENT_STEP=$name
    banner "$name"
    printf '$ %s\n' "$*"
    local t0=$SECONDS rc=0
    "$@" || rc=$?
    local dt=$((SECONDS - t0))
    if ((rc != 0)); then
        printf '\n*** FAILED: %s (exit %d, after %ds; total %ds)\n' "$name" "$rc" "$dt" "$((SECONDS - START))" >&2
        exit "$rc"
    fi
    printf -- '-- %s: ok in %ds\n' "$name" "$dt"
    SUMMARY+=("${name} ${dt}s")
}

# Self-contained: nothing in the build or tests may read outside the repository (a user's
# fresh clone has nothing beside it). Two checks:
#  - no tracked file names a path into the sibling folders this checkout happens to have;
#  - the tests run from a copy of the repository's files (tracked and new, not ignored) that is
#    alone in its own directory, so `../shared` or any other sibling is simply not there.
#    The copy keeps file times and builds into this checkout's target/, so only the workspace
#    crates compile again, once; later runs are incremental.
check_no_outside_paths() {
    local hits
    hits=$(git grep -nE '\.\./shared|/work/(shared|main|wt|notes)' -- . ':!scripts/test.sh' || true)
    if [[ -n $hits ]]; then
        printf '%s\n' "$hits"
        echo "these tracked files name paths outside the repository" >&2
        return 1
    fi
    echo "no tracked file names a path outside the repository"
}

# Manifests complete enough to publish: `cargo package` refuses a crate without description,
# licence, versioned path dependencies, …  --no-verify: the verifying build would compile every
# crate a second time; the workspace build above already compiled these sources.
check_packaging() {
    cargo package --workspace --no-verify --allow-dirty --quiet
    echo "every crate packages: $(cd "${CARGO_TARGET_DIR:-target}/package" && ls -- *.crate | tr '\n' ' ')"
}

# The minimum supported Rust version: stated once (workspace rust-version), inherited by every
# crate, and honoured by the code: clippy's incompatible_msrv lint (step 3) flags std APIs newer
# than it; a build with that exact toolchain runs when it is installed (it is not downloaded).
check_msrv() {
    local msrv packages stated
    msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
    [[ -n $msrv ]] || { echo "Cargo.toml states no rust-version" >&2; return 1; }
    packages=$(cargo metadata --no-deps --format-version 1 | grep -o '"manifest_path"' | wc -l)
    stated=$(cargo metadata --no-deps --format-version 1 | grep -o "\"rust_version\":\"$msrv\"" | wc -l)
    if ((packages != stated)); then
        echo "only $stated of $packages crates state rust-version $msrv" >&2
        return 1
    fi
    echo "all $packages crates state rust-version $msrv"
    if rustup toolchain list 2>/dev/null | grep -q "^$msrv"; then
        cargo "+$msrv" check --workspace --lib --bins
    else
        echo "toolchain $msrv is not installed: the MSRV build is not run here (clippy's incompatible_msrv lint still applies)"
    fi
}

ISOLATED_PARENT=${TMPDIR:-/tmp}/amqp-rs-isolated-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)
ISOLATED=$ISOLATED_PARENT/amqp-rs

make_isolated_copy() {
    rm -rf "$ISOLATED_PARENT"
    mkdir -p "$ISOLATED"
    # -co: tracked and untracked-but-not-ignored files; a tracked file deleted in the work tree
    # is skipped (--ignore-failed-read). tar keeps modification times.
    git ls-files -z -co --exclude-standard |
        tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$ISOLATED"
    echo "tests run from $ISOLATED (nothing beside it), target dir $ROOT/target"
}

run_cargo_test() {
    # Keep the output for the pass/fail counts; pipefail keeps cargo's status.
    (cd "$ISOLATED" && CARGO_TARGET_DIR="$ROOT/target" cargo test --workspace) 2>&1 | tee "$TEST_LOG"
}

# Optional features that the default-feature build above leaves out.
run_feature_tests() {
    (cd "$ISOLATED" && CARGO_TARGET_DIR="$ROOT/target" cargo clippy -p amqp-client --all-targets \
        --features metrics -- -D warnings &&
        CARGO_TARGET_DIR="$ROOT/target" cargo test -p amqp-client --features metrics \
            --test metrics_export) 2>&1 | tee -a "$TEST_LOG"
}

ensure_cargo_fuzz() {
    if cargo fuzz --version >/dev/null 2>&1; then
        echo "cargo-fuzz present: $(cargo fuzz --version)"
        return 0
    fi
    echo "cargo-fuzz missing; installing it (takes ~30 s on 2 cores)"
    cargo install cargo-fuzz --locked
}

FUZZ_TARGETS=()

# The fuzzed code forbids `unsafe`, so AddressSanitizer would only watch the dependencies'
# unsafe code, at about an eighth of the executions per second: the smoke runs without it
# (debug assertions and overflow checks stay on). FUZZ_SANITIZER="-s address" brings it back.
FUZZ_SANITIZER=${FUZZ_SANITIZER:--s none}

fuzz_build() {
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build $FUZZ_SANITIZER)
}

fuzz_run() {
    local target=$1
    # corpus/ (gitignored) takes what the run finds; seeds/ (committed) is read as well.
    local seeds=()
    [[ -d fuzz/seeds/$target ]] && seeds=("seeds/$target")
    mkdir -p "fuzz/corpus/$target"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $FUZZ_SANITIZER "$target" "corpus/$target" "${seeds[@]}" -- \
        -dict=amqp.dict -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048)
}

print_test_counts() {
    # cargo prints one line per test binary / doc-test run:
    #   test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...
    local passed=0 failed=0 ignored=0 p f i
    if [[ -f $TEST_LOG ]]; then
        while read -r p f i; do
            passed=$((passed + p))
            failed=$((failed + f))
            ignored=$((ignored + i))
        done < <(sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored;.*/\1 \2 \3/p' "$TEST_LOG")
    fi
    printf 'tests: %d passed, %d failed, %d skipped\n' "$passed" "$failed" "$ignored"
}

on_exit_failure() {
    local rc=$?
    if ((rc != 0)); then
        printf '\n== SUMMARY: FAILED at step "%s" (exit %d) after %ds\n' "${CURRENT_STEP:-setup}" "$rc" "$((SECONDS - START))" >&2
    fi
    rm -rf "$TMP" "$ISOLATED_PARENT"
}
trap on_exit_failure EXIT

step "ensure broker + toolchain" "$ROOT/scripts/ensure-broker.sh"
step "cargo fmt" cargo fmt --all --check
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
step "rustdoc" env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace
step "packaging" check_packaging
step "MSRV" check_msrv
step "self-contained: no outside paths" check_no_outside_paths
step "self-contained: isolated copy" make_isolated_copy
step "cargo test" run_cargo_test
step "feature metrics: clippy and test" run_feature_tests

if ((FUZZ_SECONDS == 0)); then
    loud "FUZZ_SECONDS=0: fuzz smoke SKIPPED"
    SUMMARY+=("fuzz skipped")
elif [[ ! -d fuzz ]]; then
    loud "NO FUZZ TARGETS EXIST: fuzz/ is missing; fuzz smoke SKIPPED"
    SUMMARY+=("fuzz missing")
else
    step "install cargo-fuzz (if missing)" ensure_cargo_fuzz
    banner "cargo fuzz list"
    CURRENT_STEP="cargo fuzz list"
    fuzz_list=$(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz list)
    if [[ -n $fuzz_list ]]; then
        mapfile -t FUZZ_TARGETS <<<"$fuzz_list"
    fi
    if ((${#FUZZ_TARGETS[@]} == 0)); then
        loud "NO FUZZ TARGETS EXIST: 'cargo fuzz list' in fuzz/ printed nothing; fuzz smoke SKIPPED"
        SUMMARY+=("fuzz none")
    else
        printf '%s\n' "${FUZZ_TARGETS[@]}"
        step "cargo fuzz build (all targets)" fuzz_build
        for t in "${FUZZ_TARGETS[@]}"; do
            step "fuzz ${t} (${FUZZ_SECONDS}s)" fuzz_run "$t"
        done
    fi
fi

CURRENT_STEP=summary
banner "SUMMARY"
printf '== all steps passed in %ds:' "$((SECONDS - START))"
printf ' [%s]' "${SUMMARY[@]}"
printf '\n'
print_test_counts
