#!/bin/sh
# The image's entrypoint:
#   web (the default)  'setup' unless MIGRATE_ON_START=0 (then 'wait' instead: a setup job
#                      elsewhere migrates), then the web server;
#   setup              wait for the database, migrate, then register the baked models (the
#                      registry rows in MODEL_MANIFEST) where the database lacks them: the
#                      one-shot job that compose and Kubernetes run beside the web servers;
#   wait               wait until the schema is current and the baked models are registered,
#                      then exit 0 (a Kubernetes init container; bounded: classifier-wait);
#   sender             'export_events --follow' (it puts the index templates first, retrying
#                      while Elasticsearch is away; /health/live on EXPORT_HEALTH_PORT);
#   anything else      a manage.py command ('export_events --follow', 'createsuperuser', ...).
#
#   WEB_CONCURRENCY / LITERT_NUM_THREADS
#                                 default from the container's CPU quota (see below).
set -eu

# CPUs this container may use: the cgroup quota (v2 cpu.max, v1 cfs files), else the CPUs online.
cpus() {
  quota="" period=""
  if [ -r /sys/fs/cgroup/cpu.max ]; then
    read -r quota period < /sys/fs/cgroup/cpu.max
  elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
    period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
  fi
  online=$(nproc)
  case "$quota" in
    "" | max | -1) echo "$online" ;;
    *) # round up: a 1.5-CPU limit gets two workers
      n=$(( (quota + period - 1) / period ))
      [ "$n" -gt "$online" ] && n=$online
      [ "$n" -lt 1 ] && n=1
      echo "$n" ;;
  esac
}

# The baked artifacts (BAKED_MODEL_STORE, read-only in the image) into MODEL_STORE, which may be
# a volume shared with other containers: each file the store lacks, under a temporary name first
# so that no reader sees half a file. Content-addressed names: an existing file is the same file.
models_sync() {
  baked="${BAKED_MODEL_STORE:-}" store="${MODEL_STORE:-}"
  [ -n "$baked" ] && [ -d "$baked" ] && [ -n "$store" ] || return 0
  [ "$(cd "$baked" && pwd -P)" = "$(mkdir -p "$store" && cd "$store" && pwd -P)" ] && return 0
  for file in "$baked"/*; do
    name=${file##*/}
    if [ ! -e "$store/$name" ]; then
      cp "$file" "$store/.$name.$$" && mv "$store/.$name.$$" "$store/$name"
    fi
  done
}

setup() {
  models_sync
  python /usr/local/bin/classifier-wait database
  python manage.py migrate --noinput -v0
  if [ -n "${MODEL_MANIFEST:-}" ] && [ -f "$MODEL_MANIFEST" ]; then
    python manage.py model_manifest import "$MODEL_MANIFEST"
  fi
}

if [ "${1:-web}" = "setup" ]; then
  setup
  exit 0
fi
if [ "${1:-web}" = "wait" ]; then
  exec python /usr/local/bin/classifier-wait setup
fi
if [ "${1:-web}" = "sender" ]; then
  exec python manage.py export_events --follow
fi
if [ "${1:-web}" = "web" ]; then
  n=$(cpus)
  # One worker per CPU (each holds its own model), and one thread per inference: with a worker
  # per CPU, a second interpreter thread only takes a CPU from another request (see
  # docs/performance.md). Request threads: WEB_THREADS (settings' default).
  export WEB_CONCURRENCY="${WEB_CONCURRENCY:-$n}"
  export LITERT_NUM_THREADS="${LITERT_NUM_THREADS:-1}"
  if [ "${MIGRATE_ON_START:-1}" = "1" ]; then setup; else models_sync; python /usr/local/bin/classifier-wait setup; fi
  echo "Starting ${WEB_SERVER:-granian}: $WEB_CONCURRENCY workers ($n CPUs)"
  exec python -m classifier_site.serve
fi
exec python manage.py "$@"
