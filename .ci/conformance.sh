#!/usr/bin/env bash
# Proves that githubapp/simulator/testdata holds GitHub's published
# descriptions (trimmed; the webhooks are checked against both the
# x-webhooks of the REST package and the webhook package's schemas, see
# testdata/README.md), then checks the simulator against them.
#
# 1. npm pack the exact package versions the copies came from;
# 2. run trimspec on them and fail if the result differs from the committed
#    copies;
# 3. run the simulator's conformance test with the race detector.
set -euo pipefail

cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

packages=(@octokit/openapi@23.0.2 @octokit/openapi-webhooks@12.1.0 @octokit/webhooks-examples@7.6.1)
(cd "$tmp" && npm pack --silent "${packages[@]}" >/dev/null)

# Extract only the files trimspec reads (the REST package unpacks to 400 MB).
extract() { mkdir -p "$tmp/$1" && tar -xzf "$tmp/$1.tgz" -C "$tmp/$1" "$2"; }
extract octokit-openapi-23.0.2 package/generated/api.github.com.json
extract octokit-openapi-webhooks-12.1.0 package/generated/api.github.com.json
extract octokit-webhooks-examples-7.6.1 package/api.github.com/index.json

mkdir -p "$tmp/out"
go run ./githubapp/simulator/internal/trimspec \
  -rest "$tmp/octokit-openapi-23.0.2/package/generated/api.github.com.json" \
  -webhooks "$tmp/octokit-openapi-webhooks-12.1.0/package/generated/api.github.com.json" \
  -examples "$tmp/octokit-webhooks-examples-7.6.1/package/api.github.com/index.json" \
  -out "$tmp/out"

status=0
for f in github-rest-openapi.json github-webhooks-openapi.json github-webhook-examples.json; do
  if ! cmp -s "$tmp/out/$f" "githubapp/simulator/testdata/$f"; then
    echo "conformance: githubapp/simulator/testdata/$f differs from what trimspec makes of the npm packages" >&2
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
echo "conformance: testdata matches ${packages[*]}"

go test -race -count=1 -run Conformance ./githubapp/simulator/
