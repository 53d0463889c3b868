#!/usr/bin/env bash
# kdjax train on this machine with every local device.
set -euo pipefail
config=$1; workdir=$2; shift 2
exec kdjax train --config "$config" --workdir "$workdir" "$@"
