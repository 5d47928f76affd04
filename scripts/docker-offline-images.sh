#!/usr/bin/env bash
# Creates, locally and without any container registry, the two base images that the
# project's Dockerfile names in its build arguments, so that the unchanged
#   docker compose up -d --build --wait
# works on a machine whose Docker engine cannot pull (CI here starts with no images).
#
#   runtime image (default debian:bookworm-slim):
#       a minimal Debian root filesystem made by debootstrap from Debian's packages,
#       trimmed like the official slim image, imported with `docker import`.
#   builder image (default rust:1.95-slim-bookworm):
#       the same kind of root filesystem plus gcc, libc6-dev and ca-certificates (what the
#       official rust slim image carries), with this host's Rust toolchain copied to the
#       official image's paths (/usr/local/rustup, /usr/local/cargo/bin on PATH), and the
#       host's local CA certificates (so cargo in `docker build` trusts what the host does).
#
# The image names and the Debian suite are read from the Dockerfile's `ARG ..._IMAGE=`
# defaults; the Debian mirror is read from this machine's apt configuration. An image
# that already exists is kept when it is a real one (no label of ours) or when it was
# made by this same script from the same toolchain; otherwise it is rebuilt.
# Needs root (debootstrap), docker and a Rust toolchain on the host. Idempotent.
#
# Usage: bash scripts/docker-offline-images.sh [--force]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dockerfile=${PAXOS_KV_DOCKERFILE:-$root/Dockerfile}
force=0
[[ ${1:-} == --force ]] && force=1

log() { printf '[offline-images %4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap needs it)"
command -v docker >/dev/null || die "docker not found"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed)"
[[ -f $dockerfile ]] || die "no Dockerfile at $dockerfile"

arg_default() { sed -n "s/^ARG $1=\(.*\)$/\1/p" "$dockerfile" | head -n1 | tr -d '[:space:]'; }
runtime_image=$(arg_default RUNTIME_IMAGE)
rust_image=$(arg_default RUST_IMAGE)
[[ -n $runtime_image && -n $rust_image ]] ||
	die "the Dockerfile must declare ARG RUNTIME_IMAGE=... and ARG RUST_IMAGE=..."

# debian:bookworm-slim -> bookworm; rust:1.95-slim-bookworm -> bookworm
suite_of() {
	local tag=${1##*:}
	tag=${tag%-slim}
	printf '%s\n' "${tag##*-}"
}
suite=$(suite_of "$runtime_image")
[[ $(suite_of "$rust_image") == "$suite" ]] ||
	die "builder ($rust_image) and runtime ($runtime_image) must name the same Debian suite"

if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap from Debian's packages"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The mirror: the site apt uses here for "$suite main", else for this host's own suite.
mirror_for() {
	apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT) $(IDENTIFIER)' 2>/dev/null |
		awk -v s="$1" '$2 == s && $3 == "main" && $4 == "Packages" { print $1; exit }'
}
mirror=$(mirror_for "$suite")
if [[ -z $mirror ]]; then
	host_suite=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
	mirror=$(mirror_for "$host_suite")
fi
[[ -n $mirror ]] || die "no Debian mirror for '$suite main' in this machine's apt configuration"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $keyring ]] || die "missing $keyring (apt-get install debian-archive-keyring)"

sysroot=$(rustc --print sysroot) || die "no Rust toolchain on the host"
rust_version=$(rustc --version | awk '{ print $2 }')
wanted_rust=${rust_image#*:}
wanted_rust=${wanted_rust%%-*}
case "$rust_version" in
"$wanted_rust" | "$wanted_rust".*) ;;
*) log "WARNING: $rust_image will hold the host's Rust $rust_version, not $wanted_rust" ;;
esac

# What identifies an image made by this script: its recipe and the toolchain it copies.
recipe=$(cat "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
label_key=org.paxos-kv.offline-base
runtime_id="$recipe-$suite"
rust_id="$recipe-$suite-rust-$rust_version"

# 0: build it; 1: keep it.
keep_existing() {
	local image=$1 id=$2 have
	docker image inspect "$image" >/dev/null 2>&1 || return 1
	have=$(docker image inspect -f "{{ index .Config.Labels \"$label_key\" }}" "$image" 2>/dev/null || true)
	if [[ -z $have || $have == '<no value>' ]]; then
		log "$image exists and is not ours: keeping it"
		return 0
	fi
	if [[ $have == "$id" && $force == 0 ]]; then
		log "$image is up to date ($id)"
		return 0
	fi
	return 1
}

# dpkg fsyncs every file it unpacks, and fsync is slow on this kind of disk: work in a
# tmpfs when one can be mounted (it can as root here), on disk otherwise.
work=$(mktemp -d /var/tmp/paxos-kv-offline-images.XXXXXX)
if mount -t tmpfs -o size=6g,mode=0755 paxos-kv-offline "$work" 2>/dev/null; then
	trap 'umount "$work"; rmdir "$work"' EXIT
else
	trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/debs"

# Like the official slim images: no docs, man pages or locales, now or after apt installs.
slim_down() {
	local fs=$1
	mkdir -p "$fs/etc/dpkg/dpkg.cfg.d"
	cat >"$fs/etc/dpkg/dpkg.cfg.d/docker-slim" <<-'EOF'
		path-exclude /usr/share/doc/*
		path-include /usr/share/doc/*/copyright
		path-exclude /usr/share/man/*
		path-exclude /usr/share/info/*
		path-exclude /usr/share/locale/*
		path-exclude /usr/share/lintian/*
	EOF
	find "$fs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
	find "$fs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
	rm -rf "$fs"/usr/share/{man,info,locale,lintian}/* "$fs"/var/lib/apt/lists/* \
		"$fs"/var/cache/apt/*.bin "$fs"/var/cache/apt/archives/*.deb "$fs"/var/log/* "$fs"/tmp/*
	# a container is not a machine to boot: no machine id, no policy-rc.d surprises
	: >"$fs/etc/machine-id"
}

# One debootstrap (slow: its dependency resolution is shell code) serves both images.
base=$work/base
bootstrap_base() {
	[[ -d $base ]] && return 0
	log "debootstrap $suite (minbase) from $mirror"
	debootstrap --variant=minbase --keyring="$keyring" --cache-dir="$work/debs" \
		"$suite" "$base" "$mirror" >"$work/debootstrap.log" 2>&1 || {
		tail -n 30 "$work/debootstrap.log" >&2
		die "debootstrap failed"
	}
	printf 'deb %s %s main\n' "$mirror" "$suite" >"$base/etc/apt/sources.list"
}

import_fs() {
	local fs=$1 image=$2 id=$3
	shift 3
	local old
	old=$(docker image inspect -f '{{ .Id }}' "$image" 2>/dev/null || true)
	log "docker import $image"
	tar --numeric-owner -C "$fs" -c . |
		docker import \
			-c "LABEL $label_key=$id" \
			-c 'LABEL org.opencontainers.image.description="made offline by scripts/docker-offline-images.sh"' \
			"$@" - "$image" >/dev/null
	# the image this one replaces, if nothing else uses it
	[[ -z $old ]] || docker image rm "$old" >/dev/null 2>&1 || true
	log "$image: $(docker image inspect -f '{{ .Size }}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}

std_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

if ! keep_existing "$runtime_image" "$runtime_id"; then
	bootstrap_base
	fs=$work/runtime
	cp -a "$base" "$fs"
	slim_down "$fs"
	import_fs "$fs" "$runtime_image" "$runtime_id" -c "ENV PATH=$std_path" -c 'CMD ["bash"]'
	rm -rf "$fs"
fi

if ! keep_existing "$rust_image" "$rust_id"; then
	bootstrap_base
	fs=$work/rust
	cp -a "$base" "$fs"
	# What the official rust slim image adds to Debian: a C toolchain for linking and for
	# crates that build C code, and CA certificates for cargo.
	log "apt-get install gcc libc6-dev ca-certificates into $fs"
	cp /etc/resolv.conf "$fs/etc/resolv.conf"
	# This machine reaches crates.io through a TLS-inspecting egress proxy whose CA the
	# host trusts as a local certificate (Debian's /usr/local/share/ca-certificates). The
	# builder trusts what the host trusts, or `cargo build` in the Dockerfile could not
	# download a crate here. ca-certificates' postinst folds them into the bundle.
	if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
		mkdir -p "$fs/usr/local/share/ca-certificates"
		cp /usr/local/share/ca-certificates/*.crt "$fs/usr/local/share/ca-certificates/"
	fi
	{
		chroot "$fs" apt-get update -q &&
			DEBIAN_FRONTEND=noninteractive chroot "$fs" \
				apt-get install -y -q --no-install-recommends gcc libc6-dev ca-certificates
	} >"$work/apt.log" 2>&1 || {
		tail -n 30 "$work/apt.log" >&2
		die "apt-get in the builder root filesystem failed"
	}
	: >"$fs/etc/resolv.conf"
	slim_down "$fs"
	# The official image keeps rustup's layout: toolchains under /usr/local/rustup and
	# cargo/rustc on PATH from /usr/local/cargo/bin. Copy only what compiles: no docs,
	# no rust-src.
	tc=$fs/usr/local/rustup/toolchains/$rust_version-x86_64-unknown-linux-gnu
	mkdir -p "$tc" "$fs/usr/local/cargo/bin"
	tar -C "$sysroot" -c --exclude=./share/doc --exclude=./lib/rustlib/src --exclude=./share/man . |
		tar -C "$tc" -x
	for b in "$tc"/bin/*; do
		ln -s "${b#"$fs"}" "$fs/usr/local/cargo/bin/$(basename "$b")"
	done
	import_fs "$fs" "$rust_image" "$rust_id" \
		-c "ENV RUSTUP_HOME=/usr/local/rustup" \
		-c "ENV CARGO_HOME=/usr/local/cargo" \
		-c "ENV RUST_VERSION=$rust_version" \
		-c "ENV PATH=/usr/local/cargo/bin:$std_path" \
		-c 'CMD ["bash"]'
	docker run --rm --network none "$rust_image" cargo --version >/dev/null ||
		die "the toolchain copied into $rust_image does not run there"
fi

log "ready: $runtime_image, $rust_image"
