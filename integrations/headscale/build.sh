#!/usr/bin/env bash
# Build Headscale v0.29.2 with tka's tailnet-lock patch series.
#
#   build.sh [--test] OUTDIR
#
# Downloads github.com/juanfont/headscale@v0.29.2 through the Go module proxy
# (`go mod download -json`, the only network access), copies the tree to a
# temporary work directory, applies patches/*.patch in order, and builds
# ./cmd/headscale with -trimpath into OUTDIR/headscale.
#
# --test also runs `go vet` and `go test -short` on every package a patch
# touches (-short skips upstream's load-timing scale tests, which fail on a
# busy two-core machine whatever the patches do).
#
# Environment: GO (default: go on PATH); TKA_HEADSCALE_KEEP_WORK=1 keeps the
# work directory and prints its path.
set -euo pipefail

HEADSCALE_MODULE=github.com/juanfont/headscale
HEADSCALE_VERSION=v0.29.2

die() {
	echo "build.sh: $*" >&2
	exit 1
}

run_tests=0
outdir=""
for arg in "$@"; do
	case "$arg" in
	--test) run_tests=1 ;;
	-h | --help)
		sed -n '2,15p' "$0"
		exit 0
		;;
	-*) die "unknown option $arg" ;;
	*)
		[ -z "$outdir" ] || die "one output directory, please (got '$outdir' and '$arg')"
		outdir=$arg
		;;
	esac
done
[ -n "$outdir" ] || die "usage: build.sh [--test] OUTDIR"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
patchdir=$here/patches
go=${GO:-go}

command -v "$go" >/dev/null 2>&1 || die "go not found (set GO or put go on PATH)"
command -v patch >/dev/null 2>&1 || die "patch(1) not found"

shopt -s nullglob
patches=("$patchdir"/*.patch)
shopt -u nullglob
[ ${#patches[@]} -gt 0 ] || die "no patches in $patchdir"

mkdir -p "$outdir" || die "cannot create output directory $outdir"
outdir=$(cd "$outdir" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/tka-headscale.XXXXXX") || die "cannot create a work directory"
cleanup() {
	if [ "${TKA_HEADSCALE_KEEP_WORK:-}" = 1 ]; then
		echo "build.sh: work directory kept: $work" >&2
	else
		chmod -R u+w "$work" 2>/dev/null || true
		rm -rf "$work"
	fi
}
trap cleanup EXIT

# Keep the download cache in the caller's module cache, but never let a newer
# toolchain be fetched behind our back: the Go on PATH builds or we fail.
export GOTOOLCHAIN=local
export GOFLAGS=${GOFLAGS:-}

echo "build.sh: downloading $HEADSCALE_MODULE@$HEADSCALE_VERSION" >&2
# `go mod download` needs a module context only for its cache; run it from
# the empty work directory with GO111MODULE=on.
if ! info=$(cd "$work" && GO111MODULE=on "$go" mod download -json "$HEADSCALE_MODULE@$HEADSCALE_VERSION"); then
	die "go mod download $HEADSCALE_MODULE@$HEADSCALE_VERSION failed (is the Go module proxy reachable?)"
fi

# The "Dir" field of the JSON answer, without needing jq.
moddir=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)
[ -n "$moddir" ] && [ -d "$moddir" ] || die "go mod download gave no module directory: $info"

src=$work/headscale
cp -R "$moddir" "$src" || die "copying $moddir failed"
chmod -R u+w "$src"

for p in "${patches[@]}"; do
	echo "build.sh: applying $(basename "$p")" >&2
	patch -p1 --batch --forward --quiet -d "$src" <"$p" ||
		die "patch $(basename "$p") does not apply to $HEADSCALE_MODULE@$HEADSCALE_VERSION"
done

cd "$src"

echo "build.sh: building ./cmd/headscale" >&2
"$go" build -trimpath -o "$outdir/headscale" ./cmd/headscale ||
	die "go build ./cmd/headscale failed"

if [ "$run_tests" = 1 ]; then
	# The Go packages the patches touch: the directories of their .go files.
	mapfile -t touched < <(
		sed -n 's|^+++ b/\(.*\)/[^/]*\.go$|./\1|p' "${patches[@]}" | sort -u
	)
	[ ${#touched[@]} -gt 0 ] || die "no Go package touched by the patches?"

	echo "build.sh: go vet ${touched[*]}" >&2
	"$go" vet "${touched[@]}" || die "go vet failed"

	echo "build.sh: go test -short ${touched[*]}" >&2
	"$go" test -short -count=1 "${touched[@]}" || die "go test failed"
fi

echo "build.sh: built $outdir/headscale" >&2
