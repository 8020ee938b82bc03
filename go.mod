module github.com/mcpgw/mcpgw

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/creack/pty v1.1.24
	github.com/goburrow/modbus v0.1.0
	github.com/gopacket/gopacket v1.7.7
	github.com/lmittmann/tint v1.2.1
	go.bug.st/serial v1.8.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/goburrow/serial v0.1.0 // indirect
	golang.org/x/net v0.55.0 // indirect
)
