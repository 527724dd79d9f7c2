#!/bin/sh
# Strip the runtime stage's root file system down to what serving runs, before the final stage
# copies it onto an empty image (FROM scratch), so that nothing removed here survives in a lower
# layer. Removed:
#   - pip and setuptools from the virtual environment, and the wheels 'python -m venv' would
#     install them from: nothing installs packages into a running container;
#   - apt, dpkg, debconf and perl (which only they use). /var/lib/dpkg stays: it is data, the
#     package list that image scanners read to know what the image holds;
#   - every setuid and setgid file (su, mount, umount, passwd, chsh, chfn, newgrp, gpasswd,
#     unix_chkpwd, ...): the server runs as one unprivileged user and never changes identity;
#   - parts of wheels that CPU serving never loads: LiteRT's WebGPU accelerator, its NPU vendor
#     plugins and command-line tools, test suites, and gettext sources (.po; Django reads .mo);
#   - caches, logs, documentation.
# The container test classifies through the result (tests/deploy/test_container.py).
set -eu

/opt/venv/bin/python -m pip uninstall -q -y pip setuptools 2>/dev/null ||
  /opt/venv/bin/python -m pip uninstall -q -y pip
rm -rf /usr/share/python-wheels /usr/lib/python3.11/ensurepip

rm -rf /usr/bin/apt* /usr/lib/apt /etc/apt /var/lib/apt /var/cache/apt /usr/share/bug/apt \
  /usr/lib/x86_64-linux-gnu/libapt-* \
  /usr/bin/dpkg* /usr/sbin/dpkg* /usr/lib/dpkg /usr/share/dpkg /etc/dpkg \
  /usr/bin/debconf* /usr/share/debconf /var/cache/debconf /etc/debconf.conf \
  /usr/bin/perl* /usr/lib/x86_64-linux-gnu/perl-base /usr/share/perl5 /usr/lib/x86_64-linux-gnu/perl

find / -xdev -type f -perm /6000 -exec rm -f {} +

rm -rf /var/log/* /var/cache/* /tmp/* /var/tmp/* /root/.cache /usr/share/doc/* /usr/share/man/* \
  /usr/share/info/*
site=/opt/venv/lib/python3.11/site-packages
rm -rf "$site"/ai_edge_litert/libLiteRtWebGpuAccelerator.so "$site"/ai_edge_litert/vendors \
  "$site"/ai_edge_litert/tools/apply_plugin_main
find "$site" -name '*.po' -type f -delete
find /opt/venv -type d -name tests -path '*/site-packages/*/tests' -prune -exec rm -rf {} +
