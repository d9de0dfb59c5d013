#!/bin/sh
# Install vouch on this node from the payload image: vouchd, vouch and containerd-shim-vouch-v2
# into the host's /usr/local/bin, vouchd as a systemd service, the runtime handler `vouch` in
# containerd's config (`vouch install containerd`: idempotent, the rest of the file byte for
# byte), containerd restarted; then the node's TEE and whether vouchd's own evidence verifies
# here, for the node's labels (vouch/tee, vouch/attested).
#
# Environment: VOUCH_HOST_ROOT (the host's root as mounted, default /host), VOUCH_ARTIFACTS
# (the binaries, default /opt/vouch/bin), CONTAINERD_CONFIG (default /etc/containerd/config.toml,
# on the host), VOUCH_HOST_SYSTEMD (false: do not touch the host's systemd, for tests),
# VOUCH_STATUS_DIR (where `tee` and `attested` are written, default: not written).
set -eu

host=${VOUCH_HOST_ROOT:-/host}
artifacts=${VOUCH_ARTIFACTS:-/opt/vouch/bin}
scripts=$(dirname "$0")
config=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
systemd=${VOUCH_HOST_SYSTEMD:-true}
bin="$host/usr/local/bin"

say() { echo "vouch install: $*" >&2; }

mkdir -p "$bin" "$(dirname "$host$config")"
for b in vouchd vouch containerd-shim-vouch-v2; do
    [ -x "$artifacts/$b" ] || { say "$artifacts/$b is missing from the payload"; exit 1; }
    # Replaced by rename: a running shim or vouchd keeps its own copy.
    cp "$artifacts/$b" "$bin/.$b.new"
    chmod 0755 "$bin/.$b.new"
    mv -f "$bin/.$b.new" "$bin/$b"
done
"$artifacts/vouch" install containerd --config "$host$config"

if [ "$systemd" = true ]; then
    mkdir -p "$host/etc/systemd/system"
    cp "$scripts/vouchd.service" "$host/etc/systemd/system/vouchd.service"
    nsenter -t 1 -m -u -i -n -p -- systemctl daemon-reload
    nsenter -t 1 -m -u -i -n -p -- systemctl enable --now vouchd.service
    nsenter -t 1 -m -u -i -n -p -- systemctl restart containerd.service
fi

if [ -n "${VOUCH_STATUS_DIR:-}" ]; then
    socket=${VOUCH_SOCKET:-$host/run/vouch/vouchd.sock}
    tee=none
    attested=false
    i=0
    while [ $i -lt 30 ] && ! "$artifacts/vouch" --socket "$socket" info >/dev/null 2>&1; do
        sleep 1
        i=$((i + 1))
    done
    if info=$("$artifacts/vouch" --socket "$socket" info --json 2>/dev/null); then
        tee=$(printf '%s' "$info" | sed -n 's/.*"tee": *"\([a-z0-9-]*\)".*/\1/p')
        nonce=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        ev=$(mktemp)
        # Verified here as a relying party would (no --allow-sim): a node without hardware
        # evidence is never labelled attested.
        if "$artifacts/vouch" --socket "$socket" attest --nonce "$nonce" -o "$ev" >/dev/null 2>&1 \
            && "$artifacts/vouch" verify "$ev" --nonce "$nonce" >/dev/null 2>&1; then
            attested=true
        fi
        rm -f "$ev"
    fi
    mkdir -p "$VOUCH_STATUS_DIR"
    printf '%s' "${tee:-none}" > "$VOUCH_STATUS_DIR/tee"
    printf '%s' "$attested" > "$VOUCH_STATUS_DIR/attested"
    say "tee ${tee:-none}, attested $attested"
fi
say "installed (runtime handler vouch)"
