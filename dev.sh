#!/usr/bin/env bash
# Set up .venv at the repo root, then run the demo or the tests.
#   ./dev.sh demo   -> build the demo zoo's filter database end to end (into ./demo)
#   ./dev.sh test   -> ruff and the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

setup() {
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    local stamp=.venv/.filterdb-installed
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -e '.[dev]'
        touch "$stamp"
    fi
}

case "${1:-}" in
    demo)
        setup
        shift
        .venv/bin/filterdb demo -o demo "$@"
        ;;
    test)
        setup
        shift
        .venv/bin/python scripts/fetch_test_models.py
        .venv/bin/ruff check src tests benchmarks scripts
        .venv/bin/python -m pytest -q "$@"
        ;;
    *)
        echo "usage: ./dev.sh demo|test" >&2
        exit 2
        ;;
esac
