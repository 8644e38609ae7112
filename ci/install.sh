#!/usr/bin/env bash
# Install rrstore into $RRSTORE_CI_PYTHON for the action's step (action.yml).
#   RRSTORE_CI_INSTALL: "self" (the action's own checkout, $RRSTORE_CI_SELF), "none" or "" (already
#   installed: only check it), or words for pip install (e.g. "rrstore==0.1.0", "--no-deps ./rrstore").
set -euo pipefail
python="${RRSTORE_CI_PYTHON:-python3}"
spec="${RRSTORE_CI_INSTALL:-none}"
case "$spec" in
  none) ;;
  self) "$python" -m pip install --disable-pip-version-check --quiet "${RRSTORE_CI_SELF:?the action path}" ;;
  *) read -ra words <<< "$spec"
     "$python" -m pip install --disable-pip-version-check --quiet "${words[@]}" ;;
esac
"$python" -m rrstore --version
