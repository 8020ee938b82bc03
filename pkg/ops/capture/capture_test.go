package capture

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sample() []Record {
	t0 := time.Date(2026, 11, 21, 6, 0, 0, 123456000, time.UTC)
	return []Record{
		{Time: t0, Dir: TX, Data: []byte{0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0A}},
		{Time: t0.Add(4711 * time.Microsecond), Dir: RX, Data: []byte{0x01, 0x03, 0x02, 0x03, 0xE8, 0xB8, 0xFA}},
		{Time: t0.Add(30 * time.Millisecond), Dir: RX, Data: []byte{0xFF, 0x00}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, ext := range []string{".pcap", ".txt"} {
		t.Run(ext, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "line"+ext)
			w, err := Create(path, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range sample() {
				if err := w.Write(&r); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want := sample()
			if len(got) != len(want) {
				t.Fatalf("%d records, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i].Dir != want[i].Dir || !bytes.Equal(got[i].Data, want[i].Data) {
					t.Errorf("record %d: %+v, want %+v", i, got[i], want[i])
				}
				// pcap keeps absolute time to the microsecond; text keeps time since the first record.
				gotD, wantD := got[i].Time.Sub(got[0].Time), want[i].Time.Sub(want[0].Time)
				if gotD.Round(time.Microsecond) != wantD {
					t.Errorf("record %d at +%v, want +%v", i, gotD, wantD)
				}
			}
			if ext == ".pcap" && !got[0].Time.Equal(want[0].Time) {
				t.Errorf("pcap time %v, want %v", got[0].Time, want[0].Time)
			}
		})
	}
}

func TestTextFormat(t *testing.T) {
	var buf bytes.Buffer
	w, _ := newTextWriter(&buf)
	for _, r := range sample() {
		w.Write(&r)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		"0.000000 tx 0 01 03 00 00 00 01 84 0a",
		"0.004711 rx 4711 01 03 02 03 e8 b8 fa",
		"0.030000 rx 25289 ff 00",
	}
	for i, w := range want {
		if lines[i+1] != w {
			t.Errorf("line %d: %q, want %q", i+1, lines[i+1], w)
		}
	}
}

func TestSocat(t *testing.T) {
	// socat 1.7.4 -x -v, from a real session (microseconds in a nine-digit field).
	dump := "> 2026/11/21 06:00:42.000302711  length=8 from=0 to=7\n" +
		" 01 03 00 00 00 01 84 0a                          ........\n--\n" +
		"< 2026/11/21 06:00:42.000302994  length=7 from=0 to=6\n" +
		" 01 03 02 00 01 79 84                             .....y.\n--\n"
	recs, err := Read([]byte(dump))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Dir != TX || recs[1].Dir != RX || len(recs[1].Data) != 7 {
		t.Fatalf("%+v", recs)
	}
	if d := recs[1].Time.Sub(recs[0].Time); d != 283*time.Microsecond {
		t.Fatalf("gap %v, want 283µs", d)
	}
	if _, err := Read([]byte("> 2026/11/21 06:00:42.1  length=3 from=0 to=2\n 01 02\n--\n")); err == nil {
		t.Fatal("a transfer shorter than its length= was accepted")
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(filepath.Join(dir, "line.txt"), 200)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		for _, r := range sample() {
			w.Write(&r)
		}
	}
	w.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "line*.txt"))
	if len(files) < 3 {
		t.Fatalf("%d files after writing past the limit many times: %v", len(files), files)
	}
	for _, f := range files {
		if _, err := ReadFile(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestRecorderDoesNotBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "line.pcap")
	w, err := Create(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRecorder(w, nil)
	for i := range 10000 {
		r.Record(TX, time.Now(), time.Now(), []byte{byte(i), 1, 2, 3})
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs)+int(r.Dropped()) != 10000 {
		t.Fatalf("%d written + %d dropped != 10000", len(recs), r.Dropped())
	}
	var nilRec *Recorder
	nilRec.Record(TX, time.Now(), time.Now(), []byte{1}) // a nil recorder records nothing
}

func TestUnknownExtension(t *testing.T) {
	if _, err := Create(filepath.Join(t.TempDir(), "x.cap"), 0); err == nil {
		t.Fatal(".cap accepted")
	}
}

func FuzzRead(f *testing.F) {
	files, _ := filepath.Glob("../../../testdata/captures/*")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil && !strings.HasSuffix(p, ".sh") {
			f.Add(b)
		}
	}
	f.Add([]byte("0.0 tx 0 01 03\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := Read(b)
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.Dir != TX && r.Dir != RX {
				t.Fatalf("record with direction %d", r.Dir)
			}
		}
	})
}
