#!/usr/bin/env bash
# Install everything image-updater's demo and tests need, idempotently.
#   - Debian packages: git, the CNCF distribution registry, Prometheus, skopeo (bench),
#     htpasswd (auth tests), iproute2 (bench netns), gnupg and openssh-client (signed
#     commits). Not from Debian, only checked: kubectl (deploy-kit tests; Debian's is too
#     old) and helm (optional; Debian has no package).
#   - a virtualenv in .venv with the project, its test and dev (linters) extras, all pinned.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in git:git docker-registry:docker-registry prometheus:prometheus promtool:prometheus \
            skopeo:skopeo htpasswd:apache2-utils ip:iproute2 tc:iproute2 \
            gpg:gnupg gpgconf:gnupg ssh-keygen:openssh-client chromium:chromium; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then need_apt+=(python3-venv); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need_apt[@]}" | sort -u) >/dev/null
fi

# kubectl renders deploy/ in the deploy-kit tests. Debian bookworm's kubernetes-client (1.20,
# kustomize v2) cannot: it rejects the kustomizations' "labels:" field. So say what to install.
if ! kubectl kustomize deploy/base >/dev/null 2>&1; then
  echo "setup: warning: kubectl is missing or too old to render deploy/ (needs >= 1.21);" \
       "the deploy-kit tests will skip (fail with CI=true). Install it from" \
       "https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/" >&2
fi

# The distribution registry package does not need its system service; tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml requirements/test.lock | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages (pinned by requirements/test.lock)"
  # pip's output goes to a log (shown only on failure) so the test run stays readable
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -c requirements/test.lock -e '.[test,dev]'; } \
       >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    echo "setup: pip install failed (log above)" >&2
    exit 1
  fi
  rm -f .venv/.installed-*; touch "$stamp"
fi
