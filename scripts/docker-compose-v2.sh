#!/usr/bin/env bash
# Makes `docker compose` (Compose v2, the CLI plugin) available, as the README and the
# compose test use it (`up --wait` needs v2). Does nothing when it already works.
#
# Debian bookworm only packages Compose v1 (`docker-compose`, no `--wait`); Debian trixie
# packages v2 as the same package name, one static Go binary that needs only libc6. This
# script downloads that package with apt, using a private apt state and the mirror of this
# machine's apt configuration (the system's sources and package database are untouched),
# and installs only the plugin binary at /usr/local/lib/docker/cli-plugins/docker-compose.
#
# Usage (as root): bash scripts/docker-compose-v2.sh
set -euo pipefail

log() { printf '[compose-v2] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if docker compose version 2>/dev/null | grep -q 'version v\?2\.'; then
	log "already there: $(docker compose version)"
	exit 0
fi
[[ $(id -u) == 0 ]] || die "must run as root"

suite=${PAXOS_KV_COMPOSE_SUITE:-trixie}
host_suite=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
mirror=$(apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT) $(IDENTIFIER)' 2>/dev/null |
	awk -v s="$host_suite" '$2 == s && $3 == "main" && $4 == "Packages" && !m { m = $1 } END { print m }')
[[ -n $mirror ]] || die "no Debian mirror for '$host_suite main' in this machine's apt configuration"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $keyring ]] || die "missing $keyring"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$suite" >"$work/sources.list"
apt_opts=(
	-o "Dir::Etc::SourceList=$work/sources.list"
	-o "Dir::Etc::SourceParts=$work/none"
	-o "Dir::State::Lists=$work/lists"
	-o "Dir::Cache=$work/cache"
	-o "APT::Sandbox::User=root"
)
log "fetching docker-compose from Debian $suite ($mirror)"
apt-get "${apt_opts[@]}" -qq update
# (The awk filters read their whole input: an early exit would kill the writer
# with SIGPIPE, which pipefail turns into a failed script.)
version=$(apt-cache "${apt_opts[@]}" show docker-compose 2>/dev/null |
	awk '/^Version: 2\./ && !v { v = $2 } END { print v }')
[[ -n $version ]] || die "Debian $suite has no docker-compose 2.x"
(cd "$work" && apt-get "${apt_opts[@]}" -qq download "docker-compose=$version")
dpkg-deb -x "$work"/docker-compose_*.deb "$work/pkg"
install -D -m 0755 "$work/pkg/usr/libexec/docker/cli-plugins/docker-compose" \
	/usr/local/lib/docker/cli-plugins/docker-compose
docker compose version >/dev/null || die "docker compose does not run after the install"
log "installed: $(docker compose version)"
