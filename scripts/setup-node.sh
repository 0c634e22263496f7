#!/bin/sh
# setup-node.sh installs the npm packages of the tests' Node peers with
# `npm ci`, each pinned by its own package-lock.json:
#   internal/testpeer/opcuaserver   node-opcua, the independent OPC UA server
#   internal/testpeer/sparkplughost Eclipse Tahu's sparkplug-payload and mqtt,
#                                   the independent Sparkplug host application
# It is idempotent: nothing happens for a project whose node_modules is
# already in step with its lock file. Needs node and npm (node 20 works;
# node-opcua 2.186 asks for 22 but runs) and access to the npm registry the
# first time.
set -eu

root="$(cd "$(dirname "$0")/.." && pwd)/internal/testpeer"

if ! command -v npm >/dev/null 2>&1; then
	echo "setup-node: npm not found; install node and npm (Debian: apt-get install nodejs npm)" >&2
	exit 1
fi

# project directory, then a package whose package.json proves the install
for spec in "opcuaserver node-opcua" "sparkplughost sparkplug-payload"; do
	set -- $spec
	dir="$root/$1"
	lock="$dir/package-lock.json"
	stamp="$dir/node_modules/.package-lock.json" # written by npm on every install
	if [ -f "$stamp" ] && [ -f "$dir/node_modules/$2/package.json" ] && [ ! "$lock" -nt "$stamp" ]; then
		echo "setup-node: $dir/node_modules is up to date"
		continue
	fi
	echo "setup-node: npm ci in $dir"
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done
