// Package sproto is the Sparkplug B payload's protobuf messages,
// generated from sparkplug_b.proto with protoc (Debian's
// protobuf-compiler) and protoc-gen-go on PATH, at the version of
// google.golang.org/protobuf in go.mod:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go generate ./pkg/north/sparkplug/sproto
package sproto

//go:generate protoc --go_out=. --go_opt=paths=source_relative sparkplug_b.proto
