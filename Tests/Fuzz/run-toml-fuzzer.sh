#!/usr/bin/env bash
# Fuzzes the PolicyGateTOML parser with libFuzzer and AddressSanitizer (opt-in; not part of
# `swift test`). Linux, Swift 6 toolchain with libFuzzer (swift.org toolchains ship it).
#
#   Tests/Fuzz/run-toml-fuzzer.sh                # 120 s
#   TOML_FUZZ_SECONDS=600 Tests/Fuzz/run-toml-fuzzer.sh
#
# Environment:
#   TOML_FUZZ_SECONDS  run time in seconds (default 120)
#   TOML_FUZZ_JOBS     parallel fuzzing processes (default 1)
#   TOML_TEST_DIR      the toml-test corpus (default: ../shared/toml-test beside the package)
#   TOML_FUZZ_WORK     where the binary, corpus and crash files go (default: .build-fuzz)
# Extra arguments are passed to libFuzzer (e.g. -max_len=4096).
#
# Seeds are every .toml file of the toml-test corpus, mutations use the TOML tokens of
# toml.dict; inputs libFuzzer finds interesting are kept in $TOML_FUZZ_WORK/corpus across runs,
# crashes in $TOML_FUZZ_WORK/artifacts.
set -euo pipefail

package_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds="${TOML_FUZZ_SECONDS:-120}"
jobs="${TOML_FUZZ_JOBS:-1}"
corpus_source="${TOML_TEST_DIR:-$package_root/../shared/toml-test}"
work="${TOML_FUZZ_WORK:-$package_root/.build-fuzz}"

mkdir -p "$work/corpus" "$work/artifacts" "$work/seeds"

# The parser's sources only (the Decodable layer is not fuzzed here), plus the entry point,
# as one module. -parse-as-library: the entry point file has no top-level code.
sources=()
for file in "$package_root"/Sources/PolicyGateTOML/*.swift; do
    case "$(basename "$file")" in
        TOMLDecoder*) ;;
        *) sources+=("$file") ;;
    esac
done

echo "building the fuzzer (${#sources[@]} sources)..."
swiftc -sanitize=fuzzer,address -parse-as-library -O -g \
    -swift-version 6 -enable-upcoming-feature ExistentialAny -enable-upcoming-feature MemberImportVisibility \
    -module-name TOMLFuzz -package-name PolicyGate \
    "${sources[@]}" "$package_root/Tests/Fuzz/TOMLFuzzer.swift" \
    -o "$work/toml-fuzzer"

if [ -d "$corpus_source/tests" ]; then
    # Flat copies: libFuzzer reads a directory's files, not its subdirectories.
    find "$corpus_source/tests" -name '*.toml' | while read -r file; do
        relative="${file#"$corpus_source/tests/"}"
        cp "$file" "$work/seeds/${relative//\//__}"
    done
    echo "seeds: $(ls "$work/seeds" | wc -l) files from $corpus_source"
else
    echo "no toml-test corpus at $corpus_source; fuzzing from an empty corpus"
fi

echo "fuzzing for ${seconds}s with ${jobs} job(s)..."
cd "$work"
if [ "$jobs" -gt 1 ]; then
    parallel=(-jobs="$jobs" -workers="$jobs")
else
    parallel=()
fi
./toml-fuzzer corpus seeds \
    -dict="$package_root/Tests/Fuzz/toml.dict" \
    -max_total_time="$seconds" \
    -artifact_prefix="$work/artifacts/" \
    -print_final_stats=1 \
    ${parallel[@]+"${parallel[@]}"} \
    "$@"
