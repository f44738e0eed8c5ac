#!/usr/bin/env bash
# fuzz.sh DURATION: runs every go test -fuzz target of the repository in turn for DURATION each (a go test
# -fuzztime value: 30s, 10m, 1h, or 5000000x for an execution count), stopping at the first failure.
# Targets are discovered with `go test -list` in every package whose tests declare a FuzzXxx function.
# FUZZ_PARALLEL=N sets the fuzzing workers per target (default: go's, all cores).
# New crashers are saved by go test under PKG/testdata/fuzz/FuzzXxx/ and rerun by plain `go test`.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
	echo "usage: $0 DURATION   (e.g. 30s, 10m, 1h, 10000000x)" >&2
	exit 2
fi
duration=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
parallel=()
if [[ -n "${FUZZ_PARALLEL:-}" ]]; then
	parallel=(-parallel "$FUZZ_PARALLEL")
fi

# Packages (as ./dir) whose test files declare a fuzz target.
mapfile -t pkgs < <(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u)
if [[ ${#pkgs[@]} -eq 0 ]]; then
	echo "fuzz.sh: no fuzz targets found under $root" >&2
	exit 1
fi

targets=()
for pkg in "${pkgs[@]}"; do
	if ! list=$(go test -list '^Fuzz' "$pkg" 2>&1); then
		printf 'fuzz.sh: FAIL: cannot list the fuzz targets of %s:\n%s\n' "$pkg" "$list" >&2
		exit 1
	fi
	while read -r name; do
		[[ $name == Fuzz* ]] && targets+=("$pkg $name")
	done <<<"$list"
done
echo "fuzz.sh: ${#targets[@]} targets, $duration each"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
skipped=0
for target in "${targets[@]}"; do
	read -r pkg name <<<"$target"
	echo "== $pkg $name"
	if ! go test "$pkg" -v -run "^${name}\$" -fuzz "^${name}\$" -fuzztime "$duration" "${parallel[@]}" >"$log" 2>&1; then
		cat "$log"
		ran=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
		echo
		echo "fuzz.sh: FAIL: $pkg $name failed${ran:+ after $ran executions} (output above)."
		echo "fuzz.sh: a failing input found by fuzzing is saved under $root/${pkg#./}/testdata/fuzz/$name/;"
		echo "fuzz.sh: rerun the target's corpus with:"
		echo "    cd $root && go test $pkg -run '^$name\$'"
		exit 1
	fi
	# go test -fuzz prints "fuzz: elapsed: 10s, execs: 123456 (12345/sec), new interesting: 3 (total: 40)" lines;
	# the last one holds the totals.
	last=$(grep '^fuzz: elapsed:' "$log" | tail -1 || true)
	execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' <<<"$last")
	total=$(sed -n 's/.*(total: \([0-9]*\)).*/\1/p' <<<"$last")
	if [[ -n $execs ]]; then
		line=$(printf '%-20s %-30s %12s execs  corpus %s' "$pkg" "$name" "$execs" "${total:-?}")
	else
		# A target that skips itself (for example when ../shared is absent) never starts fuzzing.
		reason=$(grep -B1 -- "--- SKIP: $name " "$log" | head -1 | sed 's/^ *[a-z_]*_test.go:[0-9]*: //' || true)
		line=$(printf '%-20s %-30s SKIPPED: %s' "$pkg" "$name" "${reason:-did not fuzz; see go test -v output}")
		skipped=$((skipped + 1))
	fi
	echo "$line"
	summary+=("$line")
done
echo
echo "fuzz.sh: all ${#targets[@]} targets passed ($duration each; $skipped skipped):"
printf '%s\n' "${summary[@]}"
