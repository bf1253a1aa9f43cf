#!/bin/sh
# postgres.sh: a throwaway PostgreSQL cluster for tests.
#
#   scripts/postgres.sh [start] [DIR]   install Debian's postgresql if missing (as root),
#                                       initdb into DIR (default /tmp/rackboot-postgres),
#                                       start it and print its DSN on stdout
#   scripts/postgres.sh stop [DIR]      stop it (the files stay; start reuses them)
#   scripts/postgres.sh dsn [DIR]       print the DSN of a running cluster
#
# The cluster listens on 127.0.0.1 on a free port and on a unix socket in
# DIR. The DSN printed is the unix-socket one: it also works from inside a
# network namespace, where 127.0.0.1 is another host's loopback. The TCP
# DSN is in DIR/dsn-tcp. Authentication is "trust", fsync is off: a test
# cluster, never a production one (POSTGRES_DURABLE=1 at start keeps
# fsync and synchronous commit on). Running start twice prints the DSN of
# the cluster already running.
#
# As root, the server runs as the postgres user (initdb refuses root);
# otherwise as the caller, who then needs postgresql installed.
set -eu

cmd=start
case "${1:-}" in
start | stop | dsn) cmd=$1; shift ;;
-h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
dir=${1:-/tmp/rackboot-postgres}
case "$dir" in /*) ;; *) dir=$(pwd)/$dir ;; esac
data=$dir/data

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }

bindir() {
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
		if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
			echo "$d"
			return 0
		fi
	done
	if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
		dirname "$(command -v pg_ctl)"
		return 0
	fi
	return 1
}

install() {
	bindir >/dev/null && return 0
	[ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and this is not root: run 'sudo apt-get install -y postgresql' (or run this script as root)"
	command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and there is no apt-get: install PostgreSQL (initdb, pg_ctl) and run again"
	log "installing postgresql with apt-get"
	# The package's own cluster is not needed: tests run their own.
	mkdir -p /etc/postgresql-common/createcluster.d
	echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/rackboot-no-main.conf
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1; then
		apt-get update -qq >/dev/null 2>&1 || true
		apt-get install -y -qq --no-install-recommends postgresql >/dev/null || die "apt-get install postgresql failed"
	fi
	bindir >/dev/null || die "postgresql installed, but no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
}

# as runs a command as the cluster's owner.
as() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

running() { [ -f "$data/PG_VERSION" ] && as "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

dsn() {
	port=$(cat "$dir/port")
	echo "postgres://postgres@/postgres?host=$dir&port=$port&sslmode=disable"
}

port_free() {
	if command -v ss >/dev/null 2>&1; then
		! ss -Htln "sport = :$1" 2>/dev/null | grep -q .
	else
		! (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null
	fi
}

start() {
	install
	bin=$(bindir)
	# Test binaries of several packages start it at once: the second
	# waits for the first and then finds its cluster running (-o: the
	# server it starts must not hold the lock).
	if command -v flock >/dev/null 2>&1 && [ -z "${POSTGRES_SH_LOCKED:-}" ]; then
		mkdir -p "$(dirname "$dir")"
		POSTGRES_SH_LOCKED=1 exec flock -o "$dir.lock" "$0" start "$dir"
	fi
	if running; then
		dsn
		return 0
	fi
	mkdir -p "$dir"
	if [ "$(id -u)" = 0 ]; then
		id postgres >/dev/null 2>&1 || die "no postgres user: reinstall the postgresql package"
		chown postgres "$dir"
	fi
	chmod 700 "$dir"
	if [ ! -f "$data/PG_VERSION" ]; then
		rm -rf "$data"
		as "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
			as "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
			die "initdb failed: see $dir/initdb.log"
	fi
	# Throwaway settings: durability off, room for many test pools;
	# POSTGRES_DURABLE=1 keeps PostgreSQL's own (a benchmark's cluster).
	settings="-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400"
	[ -z "${POSTGRES_DURABLE:-}" ] || settings="-c max_connections=400"
	tries=0
	while :; do
		tries=$((tries + 1))
		# A port from the range Linux does not hand out to outgoing connections.
		port=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 12000))
		port_free "$port" || continue
		echo "$port" >"$dir/port"
		if as "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start \
			-o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir $settings" >/dev/null 2>&1; then
			break
		fi
		[ "$tries" -lt 5 ] || die "postgres did not start: see $dir/server.log"
		log "start on port $port failed, trying another"
	done
	echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable" >"$dir/dsn-tcp"
	dsn
}

stop() {
	bin=$(bindir) || exit 0
	if running; then
		as "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
	fi
}

case $cmd in
start) start ;;
stop) stop ;;
dsn)
	bin=$(bindir) || die "PostgreSQL is not installed"
	running || die "no cluster running in $dir"
	dsn
	;;
esac
