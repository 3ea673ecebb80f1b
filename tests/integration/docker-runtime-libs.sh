#!/usr/bin/env bash
# No Docker engine runs here, so check what the image depends on instead:
# every shared library that relayd and relayctl link directly must come from
# a package that docker/Dockerfile's runtime stage installs (or libc).
set -euo pipefail
df="$RELAY_SOURCE_DIR/docker/Dockerfile"
# Packages of the runtime stage: the apt-get line(s) after the last FROM.
runtime=$(awk '/^FROM/{buf=""} {buf=buf"\n"$0} END{print buf}' "$df" |
  sed -n '/apt-get install/,/rm -rf/p' | tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' |
  grep -vE '^(apt-get|install|no-install-recommends|rm|rf|useradd|mkdir|chown|system|uid|home-dir|relay|p)$' | sort -u)
echo "runtime packages: $(echo $runtime)"
bad=0 n=0
for bin in relayd relayctl; do
  for lib in $(readelf -d "$RELAY_BIN_DIR/$bin" | sed -nE 's/.*Shared library: \[(.*)\]/\1/p'); do
    case "$lib" in libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|ld-linux*|libasan.so.*|libubsan.so.*) continue ;; esac
    n=$((n + 1))
    pkg=$(dpkg -S "*/$lib" 2>/dev/null | head -1 | cut -d: -f1)
    if [ -z "$pkg" ]; then echo "$bin: $lib: no package provides it"; bad=1; continue; fi
    if ! grep -qx "$pkg" <<<"$runtime"; then
      echo "$bin needs $lib from $pkg, which docker/Dockerfile's runtime stage does not install"
      bad=1
    fi
  done
done
echo "$n libraries checked"
[ "$n" -ge 8 ] && [ $bad -eq 0 ]
