# Shared by the scripts: install Debian packages that are missing.
# shellcheck shell=bash

# need_pkg COMMAND PACKAGE: installs PACKAGE with apt-get when COMMAND is not on PATH.
need_pkg() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  # Daemons such as haproxy live in /usr/sbin, which a non-root PATH may lack.
  [ -x "/usr/sbin/$cmd" ] && return 0
  echo "installing $pkg (for $cmd)…" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
}

# need_py_module MODULE PACKAGE: installs the Debian PACKAGE when Debian's python3
# (/usr/bin/python3, which the tests use) cannot import MODULE.
need_py_module() {
  local module=$1 pkg=$2
  /usr/bin/python3 -c "import $module" >/dev/null 2>&1 && return 0
  echo "installing $pkg (python module $module)…" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
}
