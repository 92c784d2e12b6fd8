#!/bin/sh
# The README's first command ends here: start a local receiver, fire an example event at it
# with a real rule, and show the execution log. Run from the repository root.
set -eu
PORT="${DEMO_PORT:-8765}"
export DEMO_PORT="$PORT"
export HOOKCTL_DB="${HOOKCTL_DB:-${TMPDIR:-/tmp}/hookctl-quickstart.db}"

hookctl validate -r examples/rules
hookctl listen --port "$PORT" --count 1 &
receiver=$!
# Wait until the receiver accepts connections (at most ~5 s).
i=0
until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 0.2)" "$PORT" 2>/dev/null; do
  i=$((i + 1)); [ "$i" -lt 50 ] || { echo "receiver did not start" >&2; exit 1; }; sleep 0.1
done
# The network guard refuses loopback and private addresses unless allowed: the receiver is local.
hookctl fire --force --allow-net 127.0.0.1 -r examples/rules/demo-local.yaml examples/events/ticket-created.json
wait "$receiver"
echo
hookctl log --limit 5
