# Shared by the libvirt end-to-end tests (tests/libvirt/e2e, vsock-e2e):
# sourced, not run.  The caller sets me, here, top, build, timeout and work
# (a fresh directory with run/ in it) first.
#
#   ok/not_ok/check     count and print results ("ok - ...", "not ok - ...")
#   say                 a line of the test's own
#   start_vmqd          a private dbus-daemon at $work/bus and vmqd on it
#                       (state $work/state, runtime $work/run, libvirt
#                       qemu:///system); sets bus, dbus_pid and vmqd_pid
#   stop_vmqd           ends both
#   vmqctl ARGS         vmqctl on that bus
#   wait_log DOM RE     waits for a line matching RE in $work/DOM.log
#   logval DOM RE KEY   the value of KEY= on the first line matching RE there

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $*"; }
check() {
        d=$1; shift
        if "$@"; then ok "$d"; else not_ok "$d"; fi
}
say() { echo "$me: $*"; }

bus="unix:path=$work/bus"
dbus_pid="" vmqd_pid=""
vmqctl() { "$build/vmqctl/vmqctl" --bus="$bus" "$@"; }

start_vmqd() {
        cat >"$work/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>$bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/> <allow own="*"/>
    <allow send_destination="*"/> <allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
        if [ -z "$dbus_pid" ]; then
                dbus-daemon --config-file="$work/bus.conf" --nofork --nopidfile >/dev/null 2>&1 &
                dbus_pid=$!
                i=0; while [ ! -S "$work/bus" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        fi
        "$build/vmqd/vmqd" --bus="$bus" --state-dir="$work/state" \
                --image-dir="$build/guest/images" --runtime-dir="$work/run" \
                --libvirt-uri=qemu:///system >>"$work/vmqd.log" 2>&1 &
        vmqd_pid=$!
        i=0; until vmqctl --quiet list >/dev/null 2>&1; do
                i=$((i + 1)); [ $i -gt 100 ] && { cat "$work/vmqd.log"; return 1; }; sleep 0.1
        done
}

stop_vmqd() {
        [ -n "$vmqd_pid" ] && kill "$vmqd_pid" 2>/dev/null && wait "$vmqd_pid" 2>/dev/null
        vmqd_pid=""
}

stop_bus() {
        [ -n "$dbus_pid" ] && kill "$dbus_pid" 2>/dev/null && wait "$dbus_pid" 2>/dev/null
        dbus_pid=""
}

wait_log() {
        i=0
        while ! grep -qa "$2" "$work/$1.log" 2>/dev/null; do
                i=$((i + 1))
                if [ $i -gt $((timeout * 10)) ]; then
                        say "timed out waiting for '$2' from $1"; return 1
                fi
                sleep 0.1
        done
}

logval() { sed -n "s/.*$2.*$3=\([^ ]*\).*/\1/p" "$work/$1.log" | head -n 1; }
