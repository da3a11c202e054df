#!/usr/bin/env bash
# The allocator's stress test (tests/test_stress.py, -m slow) under AddressSanitizer or
# ThreadSanitizer (README: Building with sanitizers). Builds an instrumented copy of the extension
# in a temporary directory, so the ordinary build stays as it is, preloads the sanitizer's runtime
# into the ordinary (uninstrumented) Python and PyTorch, and fails on the test's failure or on any
# report from the sanitizer.
#
# Usage: tests/sanitizers/run.sh address|thread [pytest arguments]   (PYTHON: the interpreter,
# default .venv/bin/python; SANITIZER_KEEP=1 keeps the temporary copy; SANITIZER_TIMEOUT: see below)
set -euo pipefail

sanitizer=${1:?usage: $0 address|thread [pytest arguments]}
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
case $python in */*) python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python") ;; esac  # kept across cd
work=$(mktemp -d "${TMPDIR:-/tmp}/torch-tier-$sanitizer.XXXXXX")
[ "${SANITIZER_KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT

# Each report goes to $work/reports.PID, so one is seen even if the process's exit status hides it.
case $sanitizer in
  address)
    flags="-fsanitize=address -fno-omit-frame-pointer -g"
    runtime=libasan.so
    # Leaks are off: Python and PyTorch keep memory until exit.
    export ASAN_OPTIONS="detect_leaks=0 log_path=$work/reports" ;;
  thread)
    flags="-fsanitize=thread -g"
    runtime=libtsan.so
    export TSAN_OPTIONS="suppressions=$root/tests/sanitizers/tsan.supp report_signal_unsafe=0 log_path=$work/reports" ;;
  *)
    echo "$0: unknown sanitizer '$sanitizer' (expected address or thread)" >&2
    exit 2 ;;
esac

# The sources and tests, without the ordinary build's extensions.
cp -r "$root/setup.py" "$root/pyproject.toml" "$root/csrc" "$root/torch_tier" "$root/tests" "$work"
rm -f "$work"/torch_tier/*.so
find "$work" -name __pycache__ -prune -exec rm -rf {} +

cd "$work"
echo "building the extension with $flags in $work"
if ! CFLAGS="$flags" LDFLAGS="${flags%% *}" "$python" setup.py build_ext --inplace >build.log 2>&1; then
  cat build.log
  exit 1
fi

# libstdc++ after the runtime, so that the runtime finds __cxa_throw (else ASan aborts on the
# first C++ exception).
# A hang (a deadlock) fails the run after SANITIZER_TIMEOUT seconds (default 600; the test takes 120).
status=0
LD_PRELOAD="$(g++ -print-file-name=$runtime) $(g++ -print-file-name=libstdc++.so.6)" PYTHONPATH="$work" \
  timeout -k 10 "${SANITIZER_TIMEOUT:-600}" "$python" -m pytest -p no:cacheprovider -m slow tests/test_stress.py "$@" \
  || status=$?

# The test ran the instrumented copy, not the ordinary build.
LD_PRELOAD="$(g++ -print-file-name=$runtime)" PYTHONPATH="$work" "$python" -c \
  "import torch, torch_tier._C as c, sys; sys.exit(not c.__file__.startswith('$work/'))" \
  || { echo "$0: the test did not load the instrumented extension" >&2; exit 1; }

if compgen -G "$work/reports.*" >/dev/null; then
  cat "$work"/reports.*
  echo "$0: $sanitizer sanitizer reports above" >&2
  exit 1
fi
exit "$status"
