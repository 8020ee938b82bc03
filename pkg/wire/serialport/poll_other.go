//go:build !linux

package serialport

// openPolled opens path with go.bug.st/serial, whose reads wait in
// select(2); only Linux gets a descriptor in the runtime's poller.
func openPolled(path string, s Settings) (Port, error) {
	return openConfigured(path, s)
}
