#!/usr/bin/env bash
# fuzz.sh DURATION: runs every go test -fuzz target of the repository in turn for DURATION each (a go test
# -fuzztime value: 30s, 10m, 1h, or 5000000x for an execution count), stopping at the first failure.
# Targets are discovered with `go test -list` in every package whose tests declare a FuzzXxx function.
# FUZZ_PARALLEL=N sets the fuzzing workers per target (default: go's, all cores).
# FUZZ_TARGETS=REGEX runs only the targets whose "package name" matches (e.g. 'FuzzHeader|adapter '), so that a
# long campaign can be split across machines or days.
# FUZZ_MINIMIZETIME=D sets -fuzzminimizetime (default go's, 60s): each input that finds new coverage is minimised
# for up to D before fuzzing goes on, and those executions are not counted, so in a short run a smaller D (5s, 100x)
# gives more executions, at the cost of a larger corpus.
# FUZZ_TMPDIR=DIR is where the targets' temporary files go (default: /dev/shm when it is a writable directory, else
# $TMPDIR). Some targets rewrite files for every input (FuzzSideFiles a model directory's side files, FuzzCheckpoint
# a checkpoint); replaying their corpora ran 3.5-4.5x faster on tmpfs than on this project's ext4 VM disk.
# New crashers are saved by go test under PKG/testdata/fuzz/FuzzXxx/ and rerun by plain `go test`.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
	echo "usage: $0 DURATION   (e.g. 30s, 10m, 1h, 10000000x)" >&2
	exit 2
fi
duration=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
flags=()
if [[ -n "${FUZZ_PARALLEL:-}" ]]; then
	flags+=(-parallel "$FUZZ_PARALLEL")
fi
if [[ -n "${FUZZ_MINIMIZETIME:-}" ]]; then
	flags+=(-fuzzminimizetime "$FUZZ_MINIMIZETIME")
fi
if [[ -n "${FUZZ_TMPDIR:-}" ]]; then
	export TMPDIR=$FUZZ_TMPDIR
elif [[ -d /dev/shm && -w /dev/shm ]]; then
	export TMPDIR=/dev/shm
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
		[[ $name == Fuzz* ]] || continue
		# FUZZ_TARGETS, an extended regular expression, picks targets by "package name" (./gguf FuzzHeader).
		[[ -z ${FUZZ_TARGETS:-} || "$pkg $name" =~ $FUZZ_TARGETS ]] && targets+=("$pkg $name")
	done <<<"$list"
done
if [[ ${#targets[@]} -eq 0 ]]; then
	echo "fuzz.sh: no target matches FUZZ_TARGETS='${FUZZ_TARGETS:-}'" >&2
	exit 2
fi
echo "fuzz.sh: ${#targets[@]} targets, $duration each, temporary files in ${TMPDIR:-/tmp}"

# seconds 1h2m3s prints 3723: go test prints elapsed times as Go durations rounded to the second.
seconds() {
	local d=$1 n=0
	[[ $d =~ ([0-9]+)h ]] && n=$((n + 3600 * BASH_REMATCH[1]))
	[[ $d =~ ([0-9]+)m ]] && n=$((n + 60 * BASH_REMATCH[1]))
	[[ $d =~ ([0-9]+)s ]] && n=$((n + BASH_REMATCH[1]))
	echo "$n"
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
skipped=0
for target in "${targets[@]}"; do
	read -r pkg name <<<"$target"
	echo "== $pkg $name"
	corpus="$root/${pkg#./}/testdata/fuzz/$name"
	before=$(ls "$corpus" 2>/dev/null || true)
	# -timeout 0: go test's default 10m timeout would otherwise end any run of 10m or more as a failure.
	if ! go test "$pkg" -v -timeout 0 -run "^${name}\$" -fuzz "^${name}\$" -fuzztime "$duration" "${flags[@]}" >"$log" 2>&1; then
		# Go 1.26's coordinator can report its own -fuzztime deadline as a failure (go.dev/issue/75804, fixed in
		# Go 1.27); that is no finding when no failing input was written.
		if grep -q '^    context deadline exceeded$' "$log" && [[ $(ls "$corpus" 2>/dev/null || true) == "$before" ]]; then
			ran=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
			line=$(printf '%-20s %-30s %12s execs  (go.dev/issue/75804 at the deadline; no failing input)' "$pkg" "$name" "${ran:-?}")
			echo "$line"
			summary+=("$line")
			continue
		fi
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
	last=$(grep '^fuzz: elapsed:.*execs:' "$log" | tail -1 || true)
	execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' <<<"$last")
	total=$(sed -n 's/.*(total: \([0-9]*\)).*/\1/p' <<<"$last")
	if [[ -n $execs ]]; then
		# The rate on the last line covers only its last interval; the mean is executions over elapsed time
		# (which includes loading the corpus).
		secs=$(seconds "$(sed -n 's/^fuzz: elapsed: \([0-9hms]*\),.*/\1/p' <<<"$last")")
		line=$(printf '%-20s %-30s %12s execs %8s/s  corpus %s' "$pkg" "$name" "$execs" \
			"$((execs / (secs > 0 ? secs : 1)))" "${total:-?}")
	elif grep -q 'gathering baseline coverage' "$log"; then
		# Too short a DURATION: the corpus was still being run once for its coverage when time was up.
		line=$(printf '%-20s %-30s NOT FUZZED: %s was spent running the corpus for its baseline coverage' \
			"$pkg" "$name" "$duration")
		skipped=$((skipped + 1))
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
echo "fuzz.sh: all ${#targets[@]} targets passed ($duration each; $skipped skipped or not fuzzed):"
printf '%s\n' "${summary[@]}"
