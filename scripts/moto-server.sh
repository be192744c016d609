#!/usr/bin/env bash
# A local S3 (moto) for trying the S3 publish target by hand:
#
#   eval "$(scripts/moto-server.sh start)"   # prints the export line to eval
#   ...                                      # AWS_ENDPOINT_URL etc. point at it
#   scripts/moto-server.sh stop
#
# start    installs moto[server] into the venv ${IMGBUILD_VENV:-~/.cache/imgbuild-venv}
#          if needed, starts moto_server on 127.0.0.1 on a free port (or $MOTO_PORT)
#          in the background, waits until it answers, and prints
#          `export AWS_ENDPOINT_URL=... AWS_ACCESS_KEY_ID=testing ...` on stdout.
#          Already running: prints the line for the running server.
#          MOTO_BUCKETS="a b": also creates these buckets (if missing).
# stop     stops it (pid file) and removes the state.
# install  only installs moto.
# status   prints the export line if it is running, exit 1 otherwise.
#
# The credentials are moto's dummy ones. State (pid, port, log) lives in
# ${MOTO_STATE_DIR:-/tmp/imgbuild-moto-$UID}. The Rust tests in
# crates/imgbuild-aws start their own moto_server and do not need this.
set -euo pipefail

venv=${IMGBUILD_VENV:-$HOME/.cache/imgbuild-venv}
# Conditional writes (If-None-Match / If-Match on PutObject and
# CompleteMultipartUpload) need a recent moto; this one is tested.
moto_spec=${MOTO_SPEC:-moto[server]==5.2.5}
state_dir=${MOTO_STATE_DIR:-/tmp/imgbuild-moto-$(id -u)}
pid_file=$state_dir/moto.pid
port_file=$state_dir/moto.port
log_file=$state_dir/moto.log
region=${AWS_DEFAULT_REGION:-eu-west-1}

say() { echo "moto-server: $*" >&2; }

install_moto() {
    local marker=$venv/.moto-installed
    if [[ -x $venv/bin/moto_server && -f $marker && $(cat "$marker") == "$moto_spec" ]]; then
        return
    fi
    if [[ ! -x $venv/bin/python ]]; then
        say "creating the venv $venv"
        python3 -m venv "$venv"
    fi
    say "installing $moto_spec into $venv"
    "$venv/bin/pip" install -q "$moto_spec" >&2
    echo "$moto_spec" > "$marker"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

answers() {
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1).read()' \
        "http://127.0.0.1:$1/" >/dev/null 2>&1
}

running_pid() {
    [[ -f $pid_file ]] || return 1
    local pid
    pid=$(cat "$pid_file")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

print_env() {
    echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=$region"
}

# The buckets named in $MOTO_BUCKETS, in $region (moto's dummy credentials).
create_buckets() {
    [[ -n ${MOTO_BUCKETS:-} ]] || return 0
    # shellcheck disable=SC2086
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "$venv/bin/python" -c '
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name=sys.argv[2])
have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
for name in sys.argv[3:]:
    if name not in have:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": sys.argv[2]})
        print("moto-server: created bucket " + name, file=sys.stderr)
' "http://127.0.0.1:$1" "$region" $MOTO_BUCKETS
}

start() {
    install_moto
    mkdir -p "$state_dir"
    if running_pid >/dev/null; then
        say "already running (pid $(cat "$pid_file"))"
        create_buckets "$(cat "$port_file")"
        print_env "$(cat "$port_file")"
        return
    fi
    local port=${MOTO_PORT:-$(free_port)}
    # setsid: its own session, so it outlives the calling shell's job control.
    setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log_file" 2>&1 < /dev/null &
    local pid=$!
    echo "$pid" > "$pid_file"
    echo "$port" > "$port_file"
    for _ in $(seq 1 150); do
        if answers "$port"; then
            say "listening on 127.0.0.1:$port (pid $pid, log $log_file)"
            create_buckets "$port"
            print_env "$port"
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            say "moto_server exited; its log:"
            cat "$log_file" >&2
            rm -f "$pid_file" "$port_file"
            exit 1
        fi
        sleep 0.2
    done
    say "moto_server did not answer on port $port within 30 s; stopping it"
    stop
    exit 1
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        say "not running"
        rm -f "$pid_file" "$port_file"
        return
    fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pid_file" "$port_file"
    say "stopped (pid $pid)"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    install) install_moto ;;
    status)
        if running_pid >/dev/null; then print_env "$(cat "$port_file")"; else say "not running"; exit 1; fi
        ;;
    *)
        echo "usage: $0 start|stop|install|status" >&2
        exit 2
        ;;
esac
