#!/bin/sh
# Remove what install.sh added: the runtime handler from containerd's config (the file exactly
# as it was before the install), containerd restarted, vouchd's service stopped, the binaries.
# Containers vouchd runs are stopped with it. The same environment as install.sh.
set -eu

host=${VOUCH_HOST_ROOT:-/host}
artifacts=${VOUCH_ARTIFACTS:-/opt/vouch/bin}
config=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
systemd=${VOUCH_HOST_SYSTEMD:-true}
bin="$host/usr/local/bin"

if [ -e "$host$config" ]; then
    "$artifacts/vouch" uninstall containerd --config "$host$config"
fi
if [ "$systemd" = true ]; then
    nsenter -t 1 -m -u -i -n -p -- systemctl restart containerd.service
    nsenter -t 1 -m -u -i -n -p -- systemctl disable --now vouchd.service || true
    rm -f "$host/etc/systemd/system/vouchd.service"
    nsenter -t 1 -m -u -i -n -p -- systemctl daemon-reload
fi
for b in containerd-shim-vouch-v2 vouch vouchd; do
    rm -f "$bin/$b"
done
echo "vouch uninstall: uninstalled" >&2
