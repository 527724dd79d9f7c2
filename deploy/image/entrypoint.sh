#!/bin/sh
# The image's entrypoint. 'web' (the default command) prepares and starts gunicorn; anything
# else runs as a manage.py command (e.g. 'migrate', 'export_events --follow', 'createsuperuser').
#
#   MIGRATE_ON_START=1 (default)  run 'migrate' before gunicorn; set 0 where a separate job
#                                 migrates (the Kubernetes migrations Job does).
#   MODEL_MANIFEST                the baked models' registry rows, imported when absent.
#   WEB_CONCURRENCY / GUNICORN_THREADS / LITERT_NUM_THREADS
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

if [ "${1:-web}" = "web" ]; then
  n=$(cpus)
  # One worker per CPU (each holds its own model), four request threads each (they mostly wait
  # on I/O); one inference uses two threads unless the container has a single CPU.
  export WEB_CONCURRENCY="${WEB_CONCURRENCY:-$n}"
  export GUNICORN_THREADS="${GUNICORN_THREADS:-4}"
  if [ "$n" -eq 1 ]; then export LITERT_NUM_THREADS="${LITERT_NUM_THREADS:-1}"; fi
  if [ "${MIGRATE_ON_START:-1}" = "1" ]; then
    python manage.py migrate --noinput -v0
  fi
  if [ -n "${MODEL_MANIFEST:-}" ] && [ -f "$MODEL_MANIFEST" ]; then
    python manage.py model_manifest import "$MODEL_MANIFEST"
  fi
  echo "Starting gunicorn: $WEB_CONCURRENCY workers x $GUNICORN_THREADS threads ($n CPUs)"
  exec gunicorn --config python:classifier_site.gunicorn classifier_site.wsgi
fi
exec python manage.py "$@"
