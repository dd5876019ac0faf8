# Shared by the benchmark scripts (source it after `cd` to the repository).

# A free TCP port on loopback (bound and released: another process could take
# it before the broker does, which on this loopback-only bench does not happen).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Wait (up to 10 s) until something listens on loopback PORT; otherwise say so
# and end the script.
wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1: the broker did not start" >&2
    exit 1
}
