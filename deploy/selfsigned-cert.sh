#!/usr/bin/env bash
# A throw-away self-signed certificate for localhost (tests, local TLS): never commit its key.
#   deploy/selfsigned-cert.sh DIR   → DIR/cert.pem, DIR/key.pem
set -euo pipefail
dir="${1:?usage: selfsigned-cert.sh DIR}"
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
chmod 600 "$dir/key.pem"
