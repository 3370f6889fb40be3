#!/bin/sh
# SPDX-License-Identifier: MIT
# install-sample.sh: installs the sample dps.conf into sysconfdir unless one exists (meson install script)
set -eu
src=$1
dir=${DESTDIR:-}$2
if [ -e "$dir/dps.conf" ]; then
        echo "Keeping the existing $dir/dps.conf"
        exit 0
fi
install -d -m 0755 "$dir"
install -m 0644 "$src" "$dir/dps.conf"
