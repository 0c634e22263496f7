#!/bin/sh
# setup-node.sh installs the node-opcua test server's npm packages
# (internal/testpeer/opcuaserver, pinned by its package-lock.json) with
# `npm ci`. It is idempotent: nothing happens when node_modules is already
# in step with the lock file. Needs node and npm (node 20 works; node-opcua
# 2.186 asks for 22 but runs) and access to the npm registry the first time.
set -eu

dir="$(cd "$(dirname "$0")/.." && pwd)/internal/testpeer/opcuaserver"
lock="$dir/package-lock.json"
stamp="$dir/node_modules/.package-lock.json" # written by npm on every install

if ! command -v npm >/dev/null 2>&1; then
	echo "setup-node: npm not found; install node and npm (Debian: apt-get install nodejs npm)" >&2
	exit 1
fi

if [ -f "$stamp" ] && [ -f "$dir/node_modules/node-opcua/package.json" ] && [ ! "$lock" -nt "$stamp" ]; then
	echo "setup-node: $dir/node_modules is up to date"
	exit 0
fi

echo "setup-node: npm ci in $dir"
cd "$dir"
npm ci --no-audit --no-fund --loglevel=error
