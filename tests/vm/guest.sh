# Runs inside the arm64 VM (tests/vm/init starts it from the host's share, /host).
# Real drivers: vivid (a V4L2 capture device), v4l2loopback (a camera showing what the
# conveyor writes to it) and gpio-sim (a GPIO chip whose lines the test reads and pulls
# through sysfs). Each scenario runs the real aarch64 kensa-fw against them and lets
# `hil` play the conveyor and judge the pusher line. Exit status: 0 when every scenario
# behaved, and the control scenario (pusher wired to a line nobody reads) was caught.
set -u
cd /host
. ./vm.env            # DELAY_MS, SPACING_MS, SLACK_MS: chosen by run.sh
export HOME=/tmp
failed=""

modprobe vivid n_devs=1 node_types=0x1 input_types=0x1
modprobe v4l2loopback video_nr=1 card_label=kensa-loop exclusive_caps=1
modprobe gpio-sim
G=/sys/kernel/config/gpio-sim
mkdir $G/box $G/box/bank0
echo 8 > $G/box/bank0/num_lines
for l in 0:photo-eye 1:pusher 2:line-stop 3:run-permit; do
  mkdir $G/box/bank0/line${l%%:*}; echo ${l#*:} > $G/box/bank0/line${l%%:*}/name
done
echo 1 > $G/box/live
CHIP=$(cat $G/box/bank0/chip_name)
SYSFS=/sys/devices/platform/$(cat $G/box/dev_name)/$CHIP
echo "vm: vivid at /dev/video0, loopback at /dev/video1, gpio-sim chip /dev/$CHIP"

# config NAME DEVICE WIDTH HEIGHT PUSHER_LINE
config() {
  cat > /tmp/$1.toml <<TOML
[camera]
source = "v4l2"
device = "$2"
pixel_format = "YUYV"
width = $3
height = $4
[model]
path = "/host/model.kpkg"
[trigger]
mode = "gpio"
chip = "/dev/$CHIP"
line = 0
[belt]
delay_ms = $DELAY_MS
pulse_ms = 60.0
[reject]
kind = "gpio"
chip = "/dev/$CHIP"
line = $5
[fail_safe]
uninspected = "reject"
camera_timeout_ms = 1500.0
camera_retry_ms = 200.0
camera_retry_max_ms = 2000.0
line_stop = { kind = "gpio", chip = "/dev/$CHIP", line = 2 }
run_permit = { kind = "gpio", chip = "/dev/$CHIP", line = 3 }
TOML
}

# scenario NAME PARTS HIL-ARGS...: kensa-fw with /tmp/NAME.toml, hil as the conveyor.
scenario() {
  name=$1; parts=$2; shift 2
  n=$(echo "$parts" | tr ',' '\n' | wc -l)
  echo "vm: scenario $name: $parts"
  ./kensa-fw --config /tmp/$name.toml --parts "$n" > $name.fw.out 2> $name.fw.log &
  fw=$!
  # The banner comes once the model is loaded and the photo-eye line is requested.
  i=0
  until grep -q '^kensa-fw ' $name.fw.out 2>/dev/null; do
    i=$((i + 1)); sleep 1
    if [ $i -gt 300 ] || ! kill -0 $fw 2>/dev/null; then
      echo "vm: kensa-fw did not start:"; cat $name.fw.log; return 3
    fi
  done
  echo "vm: kensa-fw ready after ${i} s: $(head -1 $name.fw.out)"
  ./hil --gpio-sysfs "$SYSFS" --trigger 0 --pusher 1 --line-stop 2 --run-permit 3 --parts "$parts" \
    --delay-ms "$DELAY_MS" --spacing-ms "$SPACING_MS" --slack-ms "$SLACK_MS" --out $name.json "$@" 2> $name.hil.log
  rc=$?
  # A daemon still waiting for parts it will not get is stopped; it must exit by itself on SIGTERM.
  kill -TERM $fw 2>/dev/null; wait $fw
  cat $name.hil.log
  echo "vm: kensa-fw said:"; sed 's/^/  /' $name.fw.out; tail -5 $name.fw.log | sed 's/^/  log: /'
  return $rc
}

config decisions /dev/video1 256 256 1
scenario decisions pass,push,pass,push --permit on,on,on,on --loopback /dev/video1 --size 256 || failed="$failed decisions"

config unplug /dev/video0 640 480 1
# The camera is found gone at part 2's capture: from then on the run permit is off.
scenario unplug any,any,push,push --permit on,on,any,off --unplug /dev/video0 --unplug-before 2 || failed="$failed unplug"
# Both users are gone now, so the driver itself can go, as with a camera that stays unplugged.
if rmmod vivid; then echo "vm: vivid removed"; else echo "vm: vivid still loaded: $(grep '^vivid ' /proc/modules)"; fi

# Control: the daemon's pusher is wired to line 5, which nobody reads. The judge must fail.
config control /dev/video1 256 256 5
scenario control pass,push --permit on,on --loopback /dev/video1 --size 256
if [ $? = 1 ] && grep -q 'part 1: no pusher pulse' control.hil.log; then
  echo "vm: control scenario failed as it must (pusher not driven)"
else
  failed="$failed control(undriven-pusher-not-caught)"
fi

if [ -n "$failed" ]; then echo "vm: FAILED:$failed"; exit 1; fi
echo "vm: all scenarios passed"
