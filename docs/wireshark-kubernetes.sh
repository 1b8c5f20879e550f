#!/usr/bin/env bash
# Makes docs/wireshark-kubernetes.png (the README's picture of a Kubernetes-mode file): the
# segment the privileged Kubernetes-mode test records (pods shop/web-1, shop/web-2 and the
# hostNetwork pod shop/web-host, targeted through an in-process Kubernetes API server),
# opened in Wireshark with an interface column and network names resolved (the pods' names
# come from the file's Name Resolution Blocks). Run as root.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd); KEEP=$(mktemp -d /tmp/k8sshot.XXXX)
trap 'rm -rf "$KEEP"' EXIT
(cd $ROOT && PODCAP_KEEP_SEGMENTS=$KEEP PODCAP_REQUIRE_PRIVILEGED=1 \
  cargo test -q -p podcap-sensor --test kubernetes kubernetes_mode_captures_the_targeted_pods)
SEG=$(ls $KEEP/*.pcapng | head -1)
# The column's title is as wide as its names: Wireshark sizes a column by its title.
export WS_PREFERENCES='gui.column.format: "No.", "%m", "namespace/pod/interface", "%Cus:frame.interface_name:0:R", "Source", "%s", "Destination", "%d", "Info", "%i"'
bash $ROOT/docs/wireshark-shot.sh $SEG $ROOT/docs/wireshark-kubernetes.png -Y 'icmp.type == 8' -o nameres.network_name:TRUE
