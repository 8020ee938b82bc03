// Package specframes loads the Modbus specification's example frames kept
// in testdata/spec-frames.txt, for golden tests and fuzz seeds.
package specframes

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Pair is one example transaction, as PDUs.
type Pair struct {
	Name      string
	Req, Resp []byte
}

// Path is the file's location in the repository.
func Path() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "spec-frames.txt")
}

// Load reads the file: "name | request hex | response hex" per line,
// blank lines and # comments ignored, spaces in hex ignored.
func Load() ([]Pair, error) {
	f, err := os.Open(Path())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var pairs []Pair
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, "|")
		if len(parts) != 3 {
			return nil, fmt.Errorf("%s:%d: want name | request | response", Path(), n)
		}
		req, err1 := decodeHex(parts[1])
		resp, err2 := decodeHex(parts[2])
		if err1 != nil || err2 != nil || len(req) == 0 || len(resp) == 0 {
			return nil, fmt.Errorf("%s:%d: bad hex", Path(), n)
		}
		pairs = append(pairs, Pair{strings.TrimSpace(parts[0]), req, resp})
	}
	return pairs, sc.Err()
}

// MustLoad is Load for tests: it panics on error.
func MustLoad() []Pair {
	p, err := Load()
	if err != nil {
		panic(err)
	}
	return p
}

// decodeHex decodes hex with any white space between the digits.
func decodeHex(s string) ([]byte, error) {
	return hex.DecodeString(strings.Join(strings.Fields(s), ""))
}

// MustHex decodes hex written as in the file ("01 03 006B 0003"), for
// frames written out in tests; it panics on a bad literal.
func MustHex(s string) []byte {
	b, err := decodeHex(s)
	if err != nil {
		panic(fmt.Sprintf("specframes: bad hex %q: %v", s, err))
	}
	return b
}
