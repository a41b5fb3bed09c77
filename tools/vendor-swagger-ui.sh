#!/usr/bin/env bash
# Vendor Swagger UI into the package (hsepay/apidocs/swagger-ui/) from the npm registry's
# swagger-ui-dist, pinned below; writes the manifest (version, sha256 of every file) that
# tests/api/test_swagger_assets.py checks, and that `tools/vendor-swagger-ui.sh --check` compares
# with a fresh download (CI's ops stage). Why vendored and not a wheel: docs/decisions.md.
#   tools/vendor-swagger-ui.sh           # (re)vendor the pinned version
#   tools/vendor-swagger-ui.sh --check   # exit 1 if the vendored files differ from npm's
set -euo pipefail
VERSION=5.35.0
FILES=(swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png LICENSE NOTICE)
cd "$(dirname "$0")/.."
dest=hsepay/apidocs/swagger-ui
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# npm checks the tarball against the registry's integrity hash as it packs.
(cd "$work" && npm pack --silent "swagger-ui-dist@$VERSION" >/dev/null && tar xzf "swagger-ui-dist-$VERSION.tgz")
manifest() {
    echo "swagger-ui-dist $VERSION (npm)"
    (cd "$1" && sha256sum "${FILES[@]}")
}
if [[ "${1:-}" == "--check" ]]; then
    diff <(manifest "$work/package") "$dest/MANIFEST" && echo "vendor-swagger-ui: $dest matches swagger-ui-dist $VERSION"
    (cd "$dest" && sha256sum --quiet -c <(tail -n +2 MANIFEST))
    exit 0
fi
mkdir -p "$dest"
for file in "${FILES[@]}"; do cp "$work/package/$file" "$dest/$file"; done
manifest "$dest" >"$dest/MANIFEST"
echo "vendor-swagger-ui: swagger-ui-dist $VERSION into $dest"
