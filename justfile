# Common tasks; each is a thin wrapper over a script that also works without `just`.

demo:
    deploy/demo.sh

test:
    tests/run.sh

bench-postgres:
    bench/postgres.sh

fmt:
    cargo fmt --all

lint:
    cargo clippy --workspace --all-targets -- -D warnings
