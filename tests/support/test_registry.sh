#!/usr/bin/env bash
# A real registry (Debian's docker-registry, the distribution project) for
# tests, on 127.0.0.1 only:
#   test_registry.sh start DIR tls     HTTPS with a test CA and htpasswd auth
#   test_registry.sh start DIR plain   plain HTTP, anonymous
#   test_registry.sh stop DIR
# start prints the port; DIR gets ca.crt (the CA to trust), auth.json (the
# right credentials, as podman/skopeo login write them), wrong-auth.json,
# certs.d/ (for skopeo --dest-cert-dir) and storage/ (the registry's blobs).
set -euo pipefail
cmd=$1 dir=$2
case "$cmd" in
stop)
  if [ -f "$dir/pid" ]; then
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$(cat "$dir/pid")" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$(cat "$dir/pid")" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
  exit 0
  ;;
start) ;;
*) echo "usage: $0 start DIR tls|plain | stop DIR" >&2; exit 2 ;;
esac
mode=${3:-tls}
mkdir -p "$dir/storage" "$dir/certs.d"
user=ephemera-test password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
if [ "$mode" = tls ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ephemera test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/ext.cnf" -out "$dir/server.crt" 2>/dev/null
  cp "$dir/ca.crt" "$dir/certs.d/ca.crt"
  htpasswd -Bbn "$user" "$password" >"$dir/htpasswd" 2>/dev/null
fi
# A free port: the kernel picks one, the registry takes it right after.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{
  echo "version: 0.1"
  echo "log: {level: error, accesslog: {disabled: true}}"
  echo "storage: {filesystem: {rootdirectory: $dir/storage}, delete: {enabled: true}}"
  if [ "$mode" = tls ]; then
    echo "http: {addr: 127.0.0.1:$port, tls: {certificate: $dir/server.crt, key: $dir/server.key}}"
    echo "auth: {htpasswd: {realm: ephemera-test, path: $dir/htpasswd}}"
  else
    echo "http: {addr: 127.0.0.1:$port}"
  fi
} >"$dir/config.yml"
auth() { printf '{"auths":{"127.0.0.1:%s":{"auth":"%s"}}}\n' "$port" "$(printf '%s:%s' "$user" "$1" | base64 -w0)"; }
auth "$password" >"$dir/auth.json"
auth "not-$password" >"$dir/wrong-auth.json"
chmod 600 "$dir/auth.json" "$dir/wrong-auth.json"
echo "$user:$password" >"$dir/creds"
setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
echo $! >"$dir/pid"
scheme=https; [ "$mode" = tls ] || scheme=http
for _ in $(seq 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$dir/ca.crt" "$scheme://127.0.0.1:$port/v2/" || true)
  if [ "$code" = 200 ] || [ "$code" = 401 ]; then echo "$port"; exit 0; fi
  kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
  sleep 0.1
done
echo "the registry did not come up:" >&2
cat "$dir/registry.log" >&2
"$0" stop "$dir"
exit 1
