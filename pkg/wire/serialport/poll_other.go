//go:build !linux

package serialport

import "errors"

// openPolled opens path with go.bug.st/serial, whose reads wait in
// select(2); only Linux gets a descriptor in the runtime's poller.
func openPolled(path string, s Settings) (Port, error) {
	if s.RS485 != nil {
		return nil, errRS485(path, errors.New("RS-485 mode is set through Linux's TIOCSRS485, and this system is not Linux"))
	}
	return openConfigured(path, s)
}
