# shellcheck shell=bash
# Sourced by scripts that need Debian packages: installs only what dpkg does not already list,
# so a rerun on a provisioned machine (CI's, a developer's) touches nothing.
#
#   missing_debs PKG...   prints the packages that are not installed, one a line
#   install_debs PKG...   apt-get installs them (no recommends), quietly
#   ensure_debs PKG...    installs the missing ones, if any

missing_debs() {
  local p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || echo "$p"
  done
}

install_debs() {
  [ $# -gt 0 ] || return 0
  echo "installing Debian packages: $*" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

ensure_debs() {
  local missing
  missing=$(missing_debs "$@")
  # shellcheck disable=SC2086 # package names have no spaces
  [ -z "$missing" ] || install_debs $missing
}
