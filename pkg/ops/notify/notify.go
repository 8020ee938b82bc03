// Package notify tells systemd how the service is doing: READY=1 once
// it listens, STOPPING=1 when it shuts down, WATCHDOG=1 while it lives,
// over the datagram socket systemd names in $NOTIFY_SOCKET (sd_notify(3)).
// Without that variable (not started by systemd, or not Type=notify) it
// does nothing.
package notify

import (
	"net"
	"os"
	"strconv"
	"time"
)

// Notify sends state ("READY=1", "STOPPING=1", "WATCHDOG=1", ...) to
// systemd. It reports false, with no error, when there is no socket.
func Notify(state string) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	if path[0] == '@' { // an abstract socket
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false, err
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}

// WatchdogInterval returns how often to send WATCHDOG=1: half the
// watchdog timeout systemd set for this process ($WATCHDOG_USEC, and
// $WATCHDOG_PID if set must be ours), or 0 if there is no watchdog.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}
