package serialport

import "errors"

// Pty is a virtual serial line: a pseudo-terminal pair. Windows has none;
// give the simulator and the gateway a pair of virtual COM ports instead
// (com0com, for example).
type Pty struct {
	Path   string
	Device Port
}

// NewPty fails on Windows, which has no pseudo-terminals.
func NewPty() (*Pty, error) {
	return nil, errors.New("virtual serial lines are pseudo-terminals, which Windows does not have: run the simulator on a pair of virtual COM ports (com0com) and give the gateway the other one")
}

// Close does nothing.
func (p *Pty) Close() error { return nil }
