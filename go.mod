module github.com/mcpgw/mcpgw

go 1.26.8

require github.com/goburrow/modbus v0.1.0

require github.com/goburrow/serial v0.1.0 // indirect
