#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (an etcd server, the reference
# mail servers and mail clients, a browser for the console, promtool). Idempotent: does nothing when all
# commands are already present. Run as root (CI is root).
set -euo pipefail

# command -> Debian package
declare -A NEEDED=(
  [etcd]=etcd-server
  [etcdctl]=etcd-client
  [swaks]=swaks
  [fetchmail]=fetchmail
  [dovecot]=dovecot-imapd
  [mbsync]=isync
  [offlineimap]=offlineimap3
  [ip]=iproute2
  [arping]=iputils-arping
  # The console's browser test (headless Chromium driven by Selenium) and promtool,
  # which checks the alert rules of docs/monitoring.md.
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [promtool]=prometheus
)

# perl module -> Debian package (swaks needs these for STARTTLS and implicit TLS)
declare -A PERL_MODULES=(
  [Net::SSLeay]=libnet-ssleay-perl
  [IO::Socket::SSL]=libio-socket-ssl-perl
)

missing=()
for cmd in "${!NEEDED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDED[$cmd]}")
done
for module in "${!PERL_MODULES[@]}"; do
  perl -M"$module" -e 1 >/dev/null 2>&1 || missing+=("${PERL_MODULES[$module]}")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "clustermail: the tests need these Debian packages: ${missing[*]}" >&2
  echo "clustermail: install them as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "clustermail: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# postfix asks a question at install time; answer it before it is asked.
echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections 2>/dev/null || true
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
