#!/usr/bin/env bash
# Fill deploy/nginx.conf's placeholders from the environment and print the result.
#   RUN_DIR=/var/lib/switchboard-nginx HTTPS_PORT=443 HTTP_PORT=80 WEB_1=127.0.0.1:8001 \
#   WEB_2=127.0.0.1:8002 CERT=/etc/ssl/sb.pem KEY=/etc/ssl/sb.key STATIC_DIR=/srv/switchboard/static \
#   deploy/render-nginx.sh > /etc/nginx/sites-enabled/switchboard.conf
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
sed -e "s|__RUN_DIR__|${RUN_DIR:?}|g" \
    -e "s|__HTTPS_PORT__|${HTTPS_PORT:?}|g" \
    -e "s|__HTTP_PORT__|${HTTP_PORT:?}|g" \
    -e "s|__WEB_1__|${WEB_1:?}|g" \
    -e "s|__WEB_2__|${WEB_2:?}|g" \
    -e "s|__CERT__|${CERT:?}|g" \
    -e "s|__KEY__|${KEY:?}|g" \
    -e "s|__STATIC_DIR__|${STATIC_DIR:?}|g" \
    "$here/nginx.conf"
