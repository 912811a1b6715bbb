# The scenario, run by both VMs: role a starts the container, sends it to
# b, then waits for it to come back; role b receives it, shows its log,
# and sends it back. Markers (HARNESS: ...) and the container's log go to
# the console for the harness to check. In crun mode (/harness/mode) crun
# starts the container from /bundle, A sends it with --runtime crun, and
# the heartbeat is in the container's own /run (a tmpfs).
role=$1
peer=$2
port=7700
mode=$(cat /harness/mode)
send() {
    # The receiver may not listen yet: a refused send leaves the container
    # running here, so try again. $1: extra arguments (--runtime crun).
    for i in $(seq 1 60); do
        if migrate send $1 box "$peer:$port" --json > /tmp/stats.json 2> /tmp/send.err; then
            echo "HARNESS: uptime $(cut -d' ' -f1 /proc/uptime) s when its send completed"
            echo "HARNESS: stats $(tr -d '\n' < /tmp/stats.json)"
            return 0
        fi
        sleep 1
    done
    echo "HARNESS: send failed: $(cat /tmp/send.err)"
    return 1
}
receive() {
    migrate recv --listen "0.0.0.0:$port" --once --json > /tmp/recv.json 2> /tmp/recv.err
    echo "HARNESS: recv exit $? $(tr -d '\n' < /tmp/recv.json)"
    echo "HARNESS: uptime $(cut -d' ' -f1 /proc/uptime) s when its receive completed"
    sleep 2
    echo "HARNESS: status $(migrate ps --json)"
    show_log
}
show_log() {
    echo "HARNESS: log begin"
    if [ "$mode" = crun ]; then
        migrate exec box -- cat /run/beats
    else
        migrate logs box
    fi
    echo "HARNESS: log end"
}
case $role in
a)
    if [ "$mode" = crun ]; then
        echo "HARNESS: $(crun --version | head -1)"
        crun run -d --bundle /bundle box < /dev/null > /dev/null 2> /tmp/crun.err || {
            echo "HARNESS: crun run failed: $(cat /tmp/crun.err)"
            exit 1
        }
        sleep 2
        send "--runtime crun" || exit 1
        echo "HARNESS: crun after send: $(crun list -q | tr '\n' ' ')"
    else
        migrate run -d --name box -- $(cat /harness/command) > /dev/null || exit 1
        sleep 2
        send || exit 1
    fi
    echo "HARNESS: after send: $(migrate ps --json | tr -d '\n ')"
    receive
    ;;
b)
    receive
    send || exit 1
    echo "HARNESS: after send back: $(migrate ps --json | tr -d '\n ')"
    ;;
esac
