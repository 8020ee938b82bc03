package rtu

import (
	"bytes"
	"errors"
	"testing"

	"github.com/goburrow/modbus"
	"github.com/mcpgw/mcpgw/internal/specframes"
	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// specPairs are the example transactions of the Modbus Application
// Protocol, one per function code, from testdata/spec-frames.txt.
var specPairs = specframes.MustLoad()

func TestLengthsOfSpecFrames(t *testing.T) {
	if len(specPairs) < 20 {
		t.Fatalf("%d spec frames loaded", len(specPairs))
	}
	for _, tt := range specPairs {
		t.Run(tt.Name, func(t *testing.T) {
			req := AppendADU(nil, 0x11, tt.Req)
			resp := AppendADU(nil, 0x11, tt.Resp)
			if pdu.IsReturnQueryData(tt.Req) {
				// Data of any length: the frame ends at silence, and
				// the answer is as long as the request.
				checkSilence(t, "request", RequestLen, req)
				checkSilence(t, "response", ResponseLen, resp)
			} else {
				checkLen(t, "request", RequestLen, req)
				checkLen(t, "response", ResponseLen, resp)
			}
			e := ExpectAnswer(0x11, tt.Req)
			checkLen(t, "the answer expected", e.Len, resp)
		})
	}
}

// checkSilence checks that adu's length is not predicted, and that Scan
// ends it only at silence.
func checkSilence(t *testing.T, what string, fn LenFunc, adu []byte) {
	t.Helper()
	if _, err := fn(adu); !errors.Is(err, ErrUnpredictable) {
		t.Fatalf("%s % X: %v, want ErrUnpredictable", what, adu, err)
	}
	if _, used, err := Scan(adu, fn, false); !errors.Is(err, ErrNeedMore) || used != 0 {
		t.Fatalf("%s % X ended before silence: %d, %v", what, adu, used, err)
	}
	if frame, used, err := Scan(adu, fn, true); err != nil || used != len(adu) || !bytes.Equal(frame, adu) {
		t.Fatalf("%s % X at silence: % X, %d, %v", what, adu, frame, used, err)
	}
}

// TestDiagnosticsLengths: FC 08's requests are 8 bytes for every
// sub-function but return query data, whose request and echo may be of
// any length; an echo longer than 8 bytes is one whole answer.
func TestDiagnosticsLengths(t *testing.T) {
	long := specframes.MustHex("08 0000 0102 0304 0506 0708")
	req := AppendADU(nil, 1, long)
	checkSilence(t, "long return query data", RequestLen, req)
	e := ExpectAnswer(1, long)
	checkLen(t, "its echo", e.Len, req) // the answer is the request
	if !Matches(long, long) || Matches(long, long[:5]) {
		t.Fatal("return query data: the echo must be the whole request")
	}
	exc := AppendADU(nil, 1, []byte{0x88, 0x01})
	checkLen(t, "an exception to it", e.Len, exc)
	for _, sub := range []string{"0001 0000", "0004 0000", "000A 0000", "000B 0000"} {
		p := specframes.MustHex("08 " + sub)
		checkLen(t, "sub-function "+sub, RequestLen, AppendADU(nil, 1, p))
		e := ExpectAnswer(1, p)
		answer := specframes.MustHex("08 " + sub[:4] + " 1234")
		checkLen(t, "the answer to "+sub, e.Len, AppendADU(nil, 1, answer))
		if !Matches(p, answer) || Matches(p, specframes.MustHex("08 000C 1234")) {
			t.Errorf("sub-function %s: Matches", sub)
		}
	}
	// A sub-function other than 0 with more data is an 8-byte request
	// followed by other bytes, never one frame.
	hidden := append(AppendADU(nil, 1, specframes.MustHex("08 0004 0000")), AppendADU(nil, 1, specframes.MustHex("06 0001 0003"))...)
	if n, err := RequestLen(hidden); err != nil || n != 8 {
		t.Fatalf("FC 08 sub-function 4 with a frame behind it: %d, %v", n, err)
	}
}

// checkLen feeds adu byte by byte: every prefix must ask for more (and for
// no more than the whole), and the whole must give its exact length.
func checkLen(t *testing.T, what string, fn LenFunc, adu []byte) {
	t.Helper()
	for i := range len(adu) {
		n, err := fn(adu[:i])
		if err == nil {
			if n != len(adu) {
				t.Fatalf("%s prefix %d: length %d, want %d", what, i, n, len(adu))
			}
			continue
		}
		if !errors.Is(err, ErrNeedMore) || n <= i || n > len(adu) {
			t.Fatalf("%s prefix %d of % X: n=%d err=%v", what, i, adu, n, err)
		}
	}
	if n, err := fn(adu); err != nil || n != len(adu) {
		t.Fatalf("%s % X: n=%d err=%v, want %d", what, adu, n, err, len(adu))
	}
	frame, used, err := Scan(adu, fn, false)
	if err != nil || used != len(adu) || !bytes.Equal(frame, adu) {
		t.Fatalf("Scan(%s) = % X, %d, %v", what, frame, used, err)
	}
}

func TestSerialLineSpecFrame(t *testing.T) {
	// MODBUS.md and Modbus over Serial Line: 01 03 50 00 00 18 goes out with CRC 54 C0.
	got := AppendADU(nil, 0x01, specframes.MustHex("03 5000 0018"))
	if want := specframes.MustHex("01 03 50 00 00 18 54 C0"); !bytes.Equal(got, want) {
		t.Fatalf("AppendADU = % X, want % X", got, want)
	}
}

func TestAppendADUMatchesGoburrow(t *testing.T) {
	for _, tt := range specPairs {
		p := tt.Req
		h := modbus.NewRTUClientHandler("unused")
		h.SlaveId = 0x11
		want, err := h.Encode(&modbus.ProtocolDataUnit{FunctionCode: p[0], Data: p[1:]})
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendADU(nil, 0x11, p); !bytes.Equal(got, want) {
			t.Errorf("%s: ours % X, goburrow % X", tt.Name, got, want)
		}
	}
}

func TestUnpredictableEndsAtSilence(t *testing.T) {
	// A user-defined function code (0x41) and a MEI type other than 0x0E.
	for _, p := range []string{"41 01 02 03", "2B 0D 00 01"} {
		adu := AppendADU(nil, 0x05, specframes.MustHex(p))
		for _, fn := range []LenFunc{RequestLen, ResponseLen} {
			if _, err := fn(adu); !errors.Is(err, ErrUnpredictable) {
				t.Fatalf("% X: err %v, want ErrUnpredictable", adu, err)
			}
			if _, used, err := Scan(adu, fn, false); !errors.Is(err, ErrNeedMore) || used != 0 {
				t.Fatalf("Scan before silence: %d %v", used, err)
			}
			frame, used, err := Scan(adu, fn, true)
			if err != nil || used != len(adu) || !bytes.Equal(frame, adu) {
				t.Fatalf("Scan at silence: % X %d %v", frame, used, err)
			}
		}
	}
}

func TestScanErrors(t *testing.T) {
	good := AppendADU(nil, 0x01, specframes.MustHex("03 0000 000A"))
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 0xFF
	tests := []struct {
		name   string
		buf    []byte
		fn     LenFunc
		silent bool
		used   int
		err    error
	}{
		{"empty", nil, RequestLen, true, 0, ErrNeedMore},
		{"partial, line busy", good[:5], RequestLen, false, 0, ErrNeedMore},
		{"partial, line silent", good[:5], RequestLen, true, 1, ErrShortFrame},
		{"bad CRC", bad, RequestLen, false, 1, ErrBadCRC},
		{"byte count past 256", specframes.MustHex("01 03 FF"), ResponseLen, false, 1, ErrBadLength},
		{"FIFO count past 256", specframes.MustHex("01 18 01 00"), ResponseLen, false, 1, ErrBadLength},
		{"unpredictable too short", specframes.MustHex("01 41 00"), RequestLen, true, 1, ErrShortFrame},
		{"answer from another unit", AppendADU(nil, 0x02, specframes.MustHex("03 02 1234")), (&Expect{Unit: 1, FC: 3}).Len, false, 1, ErrUnexpected},
		{"answer to another function", AppendADU(nil, 0x01, specframes.MustHex("04 02 1234")), (&Expect{Unit: 1, FC: 3}).Len, false, 1, ErrUnexpected},
		{"unpredictable bad CRC", specframes.MustHex("01 41 00 00 00"), RequestLen, true, 1, ErrBadCRC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame, used, err := Scan(tt.buf, tt.fn, tt.silent)
			if !errors.Is(err, tt.err) || used != tt.used || frame != nil {
				t.Fatalf("Scan = % X, %d, %v; want nil, %d, %v", frame, used, err, tt.used, tt.err)
			}
		})
	}
}

// TestResyncAfterNoise drops bytes one at a time, as the bus does, until
// a good frame appears behind noise and a broken frame.
func TestResyncAfterNoise(t *testing.T) {
	good := AppendADU(nil, 0x01, specframes.MustHex("03 02 1234"))
	broken := bytes.Clone(good)
	broken[3] ^= 0x40
	buf := append(append([]byte{0xFF, 0x00, 0x55}, broken...), good...)
	dropped := 0
	want := &Expect{Unit: 0x01, FC: 0x03}
	for {
		frame, used, err := Scan(buf, want.Len, false)
		if err == nil {
			if !bytes.Equal(frame, good) {
				t.Fatalf("resync found % X, want % X", frame, good)
			}
			break
		}
		if used == 0 {
			t.Fatalf("stalled with %d bytes left: %v", len(buf), err)
		}
		dropped += used
		buf = buf[used:]
	}
	if dropped != 3+len(broken) {
		t.Fatalf("dropped %d bytes, want %d", dropped, 3+len(broken))
	}
}

func FuzzScan(f *testing.F) {
	for _, tt := range specPairs {
		f.Add(AppendADU(nil, 1, tt.Req), true)
		f.Add(AppendADU(nil, 1, tt.Resp), false)
	}
	f.Fuzz(func(t *testing.T, buf []byte, silent bool) {
		for _, fn := range []LenFunc{RequestLen, ResponseLen} {
			n, err := fn(buf)
			if err == nil && (n < 4 || n > MaxADU) {
				t.Fatalf("length %d out of range for % X", n, buf)
			}
			if errors.Is(err, ErrNeedMore) && (n <= len(buf) || n > MaxADU) {
				t.Fatalf("need-more length %d with %d bytes", n, len(buf))
			}
			frame, used, err := Scan(buf, fn, silent)
			switch {
			case err == nil:
				if used != len(frame) || used < MinADU || used > MaxADU {
					t.Fatalf("frame of %d bytes, used %d", len(frame), used)
				}
				// Decoding then encoding gives the same bytes.
				if re := AppendADU(nil, frame[0], frame[1:len(frame)-2]); !bytes.Equal(re, frame) {
					t.Fatalf("re-encode % X != % X", re, frame)
				}
			case errors.Is(err, ErrNeedMore):
				if used != 0 {
					t.Fatal("need-more consumed bytes")
				}
			default:
				if used != 1 {
					t.Fatalf("error %v consumed %d", err, used)
				}
			}
		}
	})
}

func BenchmarkScanResponse(b *testing.B) {
	frame := AppendADU(nil, 1, append([]byte{0x03, 250}, make([]byte, 250)...))
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if _, _, err := Scan(frame, ResponseLen, false); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMatches(t *testing.T) {
	for _, tt := range specPairs {
		if !Matches(tt.Req, tt.Resp) {
			t.Errorf("%s: the spec's answer does not match its request", tt.Name)
		}
	}
	wrong := []struct{ name, req, resp string }{
		{"read 3 registers, 2 came", "03 006B 0003", "03 04 022B 0000"},
		{"read 19 coils, 2 bytes came", "01 0013 0013", "01 02 CD 6B"},
		{"write register 2, echo of register 3", "06 0001 0003", "06 0002 0003"},
		{"write 2 registers, echo says 3", "10 0001 0002 04 000A 0102", "10 0001 0003"},
		{"exception with a trailing byte", "03 0000 0001", "83 02 00"},
	}
	for _, tt := range wrong {
		if Matches(specframes.MustHex(tt.req), specframes.MustHex(tt.resp)) {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}
