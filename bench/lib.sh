# Shared by the bench/ scripts: source it, never run it.

# median KEY: the median of KEY=VALUE fields over the lines on stdin, or NA.
median() { awk -v k="$1" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' | sort -g |
	awk '{ v[++n] = $1 } END { if (!n) print "NA"; else print (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'; }

# nginx_conf DIR LISTEN ROOT CONNECTIONS: writes DIR/nginx.conf, nginx as a
# boot file server is set up (sendfile, no access log, every temporary file
# under DIR, files served as octet streams), listening on LISTEN and serving
# ROOT.
nginx_conf() {
	local dir=$1 listen=$2 root=$3 conns=$4
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<CONF
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $conns; }
http {
	sendfile on;
	tcp_nopush on;
	keepalive_requests 100000;
	access_log off;
	client_body_temp_path $dir/body;
	proxy_temp_path $dir/proxy;
	fastcgi_temp_path $dir/fastcgi;
	uwsgi_temp_path $dir/uwsgi;
	scgi_temp_path $dir/scgi;
	default_type application/octet-stream;
	server {
		listen $listen;
		root $root;
	}
}
CONF
}
