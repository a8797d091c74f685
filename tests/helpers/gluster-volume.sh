# SPDX-License-Identifier: BSD-3-Clause
# A one-brick GlusterFS volume for a test (source it after tests/lib.sh):
#
#   gluster_up            glusterd and a started volume; sets GVOL (its name),
#                         GURL (gluster://127.0.0.1/$GVOL), GBRICK (the brick
#                         directory, local), GSOCK (glusterd's unix socket),
#                         GLUSTERD_PID; skips (77) when glusterd cannot run
#   gluster_brick_pid     the brick process's pid
#   gluster_down          stops the volume and glusterd by pid (an EXIT trap
#                         calls it too)
#
# glusterd keeps its state, pid files and sockets under $PWD/gluster (a
# volfile of our own: working-directory, run-directory, glusterd-sockfile).
# GSOCK is glusterd-sockfile, the unix socket that serves both the CLI and
# the volfile requests of gfapi clients (/run/glusterd.socket normally).
# glusterd's -S socket is another thing (a brick-ops listener without the
# getspec program: libgfapi's glfs_init waits forever on it), so none is
# given.
# Its TCP port cannot move: bricks fetch their volfile from port 24007 on
# the host name they were created with, so one volume exists at a time on
# the machine; a lock file serialises the tests that use one.  The brick
# logs under /var/log/glusterfs/bricks (glusterd's choice): removed at the
# end.  The first connection to a new glusterd waits for its start-up (about
# 10 s): everything waits for conditions, never for a time.

GLUSTER_DIR=$PWD/gluster
GLUSTERD_PID=
GLUSTER_BP=
GVOL=
GSOCK=$GLUSTER_DIR/run/glusterd.socket

gcli() {
    gluster --mode=script --glusterd-sock="$GSOCK" \
        --log-file="$GLUSTER_DIR/log/cli.log" "$@"
}

gluster_brick_pid() {
    local f
    for f in "$GLUSTER_DIR"/run/vols/"$GVOL"/*.pid; do
        [ -s "$f" ] && cat "$f" && return 0
    done
    return 1
}

gluster_down() {
    [ -n "$GLUSTERD_PID" ] || return 0
    local bp
    bp=$(gluster_brick_pid 2>/dev/null) || bp=
    timeout 60 gluster --mode=script --glusterd-sock="$GSOCK" \
        --log-file="$GLUSTER_DIR/log/cli.log" volume stop "$GVOL" force >/dev/null 2>&1 || true
    if [ -n "$bp" ] && kill -0 "$bp" 2>/dev/null; then
        kill "$bp" 2>/dev/null || true
    fi
    kill "$GLUSTERD_PID" 2>/dev/null || true
    GLUSTER_BP=$bp
    poll_for 30 gluster_gone || true
    kill -0 "$GLUSTERD_PID" 2>/dev/null && kill -9 "$GLUSTERD_PID" 2>/dev/null
    [ -n "$bp" ] && kill -0 "$bp" 2>/dev/null && kill -9 "$bp" 2>/dev/null
    rm -f "/var/log/glusterfs/bricks/$(echo "$GBRICK" | sed 's|^/||; s|/|-|g').log"
    GLUSTERD_PID=
}

gluster_gone() {
    ! kill -0 "$GLUSTERD_PID" 2>/dev/null && { [ -z "$GLUSTER_BP" ] || ! kill -0 "$GLUSTER_BP" 2>/dev/null; }
}

# the CLI answers once glusterd has finished starting
gluster_answers() {
    kill -0 "$GLUSTERD_PID" 2>/dev/null ||
        skip "glusterd cannot start here: $(tail -n 1 "$GLUSTER_DIR/log/glusterd.log" 2>/dev/null)"
    gcli volume info >/dev/null 2>&1
}

gluster_volume_online() {
    gcli --xml volume status "$GVOL" 2>/dev/null | grep -q '<status>1</status>'
}

gluster_up() {
    command -v glusterd >/dev/null && command -v gluster >/dev/null ||
        skip "glusterd is not installed"
    local host
    host=$(hostname)
    getent hosts "$host" >/dev/null || skip "host name $host does not resolve (bricks need it)"
    exec 8>/tmp/vdisk-gluster.lock
    flock 8
    if (exec 3<>/dev/tcp/127.0.0.1/24007) 2>/dev/null; then
        skip "port 24007 is taken by a glusterd that is not ours"
    fi
    mkdir -p "$GLUSTER_DIR/wd" "$GLUSTER_DIR/run" "$GLUSTER_DIR/log" "$PWD/gbrick"
    GBRICK=$PWD/gbrick
    GVOL=vdt$$
    cat >"$GLUSTER_DIR/glusterd.vol" <<EOF
volume management
    type mgmt/glusterd
    option working-directory $GLUSTER_DIR/wd
    option run-directory $GLUSTER_DIR/run
    option glusterd-sockfile $GSOCK
    option transport-type socket
    option transport.socket.listen-port 24007
    option transport.socket.bind-address 127.0.0.1
    option ping-timeout 0
    option event-threads 1
    option base-port 49700
    option max-port 49899
end-volume
EOF
    glusterd -N -f "$GLUSTER_DIR/glusterd.vol" -p "$GLUSTER_DIR/glusterd.pid" \
        -l "$GLUSTER_DIR/log/glusterd.log" >"$GLUSTER_DIR/log/stdout" 2>&1 &
    GLUSTERD_PID=$!
    trap gluster_down EXIT
    poll_for 120 gluster_answers || skip "glusterd did not answer"
    gcli volume create "$GVOL" transport tcp "$host:$GBRICK" force >"$GLUSTER_DIR/log/create" 2>&1 ||
        skip "cannot create a volume here: $(cat "$GLUSTER_DIR/log/create")"
    gcli volume start "$GVOL" >"$GLUSTER_DIR/log/start" 2>&1 ||
        skip "cannot start a volume here: $(cat "$GLUSTER_DIR/log/start")"
    wait_for gluster_volume_online
    GURL=gluster://127.0.0.1/$GVOL
    export GURL GVOL GBRICK GSOCK
}
