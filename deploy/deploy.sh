#!/usr/bin/env bash
# Deploy one commit of blogapi on this host, and roll back if it does not come up.
#
#   deploy/deploy.sh COMMIT
#
# Fetches COMMIT into the checkout at DEPLOY_APP_DIR, checks it out (detached), installs its
# requirements into the app's venv, applies its migrations, restarts the service, and waits
# until /health reports COMMIT and /health/ready answers 200. If any of that fails, it rolls
# back: downgrades the schema to the previous commit's Alembic head (with the new code, which
# holds the new migrations' downgrades, still checked out), checks the previous commit out
# again, reinstalls, restarts, waits for it, and exits 1 (2 if the rollback failed too).
# Running it again for the commit already serving changes nothing.
#
# CI runs the copy from the commit being deployed (`ssh HOST bash -s -- COMMIT < deploy.sh`),
# so a host whose checkout predates this script or changes it gets the new one.
#
# Settings (environment variables):
#   DEPLOY_APP_DIR      the git checkout the service runs from    /srv/blogapi
#   DEPLOY_VENV         its virtual environment                    $DEPLOY_APP_DIR/.venv
#   DEPLOY_REMOTE       the remote to fetch from                   origin
#   DEPLOY_ENV_FILE     the app's settings, read for the migrations  /etc/blogapi/blogapi.env
#   DEPLOY_RESTART      the command that restarts the service      sudo systemctl restart blogapi
#   DEPLOY_HEALTH_URL   where the service answers                  http://127.0.0.1:8000
#   DEPLOY_TIMEOUT      seconds to wait for it after a restart     60

main() {
  set -euo pipefail
  shopt -s inherit_errexit
  exec </dev/null

  local target=${1:-}
  if [ $# -ne 1 ] || [ -z "$target" ]; then
    echo "usage: $0 COMMIT" >&2
    exit 64
  fi
  app_dir=${DEPLOY_APP_DIR:-/srv/blogapi}
  venv=${DEPLOY_VENV:-$app_dir/.venv}
  remote=${DEPLOY_REMOTE:-origin}
  env_file=${DEPLOY_ENV_FILE:-/etc/blogapi/blogapi.env}
  restart=${DEPLOY_RESTART:-sudo systemctl restart blogapi}
  health_url=${DEPLOY_HEALTH_URL:-http://127.0.0.1:8000}
  timeout=${DEPLOY_TIMEOUT:-60}

  cd "$app_dir"
  if [ -r "$env_file" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
  fi

  step "fetch $target from $remote"
  run git fetch --quiet "$remote" "$target"
  target=$(git rev-parse --verify "FETCH_HEAD^{commit}")
  local previous
  previous=$(git rev-parse --verify HEAD)
  echo "deploying $target (serving: $previous)"

  if [ "$previous" = "$target" ] && serving "$target"; then
    echo "== $target is checked out, serving and ready: nothing to do"
    exit 0
  fi

  step "find the previous commit's Alembic head, for a rollback"
  local previous_head
  previous_head=$(alembic_head "$previous")
  echo "previous head: $previous_head"

  if release "$target"; then
    echo "== deployed $target"
    exit 0
  fi
  if [ "$previous" = "$target" ]; then
    echo "== $target failed and there is no earlier commit to roll back to" >&2
    exit 2
  fi
  echo "== $target failed: rolling back to $previous" >&2
  if rollback "$previous" "$previous_head"; then
    echo "== rolled back to $previous" >&2
    exit 1
  fi
  echo "== the rollback to $previous failed too: see the service's log" >&2
  exit 2
}

step() {
  echo "== [${SECONDS}s] $*"
}

run() {
  echo "+ $*"
  "$@"
}

# The release: checkout, install, migrate, restart, wait. Any failing step fails it.
release() {
  local commit=$1
  step "check out $commit" && run git checkout --quiet --detach "$commit" &&
    install &&
    step "apply the migrations" && run "$venv/bin/python" -m alembic upgrade head &&
    restart_and_wait "$commit"
}

rollback() {
  local commit=$1 head=$2
  step "downgrade the schema to $head (with the failed release's migrations)" &&
    run "$venv/bin/python" -m alembic downgrade "$head" &&
    step "check out $commit" && run git checkout --quiet --detach "$commit" &&
    install &&
    restart_and_wait "$commit"
}

install() {
  step "install the requirements into $venv" &&
    run "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r requirements.txt
}

restart_and_wait() {
  local commit=$1
  step "restart: $restart" && run sh -c "$restart" &&
    step "wait up to ${timeout}s for $health_url to serve $commit, ready" &&
    wait_for "$commit"
}

wait_for() {
  local commit=$1 deadline=$((SECONDS + timeout))
  until serving "$commit"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "not serving $commit after ${timeout}s: $(curl --silent --max-time 2 \
        "$health_url/health" || echo 'no answer')" >&2
      return 1
    fi
    sleep 1
  done
  echo "serving $commit, ready"
}

# /health names the commit and /health/ready answers 200.
serving() {
  local commit=$1 liveness
  liveness=$(curl --silent --fail --max-time 2 "$health_url/health") || return 1
  [[ $liveness == *"\"commit\":\"$commit\""* ]] &&
    curl --silent --fail --max-time 5 --output /dev/null "$health_url/health/ready"
}

# The Alembic head of a commit's migrations, read from its tree without checking it out.
alembic_head() {
  local commit=$1 tree heads
  tree=$(mktemp -d)
  git archive "$commit" alembic.ini migrations | tar -x -C "$tree"
  heads=$("$venv/bin/python" -m alembic -c "$tree/alembic.ini" heads | awk '{print $1}')
  rm -rf "$tree"
  if [ -z "$heads" ] || [ "$(echo "$heads" | wc -l)" -ne 1 ]; then
    echo "cannot tell $commit's single Alembic head (found: ${heads:-none})" >&2
    return 1
  fi
  echo "$heads"
}

main "$@"
