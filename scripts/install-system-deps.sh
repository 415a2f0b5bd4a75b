#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (an etcd server, the reference
# IMAP server, mail clients, network tools, a browser for the console, promtool).
# With --bench, also the peers that `make bench` compares with (Postfix with
# smtp-source, Dovecot's LMTP and POP3 servers). Idempotent: does nothing when all
# of it is already present. Run as root (CI is root).
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

# file -> Debian package, for what has no command on PATH (Dovecot's protocol servers)
declare -A NEEDED_FILES=()

if [ "${1:-}" = "--bench" ]; then
  NEEDED[postfix]=postfix
  NEEDED[smtp-source]=postfix
  NEEDED_FILES[/usr/lib/dovecot/lmtp]=dovecot-lmtpd
  NEEDED_FILES[/usr/lib/dovecot/pop3]=dovecot-pop3d
fi

# perl module -> Debian package (swaks needs these for STARTTLS and implicit TLS)
declare -A PERL_MODULES=(
  [Net::SSLeay]=libnet-ssleay-perl
  [IO::Socket::SSL]=libio-socket-ssl-perl
)

missing=()
for cmd in "${!NEEDED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDED[$cmd]}")
done
for file in "${!NEEDED_FILES[@]}"; do
  [ -e "$file" ] || missing+=("${NEEDED_FILES[$file]}")
done
for module in "${!PERL_MODULES[@]}"; do
  perl -M"$module" -e 1 >/dev/null 2>&1 || missing+=("${PERL_MODULES[$module]}")
done

# One package may be needed for several commands.
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
fi

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
