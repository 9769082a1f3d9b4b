#!/usr/bin/env bash
# Builds the DocC documentation with the toolchain's own `docc` (no plugin, nothing fetched) and
# fails on any warning (a broken symbol or article link) and on any public symbol without a
# documentation comment (.ci/doc-coverage.swift).
#
#   bash .ci/docs.sh [SYMBOL_GRAPH_DIR]
#
# SYMBOL_GRAPH_DIR holds the symbol graphs the compiler wrote while building with every trait on
# (`-Xswiftc -emit-symbol-graph -Xswiftc -emit-symbol-graph-dir -Xswiftc DIR`), as .ci/run's
# trait build does; without it this script runs that build itself, in .build-docs. The archives
# go to .build-docs/<Module>.doccarchive.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every library module of the package: each has a catalog, and its public API must be documented.
# The trait modules are empty unless their trait is on, hence the graphs of a build with all traits.
modules=(
    PolicyGate PolicyGateTOML PolicyGateTestKit PolicyGateProviders PolicyGateFakeProvider
    PolicyGateLogging PolicyGateMetrics PolicyGateTracing PolicyGatePostgres
    PolicyGateAsyncHTTPClient PolicyGateServiceLifecycle
)
traits=Logging,Metrics,Tracing,Postgres,AsyncHTTPClient,ServiceLifecycle

out=.build-docs
graphs=${1:-}
if [ -z "$graphs" ]; then
    graphs="$PWD/$out/symbol-graphs"
    mkdir -p "$graphs"
    swift build --traits "$traits" --scratch-path "$out/build" \
        -Xswiftc -emit-symbol-graph -Xswiftc -emit-symbol-graph-dir -Xswiftc "$graphs"
fi

# A library module is a documented product; a new one must come with a catalog.
for target in $(sed -n 's/.*\.library(name: "\([A-Za-z]*\)".*/\1/p' Package.swift); do
    case " ${modules[*]} " in *" $target "*) ;; *)
        echo "error: library $target is not in .ci/docs.sh's modules (add it, with a catalog)" >&2; exit 1 ;;
    esac
done

echo "documentation coverage of ${#modules[@]} modules"
swift .ci/doc-coverage.swift "$graphs" "${modules[@]}"

for module in "${modules[@]}"; do
    catalog="Sources/$module/$module.docc"
    [ -d "$catalog" ] || { echo "error: $module has no catalog ($catalog)" >&2; exit 1; }
    # docc reads every graph in the directory: give it this module's only (and its extensions of
    # other modules' types, <Module>@<Other>.symbols.json).
    only="$out/graphs/$module"
    rm -rf "$only" "$out/$module.doccarchive"
    mkdir -p "$only"
    cp "$graphs/$module.symbols.json" "$only/"
    find "$graphs" -maxdepth 1 -name "$module@*.symbols.json" -exec cp {} "$only/" \;
    echo "docc convert $module"
    docc convert "$catalog" --additional-symbol-graph-dir "$only" \
        --fallback-display-name "$module" --fallback-bundle-identifier "$module" \
        --output-path "$out/$module.doccarchive" --warnings-as-errors
done
echo "documentation built: $out/*.doccarchive"
