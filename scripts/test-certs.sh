#!/usr/bin/env bash
# Makes a throwaway CA and a server certificate for 127.0.0.1 / localhost in DIR, for the TLS
# tests (Redis and PostgreSQL): DIR/ca.crt, DIR/server.crt, DIR/server.key. Needs openssl.
# Usage: scripts/test-certs.sh DIR
set -euo pipefail
dir=${1:?usage: test-certs.sh DIR}
command -v openssl >/dev/null || { echo "test-certs: openssl is missing: apt-get install openssl" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"
quiet() { "$@" 2>/dev/null || { echo "test-certs: failed: $*" >&2; exit 1; }; }
quiet openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=leasehold-test-ca \
  -keyout ca.key -out ca.crt
quiet openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >server.ext
quiet openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -extfile server.ext -out server.crt
chmod 600 server.key
rm -f server.csr server.ext ca.srl
